// Kernel 2 (docs/design.md 5.2), CUDA: log-probability of the taken action and entropy of a softmax restricted to the
// available actions, forward and backward, with the CPU kernel's row semantics (csrc/masked_softmax.cpp).
//
// Two layouts, chosen by the number of actions A:
//  - A <= 32 (most SMAC-style action spaces): one thread per row. A block stages its 128 consecutive rows through
//    shared memory, so global loads (and the backward's stores) are coalesced although each thread owns a row.
//  - A > 32: one warp per row; lanes stride over the actions (coalesced) and reduce with shuffles.
//
// Validation is fused into the same pass: a bad row writes zeros (never NaN) and is reported through
// SoftmaxRows::bad_row (kernels.h); ops.cpp raises the reference's error for it.
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdio>

#include "device_utils.cuh"
#include "kernels.h"

namespace inspo::gpu {
namespace {

constexpr int kRowsPerBlock = 128;      // thread-per-row layout: rows (= threads) per block
constexpr int64_t kMaxThreadRowA = 32;  // widest row the thread-per-row layout stages in shared memory
constexpr int kWarpThreads = 256;       // warp-per-row layout: threads per block
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// `bad_row == nullptr` means the stream is being captured: print the error the host would raise, then assert.
__device__ void report_bad_row(int64_t* bad_row, int64_t row, int kind, int64_t action, int64_t a) {
  if (bad_row != nullptr) {
    atomicMin(reinterpret_cast<long long*>(bad_row), (static_cast<long long>(kind) << kKindShift) | row);
    return;
  }
  const auto r = static_cast<long long>(row), x = static_cast<long long>(action);
  if (kind == kNoAction)
    printf("inspo masked_softmax_stats: row %lld has no available action (avail is all False)\n", r);
  if (kind == kOutOfRange)
    printf("inspo masked_softmax_stats: row %lld: action %lld is out of range [0, %lld)\n", r, x,
           static_cast<long long>(a));
  if (kind == kUnavailable) printf("inspo masked_softmax_stats: row %lld: action %lld is not available\n", r, x);
  CUDA_KERNEL_ASSERT(false);
}

// --- thread-per-row layout -------------------------------------------------------------------------------------

// An odd row stride in shared memory keeps the 32 rows a warp reads at once in distinct banks (float and double).
__host__ __device__ constexpr int smem_stride(int a) { return a | 1; }

template <typename T>
size_t smem_bytes(int a) {
  return static_cast<size_t>(kRowsPerBlock) * smem_stride(a) * (sizeof(T) + sizeof(bool));
}

// Copies `rows` consecutive rows into shared memory, consecutive threads taking consecutive elements.
template <typename T>
__device__ void stage_rows(const T* __restrict__ x, const bool* __restrict__ av, int rows, int a, T* sx, bool* sa) {
  const int stride = smem_stride(a);
  for (int i = threadIdx.x; i < rows * a; i += blockDim.x) {
    const int r = i / a, k = i - r * a;
    sx[r * stride + k] = x[i];
    sa[r * stride + k] = av[i];
  }
}

__device__ int row_error(const bool* ar, int a, int64_t action) {
  bool any = false;
  for (int k = 0; k < a; ++k) any |= ar[k];
  if (!any) return kNoAction;
  if (action < 0 || action >= a) return kOutOfRange;
  if (!ar[action]) return kUnavailable;
  return 0;
}

// As in the CPU kernel, shifted logits are clamped at -1000: exp of that is exactly 0 in both precisions, and an
// available -inf logit then adds 0 * -1000 to the entropy sum instead of 0 * -inf = NaN.
template <typename T>
__device__ __forceinline__ T shifted(T x, T max) {
  return device::max(x - max, T(-1000));
}

// Over the available entries of a row: the max logit, s = sum exp(d) and t = sum exp(d) d with d = shifted(x, max).
template <typename T>
struct RowSums {
  T max, s, t;
};

// Unavailable entries are skipped by branches, never multiplied by 0: they may hold inf or NaN.
template <typename T>
__device__ RowSums<T> row_sums(const T* xr, const bool* ar, int a) {
  T m = -INFINITY;
  for (int k = 0; k < a; ++k)
    if (ar[k]) m = device::max(m, xr[k]);
  T s = 0, t = 0;
  for (int k = 0; k < a; ++k) {
    if (!ar[k]) continue;
    const T d = shifted(xr[k], m);
    const T e = device::exp(d);
    s += e;
    t += e * d;
  }
  return {m, s, t};
}

template <typename T>
__device__ __forceinline__ void write_forward(const RowSums<T>& r, T x_action, T* logp, T* entropy) {
  const T lse = device::log(r.s);
  *logp = (x_action - r.max) - lse;
  *entropy = lse - r.t / r.s;
}

// d logp_a / dx_k = [k == a] - p_k and dH / dx_k = -p_k (logp_k + H) with logp_k + H = d_k - t / s, so
// grad_k = g_logp [k == a] - p_k (g_logp + g_ent (d_k - t / s)); the form avoids a log and the cancellation of
// log s. Returns the part without the [k == a] term.
template <typename T>
__device__ __forceinline__ T softmax_grad(T x, const RowSums<T>& r, T inv_s, T t_over_s, T gl, T gh) {
  const T d = shifted(x, r.max);
  return -(device::exp(d) * inv_s) * (gl + gh * (d - t_over_s));
}

template <typename T>
__global__ void __launch_bounds__(kRowsPerBlock)
    forward_rows_kernel(const T* __restrict__ x, const bool* __restrict__ av, const int64_t* __restrict__ act,
                        int64_t n_rows, int a, T* __restrict__ logp, T* __restrict__ entropy, int64_t* bad_row) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int stride = smem_stride(a);
  T* sx = reinterpret_cast<T*>(smem);
  bool* sa = reinterpret_cast<bool*>(sx + kRowsPerBlock * stride);
  for (int64_t r0 = blockIdx.x * static_cast<int64_t>(kRowsPerBlock); r0 < n_rows;
       r0 += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int rows = static_cast<int>(n_rows - r0 < kRowsPerBlock ? n_rows - r0 : kRowsPerBlock);
    stage_rows(x + r0 * a, av + r0 * a, rows, a, sx, sa);
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < rows) {
      const int64_t row = r0 + threadIdx.x;
      const T* xr = sx + threadIdx.x * stride;
      const bool* ar = sa + threadIdx.x * stride;
      const int64_t action = act[row];
      if (const int err = row_error(ar, a, action)) {
        report_bad_row(bad_row, row, err, action, a);
        logp[row] = T(0);
        entropy[row] = T(0);
      } else {
        write_forward(row_sums(xr, ar, a), xr[action], logp + row, entropy + row);
      }
    }
    __syncthreads();  // the next tile overwrites shared memory
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowsPerBlock)
    backward_rows_kernel(const T* __restrict__ g_logp, const T* __restrict__ g_ent, const T* __restrict__ x,
                         const bool* __restrict__ av, const int64_t* __restrict__ act, int64_t n_rows, int a,
                         T* __restrict__ grad, int64_t* bad_row) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int stride = smem_stride(a);
  T* sx = reinterpret_cast<T*>(smem);
  bool* sa = reinterpret_cast<bool*>(sx + kRowsPerBlock * stride);
  for (int64_t r0 = blockIdx.x * static_cast<int64_t>(kRowsPerBlock); r0 < n_rows;
       r0 += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int rows = static_cast<int>(n_rows - r0 < kRowsPerBlock ? n_rows - r0 : kRowsPerBlock);
    stage_rows(x + r0 * a, av + r0 * a, rows, a, sx, sa);
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < rows) {
      // Each thread overwrites its own staged row with the gradient, which the block then stores coalesced.
      const int64_t row = r0 + threadIdx.x;
      T* xr = sx + threadIdx.x * stride;
      const bool* ar = sa + threadIdx.x * stride;
      const int64_t action = act[row];
      if (const int err = row_error(ar, a, action)) {
        report_bad_row(bad_row, row, err, action, a);
        for (int k = 0; k < a; ++k) xr[k] = T(0);
      } else {
        const RowSums<T> r = row_sums(xr, ar, a);
        const T gl = g_logp[row], gh = g_ent[row];
        const T inv_s = T(1) / r.s, t_over_s = r.t / r.s;
        for (int k = 0; k < a; ++k) xr[k] = ar[k] ? softmax_grad(xr[k], r, inv_s, t_over_s, gl, gh) : T(0);
        xr[action] += gl;
      }
    }
    __syncthreads();
    T* out = grad + r0 * a;
    for (int i = threadIdx.x; i < rows * a; i += blockDim.x) {
      const int r = i / a, k = i - r * a;
      out[i] = sx[r * stride + k];
    }
    __syncthreads();  // the next tile overwrites shared memory
  }
}

// --- warp-per-row layout ---------------------------------------------------------------------------------------

template <typename T>
__device__ T warp_sum(T v) {
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

template <typename T>
__device__ T warp_max(T v) {
  for (int off = kWarp / 2; off > 0; off /= 2) v = device::max(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}

// All lanes of a warp call this for the same row and all get the same result (butterfly reductions), so the
// branches taken on it afterwards are warp-uniform.
template <typename T>
struct WarpRow {
  int err;
  RowSums<T> sums;
};

template <typename T>
__device__ WarpRow<T> warp_row_sums(const T* __restrict__ xr, const bool* __restrict__ ar, int64_t a, int64_t action) {
  const int lane = threadIdx.x % kWarp;
  T m = -INFINITY;
  bool any = false;
  for (int64_t k = lane; k < a; k += kWarp) {
    if (!ar[k]) continue;
    any = true;
    m = device::max(m, xr[k]);
  }
  any = __any_sync(kFullMask, any);
  const int err = !any ? kNoAction : (action < 0 || action >= a) ? kOutOfRange : !ar[action] ? kUnavailable : 0;
  if (err) return {err, {}};
  m = warp_max(m);
  T s = 0, t = 0;
  for (int64_t k = lane; k < a; k += kWarp) {
    if (!ar[k]) continue;
    const T d = shifted(xr[k], m);
    const T e = device::exp(d);
    s += e;
    t += e * d;
  }
  return {0, {m, warp_sum(s), warp_sum(t)}};
}

template <typename T>
__global__ void __launch_bounds__(kWarpThreads)
    forward_warp_kernel(const T* __restrict__ x, const bool* __restrict__ av, const int64_t* __restrict__ act,
                        int64_t n_rows, int64_t a, T* __restrict__ logp, T* __restrict__ entropy, int64_t* bad_row) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; row < n_rows;
       row += warps) {
    const T* xr = x + row * a;
    const int64_t action = act[row];
    const WarpRow<T> w = warp_row_sums(xr, av + row * a, a, action);
    if (lane != 0) continue;
    if (w.err) {
      report_bad_row(bad_row, row, w.err, action, a);
      logp[row] = T(0);
      entropy[row] = T(0);
    } else {
      write_forward(w.sums, xr[action], logp + row, entropy + row);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarpThreads)
    backward_warp_kernel(const T* __restrict__ g_logp, const T* __restrict__ g_ent, const T* __restrict__ x,
                         const bool* __restrict__ av, const int64_t* __restrict__ act, int64_t n_rows, int64_t a,
                         T* __restrict__ grad, int64_t* bad_row) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; row < n_rows;
       row += warps) {
    const T* xr = x + row * a;
    const bool* ar = av + row * a;
    T* gr = grad + row * a;
    const int64_t action = act[row];
    const WarpRow<T> w = warp_row_sums(xr, ar, a, action);
    if (w.err) {
      if (lane == 0) report_bad_row(bad_row, row, w.err, action, a);
      for (int64_t k = lane; k < a; k += kWarp) gr[k] = T(0);
      continue;
    }
    const T gl = g_logp[row], gh = g_ent[row];
    const T inv_s = T(1) / w.sums.s, t_over_s = w.sums.t / w.sums.s;
    for (int64_t k = lane; k < a; k += kWarp) {
      T g = ar[k] ? softmax_grad(xr[k], w.sums, inv_s, t_over_s, gl, gh) : T(0);
      if (k == action) g += gl;
      gr[k] = g;
    }
  }
}

}  // namespace

template <typename T>
void launch_masked_softmax_forward(const SoftmaxRows<T>& p, T* logp, T* entropy, cudaStream_t stream) {
  if (p.a <= kMaxThreadRowA) {
    const int a = static_cast<int>(p.a);
    forward_rows_kernel<T><<<device::blocks_for(p.n_rows, kRowsPerBlock), kRowsPerBlock, smem_bytes<T>(a), stream>>>(
        p.logits, p.avail, p.actions, p.n_rows, a, logp, entropy, p.bad_row);
  } else {
    forward_warp_kernel<T><<<device::blocks_for(p.n_rows, kWarpThreads / kWarp), kWarpThreads, 0, stream>>>(
        p.logits, p.avail, p.actions, p.n_rows, p.a, logp, entropy, p.bad_row);
  }
}

template <typename T>
void launch_masked_softmax_backward(const SoftmaxRows<T>& p, const T* grad_logp, const T* grad_entropy, T* grad,
                                    cudaStream_t stream) {
  if (p.a <= kMaxThreadRowA) {
    const int a = static_cast<int>(p.a);
    backward_rows_kernel<T><<<device::blocks_for(p.n_rows, kRowsPerBlock), kRowsPerBlock, smem_bytes<T>(a), stream>>>(
        grad_logp, grad_entropy, p.logits, p.avail, p.actions, p.n_rows, a, grad, p.bad_row);
  } else {
    backward_warp_kernel<T><<<device::blocks_for(p.n_rows, kWarpThreads / kWarp), kWarpThreads, 0, stream>>>(
        grad_logp, grad_entropy, p.logits, p.avail, p.actions, p.n_rows, p.a, grad, p.bad_row);
  }
}

template void launch_masked_softmax_forward<float>(const SoftmaxRows<float>&, float*, float*, cudaStream_t);
template void launch_masked_softmax_forward<double>(const SoftmaxRows<double>&, double*, double*, cudaStream_t);
template void launch_masked_softmax_backward<float>(const SoftmaxRows<float>&, const float*, const float*, float*,
                                                    cudaStream_t);
template void launch_masked_softmax_backward<double>(const SoftmaxRows<double>&, const double*, const double*, double*,
                                                     cudaStream_t);

}  // namespace inspo::gpu
