// Argument checks shared by the CPU and CUDA implementations; messages name the bad value and what was expected.
#pragma once
#include <ATen/ATen.h>

namespace inspo {

inline void check_weights_args(const at::Tensor& q, const at::Tensor& v, const at::Tensor& logp_pi,
                               const at::Tensor& logp_mu, const std::optional<at::Tensor>& mask, int64_t agent,
                               double tau, double rho_max) {
  TORCH_CHECK_VALUE(logp_pi.dim() == 2, "logp_pi must be [N, B], got shape ", logp_pi.sizes());
  const int64_t n = logp_pi.size(0), b = logp_pi.size(1);
  TORCH_CHECK_VALUE(logp_mu.sizes() == logp_pi.sizes(), "logp_mu must have the shape of logp_pi ", logp_pi.sizes(),
                    ", got ", logp_mu.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"q", q}, {"v", v}}) {
    const bool shared = t.dim() == 1 && t.size(0) == b;
    const bool per_agent = t.dim() == 2 && t.size(0) == n && t.size(1) == b;
    TORCH_CHECK_VALUE(shared || per_agent, name, " must be [B]=[", b, "] or [N, B]=[", n, ", ", b, "], got shape ",
                      t.sizes());
  }
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor&>{"q", q}, {"v", v}, {"logp_pi", logp_pi}, {"logp_mu", logp_mu}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                     " must be float32 or float64, got ", t.scalar_type());
    TORCH_CHECK_TYPE(t.scalar_type() == logp_pi.scalar_type(), name, " has dtype ", t.scalar_type(),
                     " but logp_pi has ", logp_pi.scalar_type(), "; all must match");
    TORCH_CHECK_VALUE(t.device() == logp_pi.device(), name, " is on ", t.device(), " but logp_pi is on ",
                      logp_pi.device());
  }
  if (mask.has_value()) {
    TORCH_CHECK_VALUE(mask->scalar_type() == at::kBool && mask->sizes() == logp_pi.sizes(),
                      "mask must be a bool tensor of shape [", n, ", ", b, "], got ", mask->scalar_type(), " ",
                      mask->sizes());
    TORCH_CHECK_VALUE(mask->device() == logp_pi.device(), "mask is on ", mask->device(), " but logp_pi is on ",
                      logp_pi.device());
  }
  TORCH_CHECK_VALUE(agent >= -1 && agent < n, "agent must be in [-1, ", n, ") for N=", n, " agents, got ", agent);
  TORCH_CHECK_VALUE(tau > 0, "tau must be > 0, got ", tau);
  TORCH_CHECK_VALUE(rho_max > 0, "rho_max must be > 0, got ", rho_max);
}

inline void check_softmax_args(const at::Tensor& logits, const at::Tensor& avail, const at::Tensor& actions) {
  TORCH_CHECK_TYPE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                   "logits must be float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK_VALUE(logits.dim() >= 1 && logits.size(-1) >= 1, "logits must be [..., A] with A >= 1, got shape ",
                    logits.sizes());
  TORCH_CHECK_VALUE(avail.scalar_type() == at::kBool && avail.sizes() == logits.sizes(),
                    "avail must be a bool tensor of the logits' shape ", logits.sizes(), ", got ", avail.scalar_type(),
                    " ", avail.sizes());
  TORCH_CHECK_VALUE(actions.scalar_type() == at::kLong && actions.sizes() == logits.sizes().slice(0, logits.dim() - 1),
                    "actions must be an int64 tensor of shape ", logits.sizes().slice(0, logits.dim() - 1), ", got ",
                    actions.scalar_type(), " ", actions.sizes());
  TORCH_CHECK_VALUE(avail.device() == logits.device(), "avail is on ", avail.device(), " but logits is on ",
                    logits.device());
  TORCH_CHECK_VALUE(actions.device() == logits.device(), "actions is on ", actions.device(), " but logits is on ",
                    logits.device());
}

// The incoming gradients of masked_softmax_stats_backward: one per row, of the logits' dtype and device.
inline void check_softmax_grads(const at::Tensor& grad_logp, const at::Tensor& grad_entropy, const at::Tensor& logits,
                                const at::Tensor& actions) {
  for (const auto& [name, g] :
       {std::pair<const char*, const at::Tensor&>{"grad_logp", grad_logp}, {"grad_entropy", grad_entropy}}) {
    TORCH_CHECK_VALUE(
        g.sizes() == actions.sizes() && g.scalar_type() == logits.scalar_type() && g.device() == logits.device(), name,
        " must match actions' shape ", actions.sizes(), " and logits' dtype ", logits.scalar_type(), ", got ",
        g.scalar_type(), " ", g.sizes());
  }
}

}  // namespace inspo
