// The Python module stays thin: it exists so that `import inspo._C` loads this library (which registers the ops
// below with the dispatcher) and reports how it was built.
#include <pybind11/pybind11.h>
#include <torch/library.h>

TORCH_LIBRARY(inspo, m) {
  m.def(
      "advantage_weights(Tensor q, Tensor v, Tensor logp_pi, Tensor logp_mu, Tensor? mask, int agent, float tau, "
      "float beta, float rho_max, float z_max) -> (Tensor, Tensor)");
  m.def("masked_softmax_stats(Tensor logits, Tensor avail, Tensor actions) -> (Tensor, Tensor)");
  m.def(
      "masked_softmax_stats_backward(Tensor grad_logp, Tensor grad_entropy, Tensor logits, Tensor avail, "
      "Tensor actions) -> Tensor");
  m.def(
      "sequential_update(Tensor(a!)[] pi, Tensor(b!)[] pi_exp_avg, Tensor(c!)[] pi_exp_avg_sq, Tensor(d!) pi_steps, "
      "Tensor(e!)[] local_q, Tensor(f!)[] local_q_exp_avg, Tensor(g!)[] local_q_exp_avg_sq, Tensor(h!) local_q_steps, "
      "Tensor(i!) logp_pi, Tensor obs, Tensor state, Tensor avail, Tensor actions, Tensor logmu_all, Tensor logp_mu, "
      "Tensor qbar, Tensor order, float alpha, float beta, float rho_max, float z_max, float lr_policy, "
      "float lr_critic, float adam_beta1, float adam_beta2, float adam_eps, int local_critic_steps, bool sequential, "
      "bool use_rho, bool resample, Generator? generator, ScalarType? matmul_dtype=None) -> Tensor");
  m.def(
      "critic_update(Tensor(a!)[] q, Tensor(b!)[] q_target, Tensor(c!)[] v, Tensor(d!)[] exp_avg, "
      "Tensor(e!)[] exp_avg_sq, Tensor(f!) step, Tensor state, Tensor actions, Tensor reward, Tensor terminated, "
      "Tensor next_state, Tensor logp_mu, int n_actions, float alpha, float beta, float gamma, float z_max, "
      "float polyak, float lr, float adam_beta1, float adam_beta2, float adam_eps, ScalarType? matmul_dtype=None) "
      "-> (Tensor, Tensor, Tensor)");
  m.def("gru_sequence(Tensor gi, Tensor keep, Tensor h0, Tensor w_hh, Tensor b_hh) -> (Tensor, Tensor)");
  m.def(
      "gru_sequence_backward(Tensor grad_hs, Tensor saved, Tensor hs, Tensor keep, Tensor h0, Tensor w_hh) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
}

PYBIND11_MODULE(_C, mod) {
  mod.def("torch_version", [] { return std::string(INSPO_TORCH_VERSION); });
  mod.def("built_with_cuda", [] { return static_cast<bool>(INSPO_WITH_CUDA); });
}
