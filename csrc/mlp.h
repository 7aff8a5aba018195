// What the update ops (sequential_update.cpp, critic_update.cpp) share: an MLP's forward and hand-written backward
// on a list of parameters [weight0, bias0, weight1, bias1, ...] (ReLU between the layers, as
// inspo.algos.networks.MLP), PyTorch's fused Adam step on such a list, and the dispatcher calls of ops 1 and 2.
// ATen only, so that the ops run on the device of their tensors.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <vector>

namespace inspo {

using Tensors = std::vector<at::Tensor>;

// Output of the MLP on x [rows, in]; `inputs` (if given) receives every layer's input, for `mlp_backward`.
inline at::Tensor mlp_forward(const Tensors& params, at::Tensor x, Tensors* inputs = nullptr) {
  const size_t layers = params.size() / 2;
  for (size_t l = 0; l < layers; ++l) {
    if (inputs) inputs->push_back(x);
    x = at::linear(x, params[2 * l], params[2 * l + 1]);
    if (l + 1 < layers) x = at::relu(x);
  }
  return x;
}

// Gradients of the parameters from the gradient of the output and the layers' inputs of `mlp_forward`.
inline Tensors mlp_backward(const Tensors& params, at::Tensor grad, const Tensors& inputs) {
  Tensors grads(params.size());
  for (size_t l = params.size() / 2; l-- > 0;) {
    grads[2 * l] = grad.t().mm(inputs[l]);
    grads[2 * l + 1] = grad.sum(0);
    // A layer's input is the previous layer's ReLU output: positive exactly where the ReLU passed its input.
    if (l > 0) grad = at::threshold_backward(grad.mm(params[2 * l]), inputs[l], 0);
  }
  return grads;
}

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
