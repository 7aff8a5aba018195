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
}

PYBIND11_MODULE(_C, mod) {
  mod.def("torch_version", [] { return std::string(INSPO_TORCH_VERSION); });
  mod.def("built_with_cuda", [] { return static_cast<bool>(INSPO_WITH_CUDA); });
}
