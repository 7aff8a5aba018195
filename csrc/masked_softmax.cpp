// Kernel 2 (SPEC 5.2), CPU: log-probability of the taken action and entropy of a softmax restricted to the
// available actions, forward and backward, one pass over the logits per direction.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "vec_math.h"

namespace inspo {
namespace {

constexpr int64_t kRows = 256;  // rows per block: the shifted logits of a block stay in L1

// A value whose exp is exactly 0 in both precisions, so masked entries drop out of every sum without branches.
template <typename T>
constexpr T kMaskedShift = T(-1000);

enum class RowError : int { kNone = 0, kNoAction, kOutOfRange, kUnavailable };

inline RowError row_error(const bool* avail, int64_t a, int64_t action) {
  bool any = false;
  for (int64_t k = 0; k < a; ++k) any |= avail[k];
  if (!any) return RowError::kNoAction;
  if (action < 0 || action >= a) return RowError::kOutOfRange;
  if (!avail[action]) return RowError::kUnavailable;
  return RowError::kNone;
}

void raise_row_error(const bool* avail, const int64_t* actions, int64_t a, int64_t row) {
  const int64_t action = actions[row];
  switch (row_error(avail + row * a, a, action)) {
    case RowError::kNoAction:
      TORCH_CHECK_VALUE(false, "row ", row, " has no available action (avail is all False)");
    case RowError::kOutOfRange:
      TORCH_CHECK_VALUE(false, "row ", row, ": action ", action, " is out of range [0, ", a, ")");
    case RowError::kUnavailable:
      TORCH_CHECK_VALUE(false, "row ", row, ": action ", action, " is not available");
    case RowError::kNone:
      break;
  }
}

// Shifted logits x - max (masked entries set to kMaskedShift) into `shifted`, their exp into `e`, and per row
// the log-sum-exp `lse` and the entropy `ent`. Returns the first bad row of the block, or -1.
template <typename T>
int64_t block_stats(const T* x, const bool* av, const int64_t* act, int64_t rows, int64_t a, T* shifted, T* e, T* lse,
                    T* ent, int64_t row0) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * a;
    const bool* ar = av + r * a;
    if (row_error(ar, a, act[r]) != RowError::kNone) return row0 + r;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t k = 0; k < a; ++k)
      if (ar[k]) m = std::max(m, xr[k]);
    for (int64_t k = 0; k < a; ++k) shifted[r * a + k] = ar[k] ? xr[k] - m : kMaskedShift<T>;
  }
  std::copy(shifted, shifted + rows * a, e);
  exp_inplace(e, rows * a);
  for (int64_t r = 0; r < rows; ++r) {
    T s = 0, t = 0;
    for (int64_t k = 0; k < a; ++k) {
      s += e[r * a + k];
      t += e[r * a + k] * shifted[r * a + k];
    }
    lse[r] = std::log(s);
    ent[r] = lse[r] - t / s;
  }
  return -1;
}

template <typename T>
void forward_cpu(const T* x, const bool* av, const int64_t* act, int64_t n_rows, int64_t a, T* logp, T* entropy,
                 std::atomic<int64_t>& bad_row) {
  at::parallel_for(0, n_rows, kRows, [&](int64_t begin, int64_t end) {
    std::vector<T> shifted(kRows * a), e(kRows * a), lse(kRows), ent(kRows);
    for (int64_t r0 = begin; r0 < end; r0 += kRows) {
      const int64_t rows = std::min(kRows, end - r0);
      const int64_t bad = block_stats(x + r0 * a, av + r0 * a, act + r0, rows, a, shifted.data(), e.data(),
                                      lse.data(), ent.data(), r0);
      if (bad >= 0) {
        int64_t cur = bad_row.load();
        while (bad < cur && !bad_row.compare_exchange_weak(cur, bad)) {}
        return;
      }
      for (int64_t r = 0; r < rows; ++r) {
        logp[r0 + r] = shifted[r * a + act[r0 + r]] - lse[r];
        entropy[r0 + r] = ent[r];
      }
    }
  });
}

template <typename T>
void backward_cpu(const T* g_logp, const T* g_ent, const T* x, const bool* av, const int64_t* act, int64_t n_rows,
                  int64_t a, T* grad, std::atomic<int64_t>& bad_row) {
  at::parallel_for(0, n_rows, kRows, [&](int64_t begin, int64_t end) {
    std::vector<T> shifted(kRows * a), e(kRows * a), lse(kRows), ent(kRows);
    for (int64_t r0 = begin; r0 < end; r0 += kRows) {
      const int64_t rows = std::min(kRows, end - r0);
      const int64_t bad = block_stats(x + r0 * a, av + r0 * a, act + r0, rows, a, shifted.data(), e.data(),
                                      lse.data(), ent.data(), r0);
      if (bad >= 0) {
        int64_t cur = bad_row.load();
        while (bad < cur && !bad_row.compare_exchange_weak(cur, bad)) {}
        return;
      }
      for (int64_t r = 0; r < rows; ++r) {
        // d logp_a / dx_k = [k == a] - p_k;  d H / dx_k = -p_k (log p_k + H); both 0 on masked entries (p_k = 0).
        const T gl = g_logp[r0 + r], gh = g_ent[r0 + r], h = ent[r], l = lse[r];
        const T inv_s = std::exp(-l);
        const int64_t action = act[r0 + r];
        T* gr = grad + (r0 + r) * a;
        const bool* ar = av + (r0 + r) * a;
        for (int64_t k = 0; k < a; ++k) {
          const T p = e[r * a + k] * inv_s;
          const T g = -gl * p - gh * p * (shifted[r * a + k] - l + h);
          gr[k] = ar[k] ? g : T(0);
        }
        gr[action] += gl;
      }
    }
  });
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
  auto logp = at::empty(actions.sizes(), logits.options());
  auto entropy = at::empty(actions.sizes(), logits.options());
  std::atomic<int64_t> bad_row{std::numeric_limits<int64_t>::max()};
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "masked_softmax_stats_cpu", [&] {
    forward_cpu<scalar_t>(in.x.data_ptr<scalar_t>(), in.av.data_ptr<bool>(), in.act.data_ptr<int64_t>(), in.n_rows,
                          in.a, logp.data_ptr<scalar_t>(), entropy.data_ptr<scalar_t>(), bad_row);
  });
  if (bad_row.load() != std::numeric_limits<int64_t>::max())
    raise_row_error(in.av.data_ptr<bool>(), in.act.data_ptr<int64_t>(), in.a, bad_row.load());
  return {logp, entropy};
}

at::Tensor masked_softmax_stats_backward_cpu(const at::Tensor& grad_logp, const at::Tensor& grad_entropy,
                                             const at::Tensor& logits, const at::Tensor& avail,
                                             const at::Tensor& actions) {
  auto in = flatten(logits, avail, actions, "masked_softmax_stats_backward");
  for (const auto& [name, g] : {std::pair<const char*, const at::Tensor&>{"grad_logp", grad_logp},
                                {"grad_entropy", grad_entropy}}) {
    TORCH_CHECK_VALUE(g.sizes() == actions.sizes() && g.scalar_type() == logits.scalar_type() &&
                          g.device() == logits.device(),
                      name, " must match actions' shape ", actions.sizes(), " and logits' dtype ",
                      logits.scalar_type(), ", got ", g.scalar_type(), " ", g.sizes());
  }
  const auto gl = grad_logp.contiguous(), ge = grad_entropy.contiguous();
  auto grad = at::empty(logits.sizes(), logits.options());
  std::atomic<int64_t> bad_row{std::numeric_limits<int64_t>::max()};
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "masked_softmax_stats_backward_cpu", [&] {
    backward_cpu<scalar_t>(gl.data_ptr<scalar_t>(), ge.data_ptr<scalar_t>(), in.x.data_ptr<scalar_t>(),
                           in.av.data_ptr<bool>(), in.act.data_ptr<int64_t>(), in.n_rows, in.a,
                           grad.data_ptr<scalar_t>(), bad_row);
  });
  if (bad_row.load() != std::numeric_limits<int64_t>::max())
    raise_row_error(in.av.data_ptr<bool>(), in.act.data_ptr<int64_t>(), in.a, bad_row.load());
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CPU, m) {
  m.impl("masked_softmax_stats", &masked_softmax_stats_cpu);
  m.impl("masked_softmax_stats_backward", &masked_softmax_stats_backward_cpu);
}

}  // namespace inspo
