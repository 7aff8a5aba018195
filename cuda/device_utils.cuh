// Device helpers shared by the CUDA kernels.
#pragma once
#include <algorithm>
#include <cstdint>

namespace inspo::device {

// Overloads instead of a template over ::exp so float32 math stays in float (expf, about 2 ulp) and never silently
// goes through double.
__device__ __forceinline__ float exp(float x) { return ::expf(x); }
__device__ __forceinline__ double exp(double x) { return ::exp(x); }
__device__ __forceinline__ float log(float x) { return ::logf(x); }
__device__ __forceinline__ double log(double x) { return ::log(x); }

// std::min / std::max argument order semantics, as in the CPU kernels: a NaN first argument propagates (torch.clamp
// behaves the same), whereas fmin/fmax would silently drop it.
template <typename T>
__device__ __forceinline__ T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
__device__ __forceinline__ T max(T a, T b) {
  return a < b ? b : a;
}

// Kernels use grid-stride loops, so capping the grid only bounds the launch size, never the problem size.
constexpr int64_t kMaxBlocks = 65535;

inline unsigned int blocks_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned int>(std::min((work + per_block - 1) / per_block, kMaxBlocks));
}

}  // namespace inspo::device
