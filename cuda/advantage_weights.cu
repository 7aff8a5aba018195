// Kernel 1 (docs/design.md 5.1), CUDA: teammate ratio rho and exponentiated in-sample advantage. One thread per batch
// column walks the N agents, so each load of an [N, B] input is coalesced across the warp, every input is read once,
// and nothing of size [N, B] is materialised for a single agent. Same arithmetic as the CPU kernel: the sum of log
// ratios is accumulated in double, as good as exact for float32 inputs, which keeps `total - own` (all agents at
// once) free of cancellation; the kernel is bound by memory traffic, not by the double adds.
#include "device_utils.cuh"
#include "kernels.h"

namespace inspo::gpu {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    weights_kernel(const T* __restrict__ q, const T* __restrict__ v, const T* __restrict__ lpi,
                   const T* __restrict__ lmu, const bool* __restrict__ mask, int64_t n, int64_t b, bool q_per_agent,
                   bool v_per_agent, int64_t agent, T tau, T beta_over_tau, double log_rho_max, T z_max,
                   T* __restrict__ rho, T* __restrict__ expadv) {
  const int64_t first = agent < 0 ? 0 : agent;
  const int64_t last = agent < 0 ? n : agent + 1;
  for (int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; col < b;
       col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // Sum of the alive agents' log ratios; for one agent, skip it instead of subtracting it afterwards.
    double total = 0;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t idx = j * b + col;
      // A branch, not a multiply by the mask: dead agents' entries may hold inf or NaN.
      if (j != agent && (mask == nullptr || mask[idx])) total += double(lpi[idx]) - double(lmu[idx]);
    }
    for (int64_t i = first; i < last; ++i) {
      const int64_t idx = i * b + col;
      const int64_t out = (agent < 0 ? i * b : 0) + col;
      if (mask != nullptr && !mask[idx]) {
        rho[out] = T(0);
        expadv[out] = T(0);
        continue;
      }
      const double own = agent < 0 ? double(lpi[idx]) - double(lmu[idx]) : 0.0;
      const T z =
          (q[(q_per_agent ? i * b : 0) + col] - v[(v_per_agent ? i * b : 0) + col]) / tau - beta_over_tau * lmu[idx];
      rho[out] = device::exp(static_cast<T>(device::min(total - own, log_rho_max)));
      expadv[out] = device::exp(device::min(z, z_max));
    }
  }
}

}  // namespace

template <typename T>
void launch_advantage_weights(const WeightsArgs<T>& p, cudaStream_t stream) {
  weights_kernel<T><<<device::blocks_for(p.b, kThreads), kThreads, 0, stream>>>(
      p.q, p.v, p.logp_pi, p.logp_mu, p.mask, p.n, p.b, p.q_per_agent, p.v_per_agent, p.agent, p.tau, p.beta_over_tau,
      p.log_rho_max, p.z_max, p.rho, p.expadv);
}

template void launch_advantage_weights<float>(const WeightsArgs<float>&, cudaStream_t);
template void launch_advantage_weights<double>(const WeightsArgs<double>&, cudaStream_t);

}  // namespace inspo::gpu
