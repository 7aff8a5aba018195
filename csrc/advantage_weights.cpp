// Kernel 1 (SPEC 5.1), CPU: teammate ratio rho and exponentiated in-sample advantage in one pass over the inputs.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"
#include "vec_math.h"

namespace inspo {
namespace {

constexpr int64_t kChunk = 1024;  // columns per task: the per-chunk buffers stay in L1

template <typename T>
void weights_cpu(const T* q, const T* v, const T* lpi, const T* lmu, const bool* mask, int64_t n, int64_t b,
                 bool q_per_agent, bool v_per_agent, int64_t agent, T tau, T beta, T log_rho_max, T z_max, T* rho,
                 T* expadv) {
  const int64_t first = agent < 0 ? 0 : agent;
  const int64_t last = agent < 0 ? n : agent + 1;
  const T beta_over_tau = beta / tau;
  at::parallel_for(0, b, kChunk, [&](int64_t begin, int64_t end) {
    std::vector<T> total(kChunk), lr(kChunk), z(kChunk);
    for (int64_t c0 = begin; c0 < end; c0 += kChunk) {
      const int64_t len = std::min(kChunk, end - c0);
      // Sum of the alive agents' log ratios; for one agent, skip it instead of subtracting it afterwards.
      std::fill(total.begin(), total.begin() + len, T(0));
      for (int64_t j = 0; j < n; ++j) {
        if (j == agent) continue;
        const T* pj = lpi + j * b + c0;
        const T* mj = lmu + j * b + c0;
        if (mask) {
          const bool* aj = mask + j * b + c0;
          for (int64_t k = 0; k < len; ++k) total[k] += aj[k] ? pj[k] - mj[k] : T(0);
        } else {
          for (int64_t k = 0; k < len; ++k) total[k] += pj[k] - mj[k];
        }
      }
      for (int64_t i = first; i < last; ++i) {
        const int64_t out_row = agent < 0 ? i : 0;
        const T* pi = lpi + i * b + c0;
        const T* mi = lmu + i * b + c0;
        const T* qi = q + (q_per_agent ? i * b : 0) + c0;
        const T* vi = v + (v_per_agent ? i * b : 0) + c0;
        const bool* ai = mask ? mask + i * b + c0 : nullptr;
        for (int64_t k = 0; k < len; ++k) {
          T own = agent < 0 ? ((ai == nullptr || ai[k]) ? pi[k] - mi[k] : T(0)) : T(0);
          lr[k] = std::min(total[k] - own, log_rho_max);
          z[k] = std::min((qi[k] - vi[k]) / tau - beta_over_tau * mi[k], z_max);
        }
        exp_inplace(lr.data(), len);
        exp_inplace(z.data(), len);
        T* ro = rho + out_row * b + c0;
        T* eo = expadv + out_row * b + c0;
        for (int64_t k = 0; k < len; ++k) {
          const bool alive = ai == nullptr || ai[k];
          ro[k] = alive ? lr[k] : T(0);
          eo[k] = alive ? z[k] : T(0);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> advantage_weights_cpu(const at::Tensor& q_, const at::Tensor& v_,
                                                         const at::Tensor& logp_pi_, const at::Tensor& logp_mu_,
                                                         const std::optional<at::Tensor>& mask_, int64_t agent,
                                                         double tau, double beta, double rho_max, double z_max) {
  check_weights_args(q_, v_, logp_pi_, logp_mu_, mask_, agent, tau, rho_max);
  TORCH_CHECK_VALUE(logp_pi_.device().is_cpu(), "advantage_weights: CPU kernel got a tensor on ", logp_pi_.device());
  const auto q = q_.contiguous(), v = v_.contiguous(), lpi = logp_pi_.contiguous(), lmu = logp_mu_.contiguous();
  at::Tensor mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  const int64_t n = lpi.size(0), b = lpi.size(1);
  std::vector<int64_t> out_shape = agent < 0 ? std::vector<int64_t>{n, b} : std::vector<int64_t>{b};
  auto rho = at::empty(out_shape, lpi.options());
  auto expadv = at::empty(out_shape, lpi.options());
  AT_DISPATCH_FLOATING_TYPES(lpi.scalar_type(), "advantage_weights_cpu", [&] {
    weights_cpu<scalar_t>(q.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), lpi.data_ptr<scalar_t>(),
                          lmu.data_ptr<scalar_t>(), mask.defined() ? mask.data_ptr<bool>() : nullptr, n, b,
                          q.dim() == 2, v.dim() == 2, agent, static_cast<scalar_t>(tau),
                          static_cast<scalar_t>(beta), static_cast<scalar_t>(std::log(rho_max)),
                          static_cast<scalar_t>(z_max), rho.data_ptr<scalar_t>(), expadv.data_ptr<scalar_t>());
  });
  return {rho, expadv};
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CPU, m) { m.impl("advantage_weights", &advantage_weights_cpu); }

}  // namespace inspo
