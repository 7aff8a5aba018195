// InSPO's policy-evaluation step in one call, the part of an iteration before the sequential pass: TD regression of
// the joint critic Q(s, a) to r + gamma (1 - done) V(s'), the in-sample exponential loss of V(s), one fused Adam step
// on both, Polyak averaging of the target critic; exactly InSPO.critic_losses + InSPO.critic_step in
// inspo/algos/inspo.py, with the gradients written out by hand. Returns (Qbar(s, a) of the target critic, Q loss,
// V loss). With `matmul_dtype` (e.g. bfloat16) the networks' matrix products run in it (mlp.h); parameters, Adam
// state and losses stay in the data's dtype. The losses are never read here, so that an iteration never waits for the
// device (and can be captured as a CUDA graph): a non-finite loss is the caller's to find in them (InSPO's deferred
// finiteness check).
#include <torch/library.h>

#include "mlp.h"

namespace inspo {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> critic_update(
    at::TensorList q, at::TensorList q_target, at::TensorList v, at::TensorList exp_avg, at::TensorList exp_avg_sq,
    const at::Tensor& step, const at::Tensor& state, const at::Tensor& actions, const at::Tensor& reward,
    const at::Tensor& terminated, const at::Tensor& next_state, const at::Tensor& logp_mu, int64_t n_actions,
    double alpha, double beta, double gamma, double z_max, double polyak, double lr, double adam_beta1,
    double adam_beta2, double adam_eps, std::optional<at::ScalarType> matmul_dtype) {
  NoAutocast no_autocast(c10::autocast_dispatch_keyset);
  TORCH_CHECK_VALUE(state.dim() == 2, "state must be [B, state_dim], got shape ", state.sizes());
  const int64_t rows = state.size(0);
  TORCH_CHECK_VALUE(actions.dim() == 2 && actions.size(0) == rows && actions.scalar_type() == at::kLong,
                    "actions must be int64 [B, N] with B=", rows, ", got ", actions.scalar_type(), " ",
                    actions.sizes());
  TORCH_CHECK_VALUE(next_state.sizes() == state.sizes(), "next_state must have the shape of state ", state.sizes(),
                    ", got ", next_state.sizes());
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor&>{"reward", reward}, {"terminated", terminated}}) {
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == rows, name, " must be [B]=[", rows, "], got shape ", t.sizes());
  }
  TORCH_CHECK_VALUE(logp_mu.dim() == 2 && logp_mu.size(1) == rows, "logp_mu must be [N, B] with B=", rows,
                    ", got shape ", logp_mu.sizes());
  TORCH_CHECK_VALUE(q_target.size() == q.size(), "q_target must have q's ", q.size(), " tensors, got ",
                    q_target.size());
  Tensors qp(q.begin(), q.end()), qt(q_target.begin(), q_target.end()), vp(v.begin(), v.end());
  Tensors all(qp);
  all.insert(all.end(), vp.begin(), vp.end());
  check_mlp("q, v", all, exp_avg, exp_avg_sq, 0, 0, state);
  check_steps("critic", step, 0, 0, state);
  const auto mm = resolve_matmul_dtype(matmul_dtype, state);
  const auto master = state.scalar_type();
  const auto qp_mm = matmul_params(qp, mm), vp_mm = matmul_params(vp, mm);
  const double tau = alpha + beta;

  // The joint critic's input: the state and every agent's one-hot action, in the matmul dtype once for both critics.
  const auto x = at::cat({state, at::one_hot(actions, n_actions).to(state.scalar_type()).flatten(-2)}, -1).to(mm);
  at::Tensor qbar, target;
  {
    at::NoGradGuard no_grad;
    target = reward + (1.0 - terminated) * gamma * mlp_forward(vp_mm, next_state, master).squeeze(-1);
    qbar = mlp_forward(matmul_params(qt, mm), x, master).squeeze(-1);
  }
  Tensors q_inputs, v_inputs;
  const auto diff = mlp_forward(qp_mm, x, master, &q_inputs).squeeze(-1) - target;
  const auto q_loss = diff.pow(2).mean();
  const auto value = mlp_forward(vp_mm, state, master, &v_inputs).squeeze(-1);
  // Exponential loss whose minimiser is the regularised soft value tau log sum_a mu^(alpha/tau) exp(Q/tau).
  const auto z_raw = (qbar - value) / tau - logp_mu.sum(0) * (beta / tau);
  const auto ez = at::exp(at::clamp_max(z_raw, z_max));
  const auto v_loss = ez.mean() + value.mean() / tau;

  const double per_row = 1.0 / static_cast<double>(rows);
  const auto grad_q = diff * (2.0 * per_row);
  // d/dv of exp(clamp(z)): zero where the clamp is active (as torch.clamp's gradient, which passes z == z_max).
  const auto grad_v = (1.0 - ez * (z_raw <= z_max)) * (per_row / tau);
  auto grads = mlp_backward(qp_mm, grad_q.unsqueeze(-1), q_inputs, master);
  const auto v_grads = mlp_backward(vp_mm, grad_v.unsqueeze(-1), v_inputs, master);
  grads.insert(grads.end(), v_grads.begin(), v_grads.end());
  adam_step(all, grads, Tensors(exp_avg.begin(), exp_avg.end()), Tensors(exp_avg_sq.begin(), exp_avg_sq.end()), step,
            {lr, adam_beta1, adam_beta2, adam_eps});
  at::_foreach_lerp_(qt, qp, polyak);
  return {qbar, q_loss, v_loss};
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CompositeExplicitAutograd, m) { m.impl("critic_update", &critic_update); }

}  // namespace inspo
