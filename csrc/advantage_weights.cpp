// Kernel 1 (docs/design.md 5.1), CPU: teammate ratio rho and exponentiated in-sample advantage in one pass over the
// inputs.
//
// The columns are cut into fixed chunks; a chunk's sum of log ratios is accumulated over the agents, then each
// requested agent's outputs are computed from it while the chunk's rows are still in cache. Chunks never depend
// on the thread count, and a chunk's last partial vector runs through the same vector code as the others, so the
// results are bitwise the same for any number of threads.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"
#include "vec_math.h"

namespace inspo {
namespace {

// Columns per chunk: the chunk's rows of all agents (N * 9 bytes per column in float32) stay in L2 between the
// sum and the per-agent pass, and the sum and its error term stay in L1.
constexpr int64_t kChunk = 512;
// Below this many (agent, column) elements per thread (about 0.1 ms of work) a call stays on one thread: see
// kMinElemsPerTask in masked_softmax.cpp.
constexpr int64_t kMinElemsPerTask = 1 << 17;

template <typename T>
struct Args {
  const T *q, *v, *lpi, *lmu;
  const bool* mask;  // nullptr: every agent alive
  int64_t n, b;
  int64_t q_row, v_row;  // offset between agents' rows of q and v: b, or 0 when shared
  int64_t agent;
  T tau, beta_over_tau, z_max, log_rho_max;
  T *rho, *expadv;  // [B] for one agent, [N, B] for agent = -1
};

// The first n lanes from p, all of them for a full vector (kTail = false).
template <typename T, bool kTail>
INSPO_INLINE simd::Vec<T> load_n(const T* p, int64_t n) {
  if constexpr (kTail)
    return simd::load_first(p, n);
  else
    return simd::load(p);
}

template <typename T, bool kTail>
INSPO_INLINE void store_n(T* p, simd::Vec<T> v, int64_t n) {
  if constexpr (kTail)
    simd::store_first(p, v, n);
  else
    simd::store(p, v);
}

template <typename T, bool kMask, bool kTail>
INSPO_INLINE simd::Mask<T> alive_n(const bool* p, int64_t n) {
  if constexpr (!kMask)
    return simd::Vec<T>{} == T(0);
  else if constexpr (kTail)
    return simd::load_mask_first<T>(p, n);
  else
    return simd::load_mask<T>(p);
}

// Adds agent j's log ratios (0 where dead) to the chunk's sum; Knuth's two-sum keeps the rounding error of every
// addition in err, so the sum is as accurate as one rounding whatever the number of agents.
template <typename T, bool kMask, bool kTail>
INSPO_INLINE void add_ratios(const T* pj, const T* mj, const bool* aj, int64_t n, T* sum, T* err) {
  using V = simd::Vec<T>;
  const V d0 = load_n<T, kTail>(pj, n) - load_n<T, kTail>(mj, n);
  const V d = alive_n<T, kMask, kTail>(aj, n) ? d0 : V{};
  const V s = simd::load(sum), t = s + d, bp = t - s;
  simd::store(err, simd::load(err) + ((s - (t - bp)) + (d - bp)));
  simd::store(sum, t);
}

template <typename T, bool kMask, bool kTail>
INSPO_INLINE void agent_outputs(const Args<T>& p, int64_t i, int64_t col, int64_t n, const T* sum, const T* err, T* ro,
                                T* eo) {
  using V = simd::Vec<T>;
  const int64_t b = p.b;
  const simd::Mask<T> alive = alive_n<T, kMask, kTail>(kMask ? p.mask + i * b + col : nullptr, n);
  const V mi = load_n<T, kTail>(p.lmu + i * b + col, n);
  V lr = simd::load(sum);
  if (p.agent < 0) lr -= alive ? load_n<T, kTail>(p.lpi + i * b + col, n) - mi : V{};
  lr = simd::min<T>(lr + simd::load(err), simd::splat(p.log_rho_max));
  const V q = load_n<T, kTail>(p.q + i * p.q_row + col, n), v = load_n<T, kTail>(p.v + i * p.v_row + col, n);
  const V z = simd::min<T>((q - v) / p.tau - p.beta_over_tau * mi, simd::splat(p.z_max));
  store_n<T, kTail>(ro, alive ? simd::exp<T>(lr) : V{}, n);
  store_n<T, kTail>(eo, alive ? simd::exp<T>(z) : V{}, n);
}

template <typename T, bool kMask>
INSPO_INLINE void weights_chunks(const Args<T>& p, int64_t c_begin, int64_t c_end) {
  constexpr int64_t W = simd::kWidth<T>;
  T sum[kChunk], err[kChunk];
  const int64_t b = p.b;
  const int64_t first = p.agent < 0 ? 0 : p.agent;
  const int64_t last = p.agent < 0 ? p.n : p.agent + 1;
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t c0 = c * kChunk, len = std::min(kChunk, b - c0), full = len / W * W, tail = len - full;
    std::fill(sum, sum + full + (tail ? W : 0), T(0));
    std::fill(err, err + full + (tail ? W : 0), T(0));
    // For one agent, skip it instead of subtracting it afterwards.
    for (int64_t j = 0; j < p.n; ++j) {
      if (j == p.agent) continue;
      const T* pj = p.lpi + j * b + c0;
      const T* mj = p.lmu + j * b + c0;
      const bool* aj = kMask ? p.mask + j * b + c0 : nullptr;
      for (int64_t k = 0; k < full; k += W)
        add_ratios<T, kMask, false>(pj + k, mj + k, kMask ? aj + k : nullptr, W, sum + k, err + k);
      if (tail)
        add_ratios<T, kMask, true>(pj + full, mj + full, kMask ? aj + full : nullptr, tail, sum + full, err + full);
    }
    for (int64_t i = first; i < last; ++i) {
      T* ro = p.rho + (p.agent < 0 ? i * b : 0) + c0;
      T* eo = p.expadv + (p.agent < 0 ? i * b : 0) + c0;
      for (int64_t k = 0; k < full; k += W)
        agent_outputs<T, kMask, false>(p, i, c0 + k, W, sum + k, err + k, ro + k, eo + k);
      if (tail) agent_outputs<T, kMask, true>(p, i, c0 + full, tail, sum + full, err + full, ro + full, eo + full);
    }
  }
}

template <typename T>
INSPO_INLINE void weights_range_impl(const Args<T>& p, int64_t c_begin, int64_t c_end) {
  if (p.mask)
    weights_chunks<T, true>(p, c_begin, c_end);
  else
    weights_chunks<T, false>(p, c_begin, c_end);
}

template <typename T>
INSPO_AVX2_FMA void weights_avx2(const Args<T>& p, int64_t c_begin, int64_t c_end) {
  weights_range_impl(p, c_begin, c_end);
}
template <typename T>
void weights_base(const Args<T>& p, int64_t c_begin, int64_t c_end) {
  weights_range_impl(p, c_begin, c_end);
}

std::tuple<at::Tensor, at::Tensor> advantage_weights_cpu(const at::Tensor& q_, const at::Tensor& v_,
                                                         const at::Tensor& logp_pi_, const at::Tensor& logp_mu_,
                                                         const std::optional<at::Tensor>& mask_, int64_t agent,
                                                         double tau, double beta, double rho_max, double z_max) {
  check_weights_args(q_, v_, logp_pi_, logp_mu_, mask_, agent, tau, rho_max);
  TORCH_CHECK_VALUE(logp_pi_.device().is_cpu(), "advantage_weights: CPU kernel got a tensor on ", logp_pi_.device());
  const auto q = q_.contiguous(), v = v_.contiguous(), lpi = logp_pi_.contiguous(), lmu = logp_mu_.contiguous();
  at::Tensor mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  const int64_t n = lpi.size(0), b = lpi.size(1);
  std::vector<int64_t> out_shape = agent < 0 ? std::vector<int64_t>{n, b} : std::vector<int64_t>{b};
  auto rho = empty_output(out_shape, lpi.options());
  auto expadv = empty_output(out_shape, lpi.options());
  const int64_t n_chunks = (b + kChunk - 1) / kChunk;
  const int64_t grain = std::max<int64_t>(1, kMinElemsPerTask / (kChunk * std::max<int64_t>(n, 1)));
  AT_DISPATCH_FLOATING_TYPES(lpi.scalar_type(), "advantage_weights_cpu", [&] {
    // The scalars are rounded to the tensors' precision as PyTorch does for tensor-scalar ops; beta / tau is
    // formed in double first, like the reference's Python float.
    const Args<scalar_t> p{q.data_ptr<scalar_t>(),
                           v.data_ptr<scalar_t>(),
                           lpi.data_ptr<scalar_t>(),
                           lmu.data_ptr<scalar_t>(),
                           mask.defined() ? mask.data_ptr<bool>() : nullptr,
                           n,
                           b,
                           q.dim() == 2 ? b : 0,
                           v.dim() == 2 ? b : 0,
                           agent,
                           static_cast<scalar_t>(tau),
                           static_cast<scalar_t>(beta / tau),
                           static_cast<scalar_t>(z_max),
                           static_cast<scalar_t>(std::log(rho_max)),
                           rho.data_ptr<scalar_t>(),
                           expadv.data_ptr<scalar_t>()};
    const auto run = simd::has_avx2_fma() ? weights_avx2<scalar_t> : weights_base<scalar_t>;
    parallel_for(0, n_chunks, grain, [&](int64_t c0, int64_t c1) { run(p, c0, c1); });
  });
  return {rho, expadv};
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CPU, m) { m.impl("advantage_weights", &advantage_weights_cpu); }

}  // namespace inspo
