// Kernel 5 (docs/design.md 5.7), CPU: a GRU cell's recurrence over T steps of R rows, forward and backward, with the
// memory of a row cleared after each step that ended its episode. The input products x_t W_ih^T + b_ih of all steps
// are one matrix product made by the caller; what is left per step is the small product h W_hh^T and the gates.
// Autograd over a Python loop of GRUCell calls spends most of its time on the twenty-odd small operations per step
// around the product; here they are one pass over the R x H gates, fused with the exp they need.
//
// Gates follow torch.nn.GRUCell: r = sigmoid(i_r + h_r), z = sigmoid(i_z + h_z), n = tanh(i_n + r * h_n),
// h' = (1 - z) n + z h, with [i_r, i_z, i_n] = gi_t and [h_r, h_z, h_n] = h W_hh^T + b_hh.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "vec_math.h"

namespace inspo {
namespace {

using simd::Vec;

template <typename T>
INSPO_INLINE Vec<T> sigmoid(Vec<T> x) {
  return T(1) / (T(1) + simd::exp<T>(-x));
}

// tanh(x) = 2 sigmoid(2x) - 1: within a few float epsilons of tanh in absolute terms, which is what the sum it
// feeds (h' = n + z (h - n)) needs.
template <typename T>
INSPO_INLINE Vec<T> tanh(Vec<T> x) {
  return T(2) * sigmoid<T>(T(2) * x) - T(1);
}

// Loads and stores of the j-th vector of columns, the last one partial (w < kWidth lanes). Plain inline functions,
// not lambdas: a lambda would not inherit the AVX2 target of its caller and pass every vector through memory.
template <typename T>
INSPO_INLINE Vec<T> load_part(const T* p, int64_t w) {
  return w == simd::kWidth<T> ? simd::load(p) : simd::load_first(p, w);
}
template <typename T>
INSPO_INLINE void store_part(T* p, Vec<T> v, int64_t w) {
  if (w == simd::kWidth<T>)
    simd::store(p, v);
  else
    simd::store_first(p, v, w);
}

// One step's gates for the H columns of one row, a vector of columns at a time. `saved` receives [r, z, n, h_n]
// (4H) for the backward pass; `out` the new memory.
template <bool kAvx2, typename T>
INSPO_INLINE void forward_row(const T* gi, const T* gh, const T* h, int64_t H, T* saved, T* out) {
  constexpr int64_t W = simd::kWidth<T>;
  for (int64_t j = 0; j < H; j += W) {
    const int64_t w = std::min(W, H - j);
    const Vec<T> r = sigmoid<T>(load_part(gi + j, w) + load_part(gh + j, w));
    const Vec<T> z = sigmoid<T>(load_part(gi + H + j, w) + load_part(gh + H + j, w));
    const Vec<T> hn = load_part(gh + 2 * H + j, w);
    const Vec<T> n = tanh<T>(load_part(gi + 2 * H + j, w) + r * hn);
    store_part(saved + j, r, w);
    store_part(saved + H + j, z, w);
    store_part(saved + 2 * H + j, n, w);
    store_part(saved + 3 * H + j, hn, w);
    store_part(out + j, n + z * (load_part(h + j, w) - n), w);
  }
}

// The gates' gradients of one row from dh (the gradient reaching h' of this step): `d_gi` = [dr, dz, dn] and
// `d_gh` = [dr, dz, dn r] (each 3H), and dh z (the part of the previous memory's gradient not through W_hh) in `dh_z`.
template <bool kAvx2, typename T>
INSPO_INLINE void backward_row(const T* dh, const T* saved, const T* h, int64_t H, T* d_gi, T* d_gh, T* dh_z) {
  constexpr int64_t W = simd::kWidth<T>;
  for (int64_t j = 0; j < H; j += W) {
    const int64_t w = std::min(W, H - j);
    const Vec<T> g = load_part(dh + j, w), r = load_part(saved + j, w), z = load_part(saved + H + j, w);
    const Vec<T> n = load_part(saved + 2 * H + j, w), hn = load_part(saved + 3 * H + j, w);
    const Vec<T> dn = g * (T(1) - z) * (T(1) - n * n);
    const Vec<T> dz = g * (load_part(h + j, w) - n) * z * (T(1) - z);
    const Vec<T> dr = dn * hn * r * (T(1) - r);
    store_part(d_gi + j, dr, w);
    store_part(d_gi + H + j, dz, w);
    store_part(d_gi + 2 * H + j, dn, w);
    store_part(d_gh + j, dr, w);
    store_part(d_gh + H + j, dz, w);
    store_part(d_gh + 2 * H + j, dn * r, w);
    store_part(dh_z + j, g * z, w);
  }
}

template <typename T>
struct StepArgs {
  const T *a, *b, *c;
  int64_t rows, H;
  T *x, *y, *z;
};

template <bool kAvx2, typename T>
INSPO_INLINE void forward_rows(const StepArgs<T>& p) {
  for (int64_t r = 0; r < p.rows; ++r)
    forward_row<kAvx2, T>(p.a + r * 3 * p.H, p.b + r * 3 * p.H, p.c + r * p.H, p.H, p.x + r * 4 * p.H, p.y + r * p.H);
}
template <typename T>
INSPO_AVX2_FMA void forward_avx2(const StepArgs<T>& p) {
  forward_rows<true, T>(p);
}
template <typename T>
void forward_base(const StepArgs<T>& p) {
  forward_rows<false, T>(p);
}

template <bool kAvx2, typename T>
INSPO_INLINE void backward_rows(const StepArgs<T>& p) {
  for (int64_t r = 0; r < p.rows; ++r)
    backward_row<kAvx2, T>(p.a + r * p.H, p.b + r * 4 * p.H, p.c + r * p.H, p.H, p.x + r * 3 * p.H, p.y + r * 3 * p.H,
                           p.z + r * p.H);
}
template <typename T>
INSPO_AVX2_FMA void backward_avx2(const StepArgs<T>& p) {
  backward_rows<true, T>(p);
}
template <typename T>
void backward_base(const StepArgs<T>& p) {
  backward_rows<false, T>(p);
}

void check_args(const at::Tensor& gi, const at::Tensor& keep, const at::Tensor& h0, const at::Tensor& w_hh,
                const at::Tensor& b_hh) {
  TORCH_CHECK_VALUE(h0.dim() == 2, "h0 must be [R, H], got shape ", h0.sizes());
  const int64_t R = h0.size(0), H = h0.size(1);
  TORCH_CHECK_VALUE(gi.dim() == 3 && gi.size(1) == R && gi.size(2) == 3 * H, "gi must be [T, R, 3H] with R=", R,
                    ", H=", H, ", got shape ", gi.sizes());
  TORCH_CHECK_VALUE(keep.dim() == 2 && keep.size(0) == gi.size(0) && keep.size(1) == R, "keep must be [T, R]=[",
                    gi.size(0), ", ", R, "], got shape ", keep.sizes());
  TORCH_CHECK_VALUE(w_hh.dim() == 2 && w_hh.size(0) == 3 * H && w_hh.size(1) == H, "w_hh must be [3H, H]=[", 3 * H,
                    ", ", H, "], got shape ", w_hh.sizes());
  TORCH_CHECK_VALUE(b_hh.dim() == 1 && b_hh.size(0) == 3 * H, "b_hh must be [3H]=[", 3 * H, "], got shape ",
                    b_hh.sizes());
  TORCH_CHECK_TYPE(h0.scalar_type() == at::kFloat || h0.scalar_type() == at::kDouble,
                   "h0 must be float32 or float64, got ", h0.scalar_type());
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor&>{"gi", gi}, {"keep", keep}, {"w_hh", w_hh}, {"b_hh", b_hh}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == h0.scalar_type(), name, " has dtype ", t.scalar_type(), " but h0 has ",
                     h0.scalar_type(), "; all must match");
    TORCH_CHECK_VALUE(t.device().is_cpu(), "gru_sequence: CPU kernel got ", name, " on ", t.device());
  }
}

// Returns (hs [T, R, H], the memory after each step before clearing; saved [T, R, 4H], the gates for the backward).
std::tuple<at::Tensor, at::Tensor> gru_sequence_cpu(const at::Tensor& gi_in, const at::Tensor& keep_in,
                                                    const at::Tensor& h0, const at::Tensor& w_hh,
                                                    const at::Tensor& b_hh) {
  check_args(gi_in, keep_in, h0, w_hh, b_hh);
  const auto gi = gi_in.contiguous(), keep = keep_in.contiguous();
  const int64_t T = gi.size(0), R = h0.size(0), H = h0.size(1);
  // Not the huge-page empty_output of the other kernels: asked for on every call of a training loop, huge pages
  // made these calls slower and erratic (measured: 30-150 ms against 30-50 ms for a 5m_vs_6m minibatch).
  auto hs = at::empty({T, R, H}, h0.options());
  auto saved = at::empty({T, R, 4 * H}, h0.options());
  auto gh = at::empty({R, 3 * H}, h0.options());
  auto h = h0.contiguous().clone();
  const auto w_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "gru_sequence_cpu", [&] {
    const auto step = simd::has_avx2_fma() ? forward_avx2<scalar_t> : forward_base<scalar_t>;
    const scalar_t* gi_p = gi.data_ptr<scalar_t>();
    scalar_t *hs_p = hs.data_ptr<scalar_t>(), *saved_p = saved.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      at::addmm_out(gh, b_hh, h, w_t);
      step({gi_p + t * R * 3 * H, gh.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), R, H, saved_p + t * R * 4 * H,
            hs_p + t * R * H, nullptr});
      at::mul_out(h, hs[t], keep[t].unsqueeze(1));
    }
  });
  return {hs, saved};
}

// Returns the gradients of (gi, h0, w_hh, b_hh). The weights' gradients are summed step by step: one product over
// all steps would need the T x R x 3H gate gradients and the memories as whole tensors, and on the CPU fresh pages
// for tensors that size cost as much as the products.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_sequence_backward_cpu(
    const at::Tensor& grad_hs_in, const at::Tensor& saved_in, const at::Tensor& hs_in, const at::Tensor& keep_in,
    const at::Tensor& h0, const at::Tensor& w_hh) {
  const int64_t T = hs_in.size(0), R = h0.size(0), H = h0.size(1);
  TORCH_CHECK_VALUE(grad_hs_in.sizes() == hs_in.sizes(), "grad_hs must have the shape of hs ", hs_in.sizes(), ", got ",
                    grad_hs_in.sizes());
  TORCH_CHECK_VALUE(hs_in.dim() == 3 && hs_in.size(1) == R && hs_in.size(2) == H, "hs must be [T, R, H] with R=", R,
                    ", H=", H, ", got shape ", hs_in.sizes());
  TORCH_CHECK_VALUE(saved_in.dim() == 3 && saved_in.size(0) == T && saved_in.size(1) == R && saved_in.size(2) == 4 * H,
                    "saved must be [T, R, 4H], got shape ", saved_in.sizes());
  TORCH_CHECK_VALUE(keep_in.dim() == 2 && keep_in.size(0) == T && keep_in.size(1) == R, "keep must be [T, R]=[", T,
                    ", ", R, "], got shape ", keep_in.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_hs", grad_hs_in},
                                {"saved", saved_in},
                                {"hs", hs_in},
                                {"keep", keep_in},
                                {"w_hh", w_hh}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == h0.scalar_type(), name, " has dtype ", t.scalar_type(), " but h0 has ",
                     h0.scalar_type(), "; all must match");
  }
  const auto grad_hs = grad_hs_in.contiguous(), saved = saved_in.contiguous(), keep = keep_in.contiguous();
  const auto hs = hs_in.contiguous();
  auto d_gi = at::empty({T, R, 3 * H}, h0.options());
  auto d_gh = at::empty({R, 3 * H}, h0.options());
  auto d_w = at::zeros_like(w_hh), d_b = at::zeros({3 * H}, h0.options());
  auto prev = at::empty({R, H}, h0.options());  // the memory step t started from
  auto dh = at::empty({R, H}, h0.options());    // the gradient reaching step t's output h'
  auto dh_z = at::empty({R, H}, h0.options());  // its part through z, to which the product's part is added
  auto carried = at::zeros({R, H}, h0.options());
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "gru_sequence_backward_cpu", [&] {
    const auto step = simd::has_avx2_fma() ? backward_avx2<scalar_t> : backward_base<scalar_t>;
    const scalar_t* saved_p = saved.data_ptr<scalar_t>();
    scalar_t* d_gi_p = d_gi.data_ptr<scalar_t>();
    for (int64_t t = T - 1; t >= 0; --t) {
      if (t > 0)
        at::mul_out(prev, hs[t - 1], keep[t - 1].unsqueeze(1));
      else
        prev.copy_(h0);
      at::add_out(dh, grad_hs[t], carried);
      step({dh.data_ptr<scalar_t>(), saved_p + t * R * 4 * H, prev.data_ptr<scalar_t>(), R, H, d_gi_p + t * R * 3 * H,
            d_gh.data_ptr<scalar_t>(), dh_z.data_ptr<scalar_t>()});
      d_w.addmm_(d_gh.t(), prev);
      d_b.add_(d_gh.sum(0));
      at::addmm_out(carried, dh_z, d_gh, w_hh);  // the gradient reaching the memory this step started from
      if (t > 0) carried.mul_(keep[t - 1].unsqueeze(1));
    }
  });
  return {d_gi, carried, d_w, d_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CPU, m) {
  m.impl("gru_sequence", &gru_sequence_cpu);
  m.impl("gru_sequence_backward", &gru_sequence_backward_cpu);
}

}  // namespace inspo
