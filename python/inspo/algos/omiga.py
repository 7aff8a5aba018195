"""OMIGA: Offline Multi-agent RL with Implicit Global-to-local value regularisation (Wang et al., NeurIPS 2023), a
baseline.

The global problem is behaviour-regularised with a reverse KL of strength ``alpha``: its optimum is
``pi*(a|s) ∝ mu(a|s) exp((Q_tot(s,a) - V_tot(s))/alpha)``. With the linear decomposition
``Q_tot = sum_i w_i(s) Q_i(o_i,a_i) + b(s)`` and ``V_tot = sum_i w_i(s) V_i(o_i) + b(s)`` (same weights and bias),
``Q_tot - V_tot = sum_i w_i (Q_i - V_i)`` and the global regulariser becomes a sum of *local* ones: agent i's
optimum is ``pi_i* ∝ mu_i exp(w_i (Q_i - V_i) / alpha)``, and ``V_i`` is its local soft value, learned in-sample.
Per iteration, all three losses from the same networks:

1. ``Q_i`` and the mixer (``w``, ``b``): TD, ``Q_tot(s,a) <- r + gamma (1-done) Vbar_tot(s')`` with the target
   mixer's weights on the target local values ``Vbar_i(o_i')``;
2. ``V_i``: the exponential (in-sample) loss ``E_D[exp(z_i) + wbar_i V_i / alpha]``,
   ``z_i = wbar_i (Qbar_i(o_i,a_i) - V_i(o_i)) / alpha`` (target ``Q_i`` and mixer weights), whose minimiser is
   ``V_i = (alpha / w_i) log E_{mu_i} exp(w_i Q_i / alpha)``;
3. ``pi_i``: weighted log-likelihood of the data actions, weights ``exp(z_i)`` (detached).
Only data actions enter any loss.

Deviations from the paper (and its code), all deliberate:
- decentralised MLPs on each agent's observation (no agent-id input unless ``cfg.shared_policy``), Adam with the
  project's two learning rates (``lr_critic`` for Q, V and the mixer, ``lr_policy`` for the actors), no gradient
  clipping; ``alpha`` is ``cfg.alpha`` (10 in the paper's SMAC runs, whose rewards are ~20x larger than ours);
- the exponent is clipped at ``cfg.z_max`` above and ``-cfg.z_max`` below (the paper's code clips at +-10);
- the actors start from the behaviour-cloned ``mu`` (the fixed point of the weighted likelihood does not depend on
  the start). The V loss keeps the code's shift by ``max(max z, -1)``, which only rescales the loss.

Data-parallel training (:mod:`inspo.algos.parallel`): every loss is a mean over rows, so each rank takes its shard
of the batch; the shift's maximum is taken over all ranks.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from inspo import precision
from inspo.algos.batch import Batch
from inspo.algos.learner import Learner
from inspo.algos.mixers import AgentUtilities, LinearMixer
from inspo.algos.networks import AgentPolicies
from inspo.algos.optim import adam
from inspo.algos.parallel import Shard
from inspo.config import TrainConfig


class OMIGA(Learner):
    """The OMIGA learner; ``mu`` (behaviour cloning) only initialises the actors."""

    STATE = ("pi", "q", "v", "mixer", "q_target", "v_target", "mixer_target", "pi_opt", "q_opt", "v_opt")

    def __init__(self, cfg: TrainConfig, mu: AgentPolicies, state_dim: int, device: torch.device,
                 generator: torch.Generator, shard: Shard | None = None) -> None:
        super().__init__(cfg, mu, state_dim, device, generator, shard)
        n, obs_dim = self.n_agents, self.obs_dim
        self.pi = copy.deepcopy(mu)
        self.pi_opt = adam(self.pi.parameters(), cfg.lr_policy)
        self.q = AgentUtilities(n, obs_dim, self.n_actions, cfg.hidden, cfg.shared_policy).to(device)
        self.v = AgentUtilities(n, obs_dim, 1, cfg.hidden, cfg.shared_policy).to(device)
        self.mixer = LinearMixer(state_dim, n, cfg.hidden).to(device)
        self.q_target = self.target(self.q)
        self.v_target = self.target(self.v)
        self.mixer_target = self.target(self.mixer)
        self.q_opt = adam([*self.q.parameters(), *self.mixer.parameters()], cfg.lr_critic)
        self.v_opt = adam(self.v.parameters(), cfg.lr_critic)

    @precision.matmuls
    def update(self, b: Batch) -> dict[str, Tensor]:
        """One OMIGA iteration on a uniformly sampled batch."""
        cfg, alpha = self.cfg, self.cfg.alpha
        b = b.rows(self.shard.rows(b.reward.shape[0]))

        # 1. Q_i and mixer: TD to the mixed target value of the next state.
        with torch.no_grad():
            v_next = self.v_target(b.next_obs).squeeze(-1)  # [B, N]
            target = b.reward + cfg.gamma * (1.0 - b.terminated) * self.mixer_target(v_next, b.next_state)
        q_taken = self.q(b.obs).gather(-1, b.actions[..., None]).squeeze(-1)  # [B, N]
        q_loss = (self.mixer(q_taken, b.state) - target).pow(2).mean()

        # 2. V_i: in-sample exponential loss on the local advantage scaled by the (target) mixer weight.
        with torch.no_grad():
            q_bar = self.q_target(b.obs).gather(-1, b.actions[..., None]).squeeze(-1)
            w_bar, _ = self.mixer_target.weights(b.state)  # [B, N]
        v = self.v(b.obs).squeeze(-1)  # [B, N]
        z = torch.clamp(w_bar * (q_bar - v) / alpha, min=-cfg.z_max, max=cfg.z_max)
        # Numerical shift, scaling the loss by exp(-shift); the maximum over every rank's rows, as in one process.
        shift = torch.clamp(self.shard.max(z.max().detach()), min=-1.0)
        v_loss = (torch.exp(z - shift) + torch.exp(-shift) * w_bar * v / alpha).mean()

        # 3. pi_i: weighted log-likelihood of the data actions with weights exp(z_i).
        weight = torch.exp(z.detach())  # [B, N]
        logp, entropy = self.k.masked_softmax_stats(self.pi.all_logits(b.obs), b.avail, b.actions)
        policy_loss = -(weight * logp).mean()

        self.shard.require_finite(q_loss=q_loss, v_loss=v_loss, policy_loss=policy_loss)
        # One backward for the three losses: they share no parameters.
        self.gradient_step(q_loss + v_loss + policy_loss, self.pi_opt, self.q_opt, self.v_opt)
        self.update_targets()
        # Report the V loss without the shift, so values are comparable across iterations.
        return {"q_loss": q_loss.detach(), "v_loss": v_loss.detach() * torch.exp(shift),
                "policy_loss": policy_loss.detach(), "entropy": entropy.detach().mean(), "weight_max": weight.max()}
