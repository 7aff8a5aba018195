// Kernel 2 (docs/design.md 5.2), CPU: log-probability of the taken action and entropy of a softmax restricted to the
// available actions, forward and backward, one pass over the logits per direction.
//
// Rows are short (A is 5..32 actions in SMAC), so vectorising along a row would leave most lanes idle and spend
// the time in horizontal reductions. Instead each block of rows is transposed into an [A, R] scratch (unavailable
// entries become -inf on the way) and every loop runs over the R rows of one action with full vectors. A row's
// result depends only on that row, never on the block or thread it lands in, so the output is bitwise the same
// for any thread count.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "checks.h"
#include "vec_math.h"

namespace inspo {
namespace {

// Scratch of one block: about 4096 logits (16 KiB in float32) so that it stays in L1 next to the streamed input.
// Within a block, each group of one vector of rows runs through all its actions at once (max, then exp and sums)
// while its values are still in registers.
constexpr int64_t kBlockElems = 4096;
// Below this many logits per thread (about 0.2 ms of work) a call stays on one thread. Waking a helper costs far
// less, but on a busy machine a helper is often kept off the CPU for milliseconds mid-piece, and the call then
// waits for it: only worth risking for calls that take that long anyway.
constexpr int64_t kMinElemsPerTask = 1 << 17;

// Rows per block: a power of two in [16, 256] (full vectors of either precision, so no row is ever computed in a
// scalar remainder loop) holding about kBlockElems logits.
int64_t block_rows(int64_t a) {
  int64_t r = 16;
  while (r < 256 && 2 * r * a <= kBlockElems) r *= 2;
  return r;
}

// The error for the first bad row in the order the reference checks: first a row with no available action at
// all, then an out-of-range action, then an unavailable one. Only called once a bad row is known to exist.
[[noreturn]] void raise_row_error(const bool* avail, const int64_t* actions, int64_t n_rows, int64_t a) {
  for (int64_t row = 0; row < n_rows; ++row) {
    const bool* ar = avail + row * a;
    TORCH_CHECK_VALUE(std::any_of(ar, ar + a, [](bool b) { return b; }), "row ", row,
                      " has no available action (avail is all False)");
  }
  for (int64_t row = 0; row < n_rows; ++row)
    TORCH_CHECK_VALUE(actions[row] >= 0 && actions[row] < a, "row ", row, ": action ", actions[row],
                      " is out of range [0, ", a, ")");
  for (int64_t row = 0; row < n_rows; ++row)
    TORCH_CHECK_VALUE(avail[row * a + actions[row]], "row ", row, ": action ", actions[row], " is not available");
  TORCH_INTERNAL_ASSERT(false, "masked_softmax_stats: a row was flagged as invalid but none is");
}

template <typename T>
struct Args {
  const T* x;
  const bool* av;
  const int64_t* act;
  const T* g_logp;  // backward only
  const T* g_ent;   // backward only
  int64_t n_rows, a, block;
  T* logp;     // forward only
  T* entropy;  // forward only
  T* grad;     // backward only
};

// Per-row statistics of one block, each an array of p.block values: the max m and the action's logit xa, and
// s = sum exp(x - m), t = sum exp(x - m) (x - m) in double.
template <typename T>
struct RowStats {
  T *m, *xa;
  double *s, *t;
};

// A sum over the actions of each row in a vector, in double whatever T. Float lanes are widened first (the sum and
// the products e * sh are then exact to double precision); double lanes keep the rounding error of every addition
// with Knuth's two-sum. Either way the row sums are as good as one rounding whatever A, which is what keeps the
// kernel's log-probabilities and entropies as accurate as PyTorch's (whose reductions are pairwise).
template <typename T>
struct RowSum;

template <>
struct RowSum<float> {
  using V = simd::Vec<double>;
  V lo{}, hi{};
  INSPO_INLINE void add(simd::Vec<float> x, simd::Vec<float> y) {  // += x * y
    V x_lo, x_hi, y_lo, y_hi;
    simd::widen(x, x_lo, x_hi);
    simd::widen(y, y_lo, y_hi);
    lo += x_lo * y_lo;
    hi += x_hi * y_hi;
  }
  INSPO_INLINE void add(simd::Vec<float> x) {
    V x_lo, x_hi;
    simd::widen(x, x_lo, x_hi);
    lo += x_lo;
    hi += x_hi;
  }
  INSPO_INLINE void store(double* p) const {
    simd::store(p, lo);
    simd::store(p + 4, hi);
  }
};

template <>
struct RowSum<double> {
  using V = simd::Vec<double>;
  V sum{}, err{};
  INSPO_INLINE void add(V x, V y) { add(x * y); }
  INSPO_INLINE void add(V x) {
    const V t = sum + x, bp = t - sum;
    err += (sum - (t - bp)) + (x - bp);
    sum = t;
  }
  INSPO_INLINE void store(double* p) const { simd::store(p, sum + err); }
};

// Transposes rows [r0, r0 + rows) into xt ([A, R], unavailable entries -inf) and gathers the action's logit into
// xa. Rows past `rows` are padded with zero logits so that the full-width loops below stay finite. Returns false
// at a row whose action is out of range or unavailable, which includes every row with no available action.
// `flat` holds the block's rows with unavailable entries replaced, so the transpose itself is a plain copy: a
// select per scalar would be a branch that mispredicts on random masks.
template <bool kAvx2, typename T>
INSPO_INLINE bool load_block(const Args<T>& p, int64_t r0, int64_t rows, T* flat, T* xt, T* xa) {
  constexpr int64_t W = simd::kWidth<T>;
  const int64_t a = p.a, R = p.block;
  const T* x = p.x + r0 * a;
  const bool* av = p.av + r0 * a;
  const int64_t* act = p.act + r0;
  for (int64_t r = 0; r < rows; ++r) {
    if (act[r] < 0 || act[r] >= a || reinterpret_cast<const uint8_t*>(av)[r * a + act[r]] == 0) return false;
    xa[r] = x[r * a + act[r]];
  }
  std::fill(xa + rows, xa + R, T(0));
  const int64_t n = rows * a;
  simd::select<kAvx2>(x, av, -std::numeric_limits<T>::infinity(), n, flat);
  std::fill(flat + n, flat + R * a, T(0));
  // Tiles of W rows x W actions; a last partial tile reads into the next row (or the padding after the block)
  // and stores only its real actions.
  simd::Vec<T> cols[W];
  for (int64_t r = 0; r < R; r += W)
    for (int64_t k0 = 0; k0 < a; k0 += W) {
      simd::transpose(flat + r * a + k0, a, cols);
      for (int64_t j = 0; j < std::min(W, a - k0); ++j) simd::store(xt + (k0 + j) * R + r, cols[j]);
    }
  return true;
}

// Asks for the next block's inputs while this one computes: otherwise loading a block is a phase of its own that
// waits on memory (the hardware prefetchers run only a few lines ahead of a stream).
template <typename T>
INSPO_INLINE void prefetch_block(const Args<T>& p, int64_t r0, int64_t R) {
  const int64_t end = std::min(r0 + R, p.n_rows);
  if (r0 >= end) return;
  const char* x = reinterpret_cast<const char*>(p.x + r0 * p.a);
  const char* x_end = reinterpret_cast<const char*>(p.x + end * p.a);
  for (; x < x_end; x += 64) __builtin_prefetch(x, 0, 2);
  for (const bool* av = p.av + r0 * p.a; av < p.av + end * p.a; av += 64) __builtin_prefetch(av, 0, 2);
}

// Row max m, s = sum exp(x - m) and t = sum exp(x - m) (x - m) over the available entries. With kKeep, xt is
// overwritten by the clamped shifted logits and et receives their exps, for the backward pass.
template <typename T, bool kKeep>
INSPO_INLINE void block_sums(int64_t R, int64_t a, T* xt, T* et, const RowStats<T>& st) {
  using V = simd::Vec<T>;
  constexpr int64_t W = simd::kWidth<T>;
  constexpr T kLow = simd::Traits<T>::kExpLo;
  for (int64_t r = 0; r < R; r += W) {
    V m = simd::load(xt + r);
    for (int64_t k = 1; k < a; ++k) m = simd::max<T>(m, simd::load(xt + k * R + r));
    RowSum<T> s, t;
    for (int64_t k = 0; k < a; ++k) {
      // Shifted logits are <= 0 (-inf where unavailable). Below kExpLo, where exp is 0 anyway, they are clamped:
      // that keeps e * sh = 0 * sh finite, so unavailable entries drop out of every sum and gradient.
      const V raw = simd::load(xt + k * R + r) - m;
      const V sh = simd::max<T>(raw, simd::splat(kLow));
      const V e = raw < kLow ? V{} : simd::exp_nonpositive<T>(sh);
      s.add(e);
      t.add(e, sh);
      if constexpr (kKeep) {
        simd::store(xt + k * R + r, sh);
        simd::store(et + k * R + r, e);
      }
    }
    simd::store(st.m + r, m);
    s.store(st.s + r);
    t.store(st.t + r);
  }
}

template <bool kAvx2, typename T>
INSPO_INLINE bool forward_blocks(const Args<T>& p, int64_t b0, int64_t b1) {
  using DV = simd::Vec<double>;
  constexpr int64_t W = simd::kWidth<T>;
  const int64_t a = p.a, R = p.block;
  // flat gets a vector of padding after the block: the transpose reads its tiles' rows as full vectors.
  std::vector<T> buf((2 * a + 4) * R + W);
  std::vector<double> sums(2 * R);
  T* xt = buf.data();
  const RowStats<T> st{xt + a * R, xt + (a + 1) * R, sums.data(), sums.data() + R};
  T* lp = xt + (a + 2) * R;
  T* en = xt + (a + 3) * R;
  T* flat = xt + (a + 4) * R;
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t r0 = blk * R, rows = std::min(R, p.n_rows - r0);
    if (!load_block<kAvx2>(p, r0, rows, flat, xt, st.xa)) return false;
    prefetch_block(p, r0 + R, R);
    block_sums<T, false>(R, a, xt, nullptr, st);
    // In double too, so that each output is rounded once; (xa - m) is rounded to T as the reference does.
    for (int64_t r = 0; r < R; r += 4) {
      const DV s = simd::load(st.s + r);
      const DV l = simd::log<double>(s);
      simd::store_as(lp + r, simd::to_double(simd::load4(st.xa + r) - simd::load4(st.m + r)) - l);
      simd::store_as(en + r, l - simd::load(st.t + r) / s);
    }
    std::copy(lp, lp + rows, p.logp + r0);
    std::copy(en, en + rows, p.entropy + r0);
  }
  return true;
}

// d logp_a / dx_k = [k == a] - p_k and dH / dx_k = -p_k (logp_k + H), so
// grad_k = g_logp [k == a] - p_k (g_logp + g_ent (logp_k + H)); p_k = 0 on unavailable entries. With
// logp_k = sh_k - log s and H = log s - t / s, logp_k + H = sh_k - t / s: no log, and no cancellation of log s.
template <bool kAvx2, typename T>
INSPO_INLINE bool backward_blocks(const Args<T>& p, int64_t b0, int64_t b1) {
  using V = simd::Vec<T>;
  constexpr int64_t W = simd::kWidth<T>;
  const int64_t a = p.a, R = p.block;
  std::vector<T> buf((3 * a + 8) * R + W);
  std::vector<double> sums(2 * R);
  T* xt = buf.data();
  T* et = xt + a * R;
  const RowStats<T> st{et + a * R, et + (a + 1) * R, sums.data(), sums.data() + R};
  T* gl = et + (a + 2) * R;
  T* gh = et + (a + 3) * R;
  T* inv = et + (a + 4) * R;
  T* shift = et + (a + 5) * R;
  T* flat = et + (a + 6) * R;
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t r0 = blk * R, rows = std::min(R, p.n_rows - r0);
    if (!load_block<kAvx2>(p, r0, rows, flat, xt, st.xa)) return false;
    prefetch_block(p, r0 + R, R);
    block_sums<T, true>(R, a, xt, et, st);
    std::copy(p.g_logp + r0, p.g_logp + r0 + rows, gl);
    std::copy(p.g_ent + r0, p.g_ent + r0 + rows, gh);
    std::fill(gl + rows, gl + R, T(0));
    std::fill(gh + rows, gh + R, T(0));
    for (int64_t r = 0; r < R; ++r) {
      inv[r] = T(1 / st.s[r]);
      shift[r] = T(-st.t[r] / st.s[r]);
    }
    for (int64_t r = 0; r < R; r += W) {
      const V g1 = simd::load(gl + r), g2 = simd::load(gh + r), shift_r = simd::load(shift + r);
      const V inv_r = simd::load(inv + r);
      for (int64_t k = 0; k < a; ++k) {
        const V pk = simd::load(et + k * R + r) * inv_r;
        simd::store(et + k * R + r, -pk * (g1 + g2 * (simd::load(xt + k * R + r) + shift_r)));
      }
    }
    // Back to rows, in flat. A tile past the last action reads the arrays after et and writes past the row's
    // end, into the next row's first actions; tiles run from the last to the first so that the next row's own
    // first tile overwrites that afterwards (the block's last row spills into flat's padding).
    simd::Vec<T> row_vecs[W];
    for (int64_t r = 0; r < R; r += W)
      for (int64_t k0 = (a - 1) / W * W; k0 >= 0; k0 -= W) {
        simd::transpose(et + k0 * R + r, R, row_vecs);
        for (int64_t i = 0; i < W; ++i) simd::store(flat + (r + i) * a + k0, row_vecs[i]);
      }
    for (int64_t r = 0; r < rows; ++r) flat[r * a + p.act[r0 + r]] += gl[r];
    std::copy(flat, flat + rows * a, p.grad + r0 * a);
  }
  return true;
}

template <typename T>
INSPO_AVX2_FMA bool forward_avx2(const Args<T>& p, int64_t b0, int64_t b1) {
  return forward_blocks<true>(p, b0, b1);
}
template <typename T>
bool forward_base(const Args<T>& p, int64_t b0, int64_t b1) {
  return forward_blocks<false>(p, b0, b1);
}
template <typename T>
INSPO_AVX2_FMA bool backward_avx2(const Args<T>& p, int64_t b0, int64_t b1) {
  return backward_blocks<true>(p, b0, b1);
}
template <typename T>
bool backward_base(const Args<T>& p, int64_t b0, int64_t b1) {
  return backward_blocks<false>(p, b0, b1);
}

// Runs fn over all blocks in parallel; fn returns false (and stops its task) at a bad row, and then the error is
// raised for the first bad row of the whole input.
template <typename T, typename Fn>
void run_blocks(const Args<T>& p, Fn fn) {
  const int64_t n_blocks = (p.n_rows + p.block - 1) / p.block;
  const int64_t grain = std::max<int64_t>(1, kMinElemsPerTask / (p.block * p.a));
  std::atomic<bool> bad{false};
  parallel_for(0, n_blocks, grain, [&](int64_t b0, int64_t b1) {
    if (!fn(p, b0, b1)) bad.store(true);
  });
  if (bad.load()) raise_row_error(p.av, p.act, p.n_rows, p.a);
}

struct Rows {
  at::Tensor x, av, act;
  int64_t n_rows, a;
};

Rows flatten(const at::Tensor& logits, const at::Tensor& avail, const at::Tensor& actions, const char* who) {
  check_softmax_args(logits, avail, actions);
  TORCH_CHECK_VALUE(logits.device().is_cpu(), who, ": CPU kernel got a tensor on ", logits.device());
  const int64_t a = logits.size(-1);
  return {logits.contiguous(), avail.contiguous(), actions.contiguous(), logits.numel() / a, a};
}

std::tuple<at::Tensor, at::Tensor> masked_softmax_stats_cpu(const at::Tensor& logits, const at::Tensor& avail,
                                                            const at::Tensor& actions) {
  auto in = flatten(logits, avail, actions, "masked_softmax_stats");
  auto logp = empty_output(actions.sizes(), logits.options());
  auto entropy = empty_output(actions.sizes(), logits.options());
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "masked_softmax_stats_cpu", [&] {
    const Args<scalar_t> p{in.x.data_ptr<scalar_t>(),
                           in.av.data_ptr<bool>(),
                           in.act.data_ptr<int64_t>(),
                           nullptr,
                           nullptr,
                           in.n_rows,
                           in.a,
                           block_rows(in.a),
                           logp.data_ptr<scalar_t>(),
                           entropy.data_ptr<scalar_t>(),
                           nullptr};
    run_blocks(p, simd::has_avx2_fma() ? forward_avx2<scalar_t> : forward_base<scalar_t>);
  });
  return {logp, entropy};
}

at::Tensor masked_softmax_stats_backward_cpu(const at::Tensor& grad_logp, const at::Tensor& grad_entropy,
                                             const at::Tensor& logits, const at::Tensor& avail,
                                             const at::Tensor& actions) {
  auto in = flatten(logits, avail, actions, "masked_softmax_stats_backward");
  check_softmax_grads(grad_logp, grad_entropy, logits, actions);
  const auto gl = grad_logp.contiguous(), ge = grad_entropy.contiguous();
  auto grad = empty_output(logits.sizes(), logits.options());
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "masked_softmax_stats_backward_cpu", [&] {
    const Args<scalar_t> p{in.x.data_ptr<scalar_t>(),
                           in.av.data_ptr<bool>(),
                           in.act.data_ptr<int64_t>(),
                           gl.data_ptr<scalar_t>(),
                           ge.data_ptr<scalar_t>(),
                           in.n_rows,
                           in.a,
                           block_rows(in.a),
                           nullptr,
                           nullptr,
                           grad.data_ptr<scalar_t>()};
    run_blocks(p, simd::has_avx2_fma() ? backward_avx2<scalar_t> : backward_base<scalar_t>);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CPU, m) {
  m.impl("masked_softmax_stats", &masked_softmax_stats_cpu);
  m.impl("masked_softmax_stats_backward", &masked_softmax_stats_backward_cpu);
}

}  // namespace inspo
