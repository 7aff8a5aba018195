// Plain C++ interface between the host side of the CUDA ops (ops.cpp: checks, allocation, streams, dispatcher
// registration) and their kernels (*.cu). It keeps the ATen headers out of nvcc's way: a .cu that includes them takes
// about a minute per GPU architecture to compile, one without them a few seconds.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace inspo::gpu {

// Launchers enqueue on `stream` and return at once; they need a non-empty problem (b > 0, n_rows > 0).

// docs/design.md 5.1 for T = float or double; `mask == nullptr` means every agent is alive, `agent == -1` all agents at
// once.
template <typename T>
struct WeightsArgs {
  const T* q;  // [B] or [N, B], see q_per_agent
  const T* v;  // [B] or [N, B], see v_per_agent
  const T* logp_pi;
  const T* logp_mu;
  const bool* mask;
  int64_t n, b, agent;
  bool q_per_agent, v_per_agent;
  T tau, beta_over_tau, z_max;
  double log_rho_max;  // the sum of log ratios is accumulated in double
  T* rho;
  T* expadv;
};

template <typename T>
void launch_advantage_weights(const WeightsArgs<T>& args, cudaStream_t stream);

// Row error kinds, in the order the reference (and the CPU kernel) checks them over the whole input: any row with no
// available action first, then any out-of-range action, then any unavailable one.
constexpr int kNoAction = 1, kOutOfRange = 2, kUnavailable = 3;
// A bad row is recorded as (kind << kKindShift) | row, so the minimum over all bad rows is the error the reference
// raises: the first row of the first kind. Rows need fewer than 58 bits, which no tensor that fits in memory exceeds.
constexpr int kKindShift = 58;

// docs/design.md 5.2: contiguous [n_rows, a] logits and avail, [n_rows] actions. A bad row gets zero outputs and is
// recorded in *bad_row (see above) with atomicMin; with bad_row == nullptr (stream capture: nothing can be read back)
// it prints the error and triggers a device-side assert instead.
template <typename T>
struct SoftmaxRows {
  const T* logits;
  const bool* avail;
  const int64_t* actions;
  int64_t n_rows, a;
  int64_t* bad_row;
};

template <typename T>
void launch_masked_softmax_forward(const SoftmaxRows<T>& rows, T* logp, T* entropy, cudaStream_t stream);

template <typename T>
void launch_masked_softmax_backward(const SoftmaxRows<T>& rows, const T* grad_logp, const T* grad_entropy, T* grad,
                                    cudaStream_t stream);

}  // namespace inspo::gpu
