// Host side of the CUDA ops (docs/design.md 5.1, 5.2): the CPU kernels' checks, allocation, launch on the tensors'
// device and its current stream, and the bad-row error. The kernels themselves are in advantage_weights.cu and
// masked_softmax.cu.
//
// Bad rows of masked_softmax_stats must raise, naming the first one, like the CPU kernel. The kernels find them in
// the same pass as the results and record the first one in an 8-byte device flag, which the host reads back after
// the launch. That read is the op's only synchronisation, and it cannot be avoided if the call that caused the error
// is to raise it: a deferred error would name the wrong call, and a device-side assert poisons the CUDA context for
// the rest of the process. Its price: per call, the host waits for the kernel and copies 8 bytes back, so the CPU
// cannot run ahead of the GPU across this op. advantage_weights has no data-dependent errors and never waits.
// While the stream is being captured into a CUDA graph nothing can be read back, so there the kernels get no flag
// and turn a bad row into a device-side assert that prints the error (kernels.h).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "kernels.h"

namespace inspo {
namespace {

std::tuple<at::Tensor, at::Tensor> advantage_weights_cuda(const at::Tensor& q_, const at::Tensor& v_,
                                                          const at::Tensor& logp_pi_, const at::Tensor& logp_mu_,
                                                          const std::optional<at::Tensor>& mask_, int64_t agent,
                                                          double tau, double beta, double rho_max, double z_max) {
  check_weights_args(q_, v_, logp_pi_, logp_mu_, mask_, agent, tau, rho_max);
  TORCH_CHECK_VALUE(logp_pi_.is_cuda(), "advantage_weights: CUDA kernel got a tensor on ", logp_pi_.device());
  const c10::cuda::CUDAGuard guard(logp_pi_.device());
  const auto q = q_.contiguous(), v = v_.contiguous(), lpi = logp_pi_.contiguous(), lmu = logp_mu_.contiguous();
  at::Tensor mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  const int64_t n = lpi.size(0), b = lpi.size(1);
  std::vector<int64_t> out_shape = agent < 0 ? std::vector<int64_t>{n, b} : std::vector<int64_t>{b};
  auto rho = at::empty(out_shape, lpi.options());
  auto expadv = at::empty(out_shape, lpi.options());
  if (rho.numel() == 0) return {rho, expadv};
  AT_DISPATCH_FLOATING_TYPES(lpi.scalar_type(), "advantage_weights_cuda", [&] {
    // The scalars are rounded to scalar_t as the CPU kernel rounds them, so both use the same constants.
    const auto tau_t = static_cast<scalar_t>(tau);
    gpu::WeightsArgs<scalar_t> args;  // by name: most fields share a type, so a positional mix-up would compile
    args.q = q.data_ptr<scalar_t>();
    args.v = v.data_ptr<scalar_t>();
    args.logp_pi = lpi.data_ptr<scalar_t>();
    args.logp_mu = lmu.data_ptr<scalar_t>();
    args.mask = mask.defined() ? mask.data_ptr<bool>() : nullptr;
    args.n = n;
    args.b = b;
    args.agent = agent;
    args.q_per_agent = q.dim() == 2;
    args.v_per_agent = v.dim() == 2;
    args.tau = tau_t;
    args.beta_over_tau = static_cast<scalar_t>(beta) / tau_t;
    args.log_rho_max = std::log(rho_max);
    args.z_max = static_cast<scalar_t>(z_max);
    args.rho = rho.data_ptr<scalar_t>();
    args.expadv = expadv.data_ptr<scalar_t>();
    gpu::launch_advantage_weights(args, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {rho, expadv};
}

constexpr int64_t kNoBadRow = std::numeric_limits<int64_t>::max();

struct Rows {
  at::Tensor x, av, act;
  int64_t n_rows, a;
};

Rows flatten(const at::Tensor& logits, const at::Tensor& avail, const at::Tensor& actions, const char* who) {
  check_softmax_args(logits, avail, actions);
  TORCH_CHECK_VALUE(logits.is_cuda(), who, ": CUDA kernel got a tensor on ", logits.device());
  const int64_t a = logits.size(-1);
  return {logits.contiguous(), avail.contiguous(), actions.contiguous(), logits.numel() / a, a};
}

// Undefined while the current stream is being captured (see the top of the file).
at::Tensor bad_row_flag(const at::Tensor& like) {
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) return {};
  return at::full({1}, kNoBadRow, like.options().dtype(at::kLong));
}

template <typename T>
gpu::SoftmaxRows<T> softmax_rows(const Rows& in, const at::Tensor& flag) {
  return {in.x.data_ptr<T>(),
          in.av.data_ptr<bool>(),
          in.act.data_ptr<int64_t>(),
          in.n_rows,
          in.a,
          flag.defined() ? flag.data_ptr<int64_t>() : nullptr};
}

// The messages are those of the reference and the CPU kernel, word for word.
void raise_if_bad_row(const at::Tensor& flag, const Rows& in) {
  if (!flag.defined()) return;
  const int64_t code = flag.item<int64_t>();
  if (code == kNoBadRow) return;
  const int kind = static_cast<int>(code >> gpu::kKindShift);
  const int64_t row = code & ((int64_t{1} << gpu::kKindShift) - 1);
  if (kind == gpu::kNoAction) TORCH_CHECK_VALUE(false, "row ", row, " has no available action (avail is all False)");
  const int64_t action = in.act.reshape(-1)[row].item<int64_t>();
  if (kind == gpu::kOutOfRange)
    TORCH_CHECK_VALUE(false, "row ", row, ": action ", action, " is out of range [0, ", in.a, ")");
  TORCH_CHECK_VALUE(false, "row ", row, ": action ", action, " is not available");
}

std::tuple<at::Tensor, at::Tensor> masked_softmax_stats_cuda(const at::Tensor& logits, const at::Tensor& avail,
                                                             const at::Tensor& actions) {
  const auto in = flatten(logits, avail, actions, "masked_softmax_stats");
  const c10::cuda::CUDAGuard guard(logits.device());
  auto logp = at::empty(actions.sizes(), logits.options());
  auto entropy = at::empty(actions.sizes(), logits.options());
  if (in.n_rows == 0) return {logp, entropy};
  const auto flag = bad_row_flag(logits);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "masked_softmax_stats_cuda", [&] {
    gpu::launch_masked_softmax_forward(softmax_rows<scalar_t>(in, flag), logp.data_ptr<scalar_t>(),
                                       entropy.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  raise_if_bad_row(flag, in);
  return {logp, entropy};
}

at::Tensor masked_softmax_stats_backward_cuda(const at::Tensor& grad_logp, const at::Tensor& grad_entropy,
                                              const at::Tensor& logits, const at::Tensor& avail,
                                              const at::Tensor& actions) {
  const auto in = flatten(logits, avail, actions, "masked_softmax_stats_backward");
  check_softmax_grads(grad_logp, grad_entropy, logits, actions);
  const c10::cuda::CUDAGuard guard(logits.device());
  const auto gl = grad_logp.contiguous(), ge = grad_entropy.contiguous();
  auto grad = at::empty(logits.sizes(), logits.options());
  if (in.n_rows == 0) return grad;
  const auto flag = bad_row_flag(logits);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "masked_softmax_stats_backward_cuda", [&] {
    gpu::launch_masked_softmax_backward(softmax_rows<scalar_t>(in, flag), gl.data_ptr<scalar_t>(),
                                        ge.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                        c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  raise_if_bad_row(flag, in);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CUDA, m) {
  m.impl("advantage_weights", &advantage_weights_cuda);
  m.impl("masked_softmax_stats", &masked_softmax_stats_cuda);
  m.impl("masked_softmax_stats_backward", &masked_softmax_stats_backward_cuda);
}

}  // namespace inspo
