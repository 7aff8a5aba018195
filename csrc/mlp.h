// What the update ops (sequential_update.cpp, critic_update.cpp) share: an MLP's forward and hand-written backward
// on a list of parameters [weight0, bias0, weight1, bias1, ...] (ReLU between the layers, as
// inspo.algos.networks.MLP), PyTorch's fused Adam step on such a list, and the dispatcher calls of ops 1 and 2.
// ATen only, so that the ops run on the device of their tensors.
//
// Matrix products in a lower precision (the ops' `matmul_dtype`, e.g. bfloat16): the MLP runs on copies of the
// (master) parameters in that dtype, its input cast to it and its output cast back to the master dtype, exactly as
// reference._mlp does under autograd: activations and the backward's matrix products in the low dtype, every
// gradient cast back to the master dtype before the (master-precision) Adam step.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <vector>

namespace inspo {

using Tensors = std::vector<at::Tensor>;

// The dtype of the matrix products: `matmul_dtype` if given, else the data's. A lower precision than the data's
// must be bfloat16 or float16; the ops never raise it.
inline at::ScalarType resolve_matmul_dtype(std::optional<at::ScalarType> matmul_dtype, const at::Tensor& like) {
  const auto master = like.scalar_type();
  const auto dt = matmul_dtype.value_or(master);
  TORCH_CHECK_TYPE(dt == master || dt == at::kBFloat16 || dt == at::kHalf, "matmul_dtype must be None, the data's ",
                   master, ", bfloat16 or float16, got ", dt);
  return dt;
}

// `params` in the matmul dtype `dt`: the parameters themselves when they already have it.
inline Tensors matmul_params(const Tensors& params, at::ScalarType dt) {
  if (params.empty() || params[0].scalar_type() == dt) return params;
  Tensors low;
  low.reserve(params.size());
  for (const auto& p : params) low.push_back(p.to(dt));
  return low;
}

// `low` <- `params` in the matmul dtype `dt`, as `matmul_params`, into the buffers of an earlier call when there are
// any: a member's copies are refreshed after each of its steps, and fresh allocations of that size cost more than
// the conversion.
inline void refresh_matmul_params(Tensors& low, const Tensors& params, at::ScalarType dt) {
  if (params.empty() || params[0].scalar_type() == dt || low.size() != params.size()) {
    low = matmul_params(params, dt);
    return;
  }
  for (size_t j = 0; j < params.size(); ++j) low[j].copy_(params[j]);
}

// Output of the MLP of `params` (in the matmul dtype, see `matmul_params`) on x [rows, in], in the dtype `out`;
// `inputs` (if given) receives every layer's input, for `mlp_backward`.
inline at::Tensor mlp_forward(const Tensors& params, at::Tensor x, at::ScalarType out, Tensors* inputs = nullptr) {
  const size_t layers = params.size() / 2;
  x = x.to(params[0].scalar_type());
  for (size_t l = 0; l < layers; ++l) {
    if (inputs) inputs->push_back(x);
    x = at::linear(x, params[2 * l], params[2 * l + 1]);
    if (l + 1 < layers) x.relu_();  // in place: x is this layer's own output
  }
  return x.to(out);
}

// Gradients (in the dtype `master`) of the parameters from the gradient of the output and the layers' inputs of
// `mlp_forward` on the same `params`.
inline Tensors mlp_backward(const Tensors& params, at::Tensor grad, const Tensors& inputs, at::ScalarType master) {
  Tensors grads(params.size());
  grad = grad.to(params[0].scalar_type());
  for (size_t l = params.size() / 2; l-- > 0;) {
    grads[2 * l] = grad.t().mm(inputs[l]).to(master);
    grads[2 * l + 1] = grad.sum(0).to(master);
    // A layer's input is the previous layer's ReLU output: positive exactly where the ReLU passed its input.
    if (l > 0) {
      grad = grad.mm(params[2 * l]);
      at::threshold_backward_out(grad, grad, inputs[l], 0);  // in place: grad is this product's own output
    }
  }
  return grads;
}

// The update ops' numerics are set by their arguments alone: an ambient autocast would turn the matrix products of
// the hand-written backward to its dtype behind their back (and the gradients with them, which Adam refuses).
using NoAutocast = c10::impl::ExcludeDispatchKeyGuard;

struct AdamSettings {
  double lr, beta1, beta2, eps;
};

// As torch.optim.Adam(fused=True): the step count first, then the fused kernel (which reads it).
inline void adam_step(const Tensors& params, const Tensors& grads, const Tensors& exp_avg, const Tensors& exp_avg_sq,
                      const at::Tensor& step, const AdamSettings& s) {
  step.add_(1);
  const Tensors steps(params.size(), step);
  at::_fused_adam_(params, grads, exp_avg, exp_avg_sq, {}, steps, s.lr, s.beta1, s.beta2, /*weight_decay=*/0.0, s.eps,
                   /*amsgrad=*/false, /*maximize=*/false, std::nullopt, std::nullopt);
}

inline std::tuple<at::Tensor, at::Tensor> advantage_weights(const at::Tensor& q, const at::Tensor& v,
                                                            const at::Tensor& logp_pi, const at::Tensor& logp_mu,
                                                            int64_t agent, double tau, double beta, double rho_max,
                                                            double z_max) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("inspo::advantage_weights", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const std::optional<at::Tensor>&, int64_t, double, double, double, double)>();
  return op.call(q, v, logp_pi, logp_mu, std::nullopt, agent, tau, beta, rho_max, z_max);
}

inline std::tuple<at::Tensor, at::Tensor> masked_softmax_stats(const at::Tensor& logits, const at::Tensor& avail,
                                                               const at::Tensor& actions) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("inspo::masked_softmax_stats", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(logits, avail, actions);
}

inline at::Tensor masked_softmax_stats_backward(const at::Tensor& grad_logp, const at::Tensor& grad_entropy,
                                                const at::Tensor& logits, const at::Tensor& avail,
                                                const at::Tensor& actions) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("inspo::masked_softmax_stats_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&)>();
  return op.call(grad_logp, grad_entropy, logits, avail, actions);
}

// Checks that `params` is an MLP's parameter list [weight0, bias0, ...] with `lead` leading dimensions (1: a stack
// of `n` networks, 0: one network), of the data's dtype and device, and that the Adam moments match it.
inline void check_mlp(const char* name, at::TensorList params, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                      int64_t lead, int64_t n, const at::Tensor& like) {
  TORCH_CHECK_VALUE(!params.empty() && params.size() % 2 == 0, name,
                    ": expected [weight0, bias0, weight1, bias1, ...], got ", params.size(), " tensors");
  TORCH_CHECK_VALUE(exp_avg.size() == params.size() && exp_avg_sq.size() == params.size(), name,
                    ": expected one exp_avg and one exp_avg_sq per parameter (", params.size(), "), got ",
                    exp_avg.size(), " and ", exp_avg_sq.size());
  for (size_t j = 0; j < params.size(); ++j) {
    const auto& p = params[j];
    const bool weight = j % 2 == 0;
    TORCH_CHECK_VALUE(p.dim() == (weight ? 2 : 1) + lead && (lead == 0 || p.size(0) == n), name, "[", j, "] must be ",
                      lead ? (weight ? "[N, out, in]" : "[N, out]") : (weight ? "[out, in]" : "[out]"),
                      lead ? " with N=" + std::to_string(n) : std::string(), ", got shape ", p.sizes());
    TORCH_CHECK_VALUE(p.is_contiguous(), name, "[", j, "] must be contiguous");
    TORCH_CHECK_TYPE(p.scalar_type() == like.scalar_type(), name, "[", j, "] has dtype ", p.scalar_type(),
                     " but the data have ", like.scalar_type());
    TORCH_CHECK_VALUE(p.device() == like.device(), name, "[", j, "] is on ", p.device(), " but the data are on ",
                      like.device());
    TORCH_CHECK_VALUE(exp_avg[j].sizes() == p.sizes() && exp_avg_sq[j].sizes() == p.sizes() &&
                          exp_avg[j].is_contiguous() && exp_avg_sq[j].is_contiguous(),
                      name, "[", j, "]: the Adam moments must be contiguous and of its shape ", p.sizes());
  }
}

inline void check_steps(const char* name, const at::Tensor& steps, int64_t lead, int64_t n, const at::Tensor& like) {
  TORCH_CHECK_VALUE(steps.dim() == lead && (lead == 0 || steps.size(0) == n) && steps.scalar_type() == at::kFloat &&
                        steps.device() == like.device(),
                    name, ": steps must be float32 ", lead ? "[N]=[" + std::to_string(n) + "]" : std::string("[]"),
                    " on ", like.device(), ", got ", steps.scalar_type(), " ", steps.sizes(), " on ", steps.device());
}

}  // namespace inspo
