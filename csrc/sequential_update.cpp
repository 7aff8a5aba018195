// Op 3 (docs/design.md 5.3): InSPO's whole sequential improvement pass over the agents in one call.
//
// The policies and the local critics of the N agents are stacks of N MLPs (`weight{l}` [N, out, in], `bias{l}`
// [N, out], as inspo.algos.networks.StackedMLP holds them), each with Adam moments of the same shape and one step
// count per member. For each agent of `order`, exactly as the Python loop of inspo.algos.inspo.InSPO: teammate ratio
// (op 1), local-critic step(s) on the rows resampled in proportion to it, exponentiated advantage (op 1), weighted
// log-likelihood step on the agent's policy (op 2, forward and backward), refresh of its row of `logp_pi`.
// Gradients are written out by hand (linear layers and ReLU), and the optimiser step is PyTorch's own fused Adam
// kernel on the member's slices of the stacks (see Agent), so that a step changes nothing but the member.
// With `matmul_dtype` (e.g. bfloat16) the networks' matrix products run in it, on copies of the parameters in that
// dtype (mlp.h); parameters, Adam state, losses and the kernels' statistics stay in the data's dtype.
//
// Built from ATen and dispatcher calls only, so it is registered once (CompositeExplicitAutograd) and runs on the
// device of its tensors. Nothing on a device is read by the host: there the agent order is a device tensor whose
// entries pick each member's slices by index operations (on the CPU, where reading it waits for nothing, the host
// reads it and takes views), and the losses are returned, not checked (a non-finite one is the caller's to find in
// them), so that a whole pass can be queued without waiting and captured as a CUDA graph.
#include <torch/library.h>

#include "mlp.h"

namespace inspo {
namespace {

// Agent i = order[k] of the pass, and how its slices of the stacks are taken. On the CPU the host reads i (reading a
// CPU tensor is no device synchronisation): the slices are views, which the Adam steps update in place. Elsewhere i
// stays a device index `idx` ([1], never read by the host): the slices are gathered copies, written back by index.
struct Agent {
  at::Tensor idx;
  int64_t host;  // i on the host, or -1 on a device

  bool on_host() const { return host >= 0; }
  // The agent's slice of `t` along `dim`, without that dimension.
  at::Tensor pick(const at::Tensor& t, int64_t dim) const {
    return on_host() ? t.select(dim, host) : t.index_select(dim, idx).squeeze(dim);
  }
  // Its row of `t`, keeping the dimension: [1, ...].
  at::Tensor row(const at::Tensor& t) const { return on_host() ? t.narrow(0, host, 1) : t.index_select(0, idx); }
  // Writes `value` into its slice of `stack` (dimension 0).
  void put(const at::Tensor& stack, const at::Tensor& value) const {
    if (on_host()) {
      stack.select(0, host).copy_(value);
    } else {
      stack.index_copy_(0, idx, value.unsqueeze(0));
    }
  }
};

// One member of a stack of MLPs and its Adam state: its slices (`Agent::pick`), which `step_with` updates (and
// writes back into the stacks when they are copies), and its parameters in the matmul dtype `mm` in `low` (buffers
// that the pass reuses from agent to agent), refreshed when a forward needs them after a step.
struct Member {
  at::TensorList stacks, exp_avg_stacks, exp_avg_sq_stacks;
  at::Tensor step_stack;
  const Agent& agent;
  at::ScalarType mm;
  Tensors params, exp_avg, exp_avg_sq;
  at::Tensor step;
  Tensors& low;
  bool stale = true;

  Member(at::TensorList params_, at::TensorList exp_avg_, at::TensorList exp_avg_sq_, const at::Tensor& steps,
         const Agent& agent_, at::ScalarType mm_, Tensors& low_)
      : stacks(params_),
        exp_avg_stacks(exp_avg_),
        exp_avg_sq_stacks(exp_avg_sq_),
        step_stack(steps),
        agent(agent_),
        mm(mm_),
        step(agent_.pick(steps, 0)),
        low(low_) {
    for (size_t j = 0; j < params_.size(); ++j) {
      params.push_back(agent.pick(params_[j], 0));
      exp_avg.push_back(agent.pick(exp_avg_[j], 0));
      exp_avg_sq.push_back(agent.pick(exp_avg_sq_[j], 0));
    }
  }

  const Tensors& matmul() {
    if (stale) {
      refresh_matmul_params(low, params, mm);
      stale = false;
    }
    return low;
  }

  at::Tensor forward(const at::Tensor& x, Tensors* inputs = nullptr) {
    return mlp_forward(matmul(), x, params[0].scalar_type(), inputs);
  }

  void step_with(const at::Tensor& grad_out, const Tensors& inputs, const AdamSettings& adam) {
    adam_step(params, mlp_backward(matmul(), grad_out, inputs, params[0].scalar_type()), exp_avg, exp_avg_sq, step,
              adam);
    stale = true;
    if (agent.on_host()) return;
    for (size_t j = 0; j < params.size(); ++j) {
      agent.put(stacks[j], params[j]);
      agent.put(exp_avg_stacks[j], exp_avg[j]);
      agent.put(exp_avg_sq_stacks[j], exp_avg_sq[j]);
    }
    agent.put(step_stack, step);
  }
};

at::Tensor sequential_update(at::TensorList pi, at::TensorList pi_exp_avg, at::TensorList pi_exp_avg_sq,
                             const at::Tensor& pi_steps, at::TensorList lq, at::TensorList lq_exp_avg,
                             at::TensorList lq_exp_avg_sq, const at::Tensor& lq_steps, const at::Tensor& logp_pi,
                             const at::Tensor& obs, const at::Tensor& state, const at::Tensor& avail,
                             const at::Tensor& actions, const at::Tensor& logmu_all, const at::Tensor& logp_mu,
                             const at::Tensor& qbar, const at::Tensor& order, double alpha, double beta, double rho_max,
                             double z_max, double lr_policy, double lr_critic, double adam_beta1, double adam_beta2,
                             double adam_eps, int64_t local_critic_steps, bool sequential, bool use_rho, bool resample,
                             std::optional<at::Generator> generator, std::optional<at::ScalarType> matmul_dtype) {
  NoAutocast no_autocast(c10::autocast_dispatch_keyset);
  TORCH_CHECK_VALUE(obs.dim() == 3, "obs must be [B, N, obs_dim], got shape ", obs.sizes());
  const int64_t rows = obs.size(0), n = obs.size(1);
  TORCH_CHECK_VALUE(logp_pi.dim() == 2 && logp_pi.size(0) == n && logp_pi.size(1) == rows, "logp_pi must be [N, B]=[",
                    n, ", ", rows, "], got shape ", logp_pi.sizes());
  TORCH_CHECK_VALUE(state.dim() == 2 && state.size(0) == rows, "state must be [B, state_dim] with B=", rows,
                    ", got shape ", state.sizes());
  TORCH_CHECK_VALUE(
      logmu_all.sizes() == avail.sizes() && avail.dim() == 3 && avail.size(0) == rows && avail.size(1) == n,
      "avail and logmu_all must be [B, N, A] with B=", rows, ", N=", n, ", got ", avail.sizes(), " and ",
      logmu_all.sizes());
  TORCH_CHECK_VALUE(qbar.dim() == 1 && qbar.size(0) == rows, "qbar must be [B]=[", rows, "], got shape ", qbar.sizes());
  TORCH_CHECK_VALUE(order.scalar_type() == at::kLong && order.dim() == 1 && order.size(0) == n,
                    "order must be an int64 tensor [N]=[", n, "], got ", order.scalar_type(), " ", order.sizes(),
                    " on ", order.device());
  TORCH_CHECK_VALUE(local_critic_steps >= 1, "local_critic_steps must be >= 1, got ", local_critic_steps);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"state", state},
                                {"logmu_all", logmu_all},
                                {"logp_mu", logp_mu},
                                {"qbar", qbar},
                                {"logp_pi", logp_pi}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == obs.scalar_type(), name, " has dtype ", t.scalar_type(), " but obs has ",
                     obs.scalar_type(), "; all must match");
    TORCH_CHECK_VALUE(t.device() == obs.device(), name, " is on ", t.device(), " but obs is on ", obs.device());
  }
  TORCH_CHECK_VALUE(logp_mu.sizes() == logp_pi.sizes(), "logp_mu must be [N, B]=", logp_pi.sizes(), ", got shape ",
                    logp_mu.sizes());
  check_mlp("pi", pi, pi_exp_avg, pi_exp_avg_sq, 1, n, obs);
  check_steps("pi", pi_steps, 1, n, obs);
  check_mlp("local_q", lq, lq_exp_avg, lq_exp_avg_sq, 1, n, obs);
  check_steps("local_q", lq_steps, 1, n, obs);
  const auto mm = resolve_matmul_dtype(matmul_dtype, obs);
  const auto agents = order.to(obs.device());
  // Checked on the device, so that the host never waits for it: on the CPU it raises at once, on CUDA it fails the
  // stream (a device-side assert) before any update.
  const auto is_permutation = std::get<0>(at::sort(agents)).eq(at::arange(n, agents.options())).all();
  at::_assert_async(is_permutation, "order must be a permutation of 0.." + std::to_string(n - 1));
  const double tau = alpha + beta;
  const AdamSettings adam_pi{lr_policy, adam_beta1, adam_beta2, adam_eps};
  const AdamSettings adam_lq{lr_critic, adam_beta1, adam_beta2, adam_eps};
  auto policy_loss = qbar.new_zeros({}), local_q_loss = qbar.new_zeros({}), entropy = qbar.new_zeros({});
  auto weight_max = qbar.new_zeros({});
  at::Tensor rho_all;
  if (!sequential && use_rho) {
    // Every agent sees the pre-iteration teammates: all ratios at once.
    rho_all = std::get<0>(advantage_weights(qbar, qbar, logp_pi, logp_mu, -1, tau, beta, rho_max, z_max));
  }
  Tensors pi_low, lq_low;
  // The networks' inputs in the matmul dtype once for the pass rather than at every forward: the conversion commutes
  // with picking an agent's columns and resampling rows.
  const auto obs_mm = obs.to(mm), state_mm = state.to(mm);
  // On the CPU, after the permutation check above (which raises at once there).
  const auto host_order = agents.is_cpu() ? agents.contiguous() : at::Tensor();
  for (int64_t k = 0; k < n; ++k) {
    const Agent agent{agents.narrow(0, k, 1), host_order.defined() ? host_order.const_data_ptr<int64_t>()[k] : -1};
    const auto pick = [&](const at::Tensor& t, int64_t dim) { return agent.pick(t, dim); };
    Member pol(pi, pi_exp_avg, pi_exp_avg_sq, pi_steps, agent, mm, pi_low);
    Member crit(lq, lq_exp_avg, lq_exp_avg_sq, lq_steps, agent, mm, lq_low);
    at::Tensor rho;
    if (!use_rho) {
      rho = at::ones_like(qbar);
    } else if (sequential) {
      // Every agent's ratio, then agent i's: each is the same sum less the agent's own term, and the op takes its
      // agent as a host integer. Only rho is used here (it picks the local critic's rows); q and v are placeholders.
      rho = pick(std::get<0>(advantage_weights(qbar, qbar, logp_pi, logp_mu, -1, tau, beta, rho_max, z_max)), 0);
    } else {
      rho = pick(rho_all, 0);
    }
    const auto obs_i = pick(obs_mm, 1), avail_i = pick(avail, 1), actions_i = pick(actions, 1);
    at::Tensor sel, row_w, state_s = state_mm, target = qbar, obs_s = obs_i, avail_s = avail_i, a_s = actions_i;
    if (resample) {
      sel = at::multinomial(rho, rows, /*replacement=*/true, generator);
      state_s = state_mm.index_select(0, sel);
      target = qbar.index_select(0, sel);
      obs_s = obs_i.index_select(0, sel);
      avail_s = avail_i.index_select(0, sel);
      a_s = actions_i.index_select(0, sel);
    } else {
      row_w = rho;
    }
    const auto a_col = a_s.unsqueeze(1);

    // Local critic: E over teammates' current policies of Q(s, a_i, a_-i), from dataset joint actions only.
    at::Tensor lq_loss;
    for (int64_t s = 0; s < local_critic_steps; ++s) {
      Tensors inputs;
      const auto out = crit.forward(state_s, &inputs);
      const auto diff = out.gather(1, a_col).squeeze(1) - target;
      const auto err = diff.pow(2);
      at::Tensor grad_q;  // d lq_loss / d Qloc(s, a_i)
      if (resample) {
        lq_loss = err.mean();
        grad_q = diff * (2.0 / static_cast<double>(rows));
      } else {
        const auto w_sum = row_w.sum();
        lq_loss = (row_w * err).sum() / w_sum;
        grad_q = diff * row_w * 2.0 / w_sum;
      }
      const auto grad_out = at::zeros_like(out).scatter_(1, a_col, grad_q.unsqueeze(1));
      crit.step_with(grad_out, inputs, adam_lq);
    }

    // Exact local soft value over the agent's own actions; -inf (unavailable) entries drop out.
    const auto qloc = crit.forward(state_mm);
    const auto vloc = at::logsumexp(pick(logmu_all, 1) * (alpha / tau) + qloc / tau, -1) * tau;
    const auto q_a = qloc.gather(1, actions_i.unsqueeze(1)).squeeze(1);
    // Agent i's advantage reads only its own logp_mu row: the op on that row alone, as agent 0 of 1.
    const auto expadv =
        std::get<1>(advantage_weights(q_a, vloc, agent.row(logp_pi), agent.row(logp_mu), 0, tau, beta, rho_max, z_max));
    const auto w = resample ? expadv.index_select(0, sel) : expadv * row_w;

    Tensors inputs;
    const auto logits = pol.forward(obs_s, &inputs);
    const auto [logp, ent] = masked_softmax_stats(logits, avail_s, a_s);
    const auto w_sum = w.sum();
    const auto loss = -(w * logp).sum() / w_sum;
    const auto grad_logits = masked_softmax_stats_backward(-w / w_sum, at::zeros_like(logp), logits, avail_s, a_s);
    pol.step_with(grad_logits, inputs, adam_pi);

    // The last agent's successors (none) read no ratio: its refresh would be discarded.
    if (sequential && k + 1 < n) {
      agent.put(logp_pi, std::get<0>(masked_softmax_stats(pol.forward(obs_i), avail_i, actions_i)));
    }
    policy_loss = policy_loss + loss / n;
    local_q_loss = local_q_loss + lq_loss / n;
    entropy = entropy + ent.mean() / n;
    weight_max = at::maximum(weight_max, w.max());
  }
  return at::stack({policy_loss, local_q_loss, entropy, weight_max});
}

}  // namespace

TORCH_LIBRARY_IMPL(inspo, CompositeExplicitAutograd, m) { m.impl("sequential_update", &sequential_update); }

}  // namespace inspo
