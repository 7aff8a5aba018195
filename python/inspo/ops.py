"""Typed entry points to the fused kernels (docs/design.md section 5), with their fake kernels and autograd
registration.

The kernels live in ``csrc/`` (CPU) and ``cuda/`` (CUDA) and are registered with the PyTorch dispatcher as
``torch.ops.inspo.*``; their pure-PyTorch definitions are in :mod:`inspo.reference`.

Non-finite inputs propagate: a NaN or infinite value in the data the ops read (other than unavailable logits, which
are ignored) makes the affected outputs non-finite, as in the reference twins; the ops do not check for it. Training
never feeds them such data unnoticed: datasets with a non-finite value are refused when loaded, and the trainer's
finiteness check (every ``check_every`` iterations and before every checkpoint) stops a run whose losses turned
non-finite, naming the loss. The CPU kernels read any nonzero byte of a bool input as true (memory viewed as bool
need not hold only 0 and 1); the CUDA kernels expect 0 and 1, which every torch operation producing bool gives.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inspo import reference
from inspo._extension import built_with_cuda  # importing it loads the library that registers torch.ops.inspo

__all__ = ["advantage_weights", "critic_update", "gru_sequence", "masked_softmax_stats", "sequential_update"]


# A constant, read once: torch.compile cannot trace a call into the pybind11 module.
_BUILT_WITH_CUDA = built_with_cuda()


def _check_cuda_build(t: Tensor) -> None:
    # Without this the dispatcher's "could not run ... with arguments from the 'CUDA' backend" is all one sees.
    if t.is_cuda and not _BUILT_WITH_CUDA:
        raise RuntimeError("inspo was built without its CUDA kernels but got a CUDA tensor; rebuild with a CUDA "
                           "torch and nvcc: INSPO_CUDA=ON pip install --no-build-isolation --force-reinstall .")


def advantage_weights(q: Tensor, v: Tensor, logp_pi: Tensor, logp_mu: Tensor, mask: Tensor | None, agent: int,
                      tau: float, beta: float, rho_max: float = 100.0, z_max: float = 10.0) -> tuple[Tensor, Tensor]:
    """Teammate importance ratio ``rho`` and exponentiated advantage ``expadv`` (forward only, no gradient).

    See :func:`inspo.reference.advantage_weights` for the definition and shapes.
    """
    _check_cuda_build(logp_pi)
    return torch.ops.inspo.advantage_weights.default(q, v, logp_pi, logp_mu, mask, agent, tau, beta, rho_max, z_max)


def masked_softmax_stats(logits: Tensor, avail: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of ``actions`` and entropy under the softmax of ``logits`` restricted to ``avail``.

    Differentiable with respect to ``logits``. See :func:`inspo.reference.masked_softmax_stats`.
    """
    _check_cuda_build(logits)
    return torch.ops.inspo.masked_softmax_stats.default(logits, avail, actions)


def sequential_update(pi: list[Tensor], pi_exp_avg: list[Tensor], pi_exp_avg_sq: list[Tensor], pi_steps: Tensor,
                      local_q: list[Tensor], local_q_exp_avg: list[Tensor], local_q_exp_avg_sq: list[Tensor],
                      local_q_steps: Tensor, logp_pi: Tensor, obs: Tensor, state: Tensor, avail: Tensor,
                      actions: Tensor, logmu_all: Tensor, logp_mu: Tensor, qbar: Tensor, order: Tensor, *,
                      alpha: float, beta: float, rho_max: float, z_max: float, lr_policy: float, lr_critic: float,
                      adam_betas: tuple[float, float], adam_eps: float, local_critic_steps: int, sequential: bool,
                      use_rho: bool, resample: bool, generator: torch.Generator | None = None,
                      matmul_dtype: torch.dtype | None = None) -> Tensor:
    """InSPO's sequential improvement pass over every agent in ``order``, in one call (docs/design.md 5.3); updates in
    place.

    ``pi`` and ``local_q`` are the agents' policies and local critics, each ``[weight0, bias0, weight1, ...]`` of
    :class:`~inspo.algos.networks.StackedMLP` (``[N, out, in]`` and ``[N, out]``), with their Adam moments and per-agent
    step counts ``[N]`` (float32) as a stacked :class:`~inspo.algos.optim.FusedAdam` holds them; ``logp_pi [N, B]`` is
    the
    log-prob stack of the dataset actions, whose rows are refreshed as the agents are updated. The batch fields are
    those of :class:`~inspo.algos.batch.Batch` and ``qbar [B]`` the target critic's ``Q(s, a)``; ``order`` is an
    int64 permutation of the agents, on any device, used through index operations only (never read by the host). Its
    pure-PyTorch twin is :func:`inspo.reference.sequential_update`: same
    arguments, same draws from ``generator``, the same parameters after the pass to float rounding.

    ``matmul_dtype`` (None: the data's dtype; or ``torch.bfloat16``) is the dtype of the networks' matrix products,
    forward and backward, on copies of the parameters in it; parameters, Adam state, losses and the softmax and
    log-sum-exp statistics stay in the data's dtype. An ambient :func:`torch.autocast` has no effect on the op.

    Returns ``[policy_loss, local_q_loss, entropy, weight_max]`` (means over agents, and the largest weight). Nothing
    is read back, so that a pass never waits for the device: a non-finite loss shows in these statistics.
    """
    _check_cuda_build(obs)
    with torch.no_grad():
        return torch.ops.inspo.sequential_update.default(
            pi, pi_exp_avg, pi_exp_avg_sq, pi_steps, local_q, local_q_exp_avg, local_q_exp_avg_sq, local_q_steps,
            logp_pi, obs, state, avail, actions, logmu_all, logp_mu, qbar, order, alpha, beta, rho_max, z_max,
            lr_policy, lr_critic, adam_betas[0], adam_betas[1], adam_eps, local_critic_steps, sequential, use_rho,
            resample, generator, matmul_dtype)


def critic_update(q: list[Tensor], q_target: list[Tensor], v: list[Tensor], exp_avg: list[Tensor],
                  exp_avg_sq: list[Tensor], step: Tensor, state: Tensor, actions: Tensor, reward: Tensor,
                  terminated: Tensor, next_state: Tensor, logp_mu: Tensor, *, n_actions: int, alpha: float,
                  beta: float, gamma: float, z_max: float, polyak: float, lr: float, adam_betas: tuple[float, float],
                  adam_eps: float, matmul_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """InSPO's policy-evaluation step in one call; updates ``q``, ``v`` (one Adam step), ``q_target`` (Polyak) and the
    Adam state in place.

    ``q``, ``q_target`` and ``v`` are MLP parameter lists ``[weight0, bias0, ...]`` (the joint critic's network, on the
    state and the agents' one-hot actions, and the state-value network), and ``exp_avg``, ``exp_avg_sq`` and
    ``step`` the state of one Adam over ``[*q, *v]`` as :class:`~inspo.algos.optim.FusedAdam` holds it. Its
    pure-PyTorch twin is :func:`inspo.reference.critic_update`.

    Returns ``(Qbar(s, a), Q loss, V loss)``, ``Qbar`` from the target critic before the update. The losses are not
    read here: a non-finite one is the caller's to find in them. ``matmul_dtype``: as in :func:`sequential_update`.
    """
    _check_cuda_build(state)
    with torch.no_grad():
        return torch.ops.inspo.critic_update.default(
            q, q_target, v, exp_avg, exp_avg_sq, step, state, actions, reward, terminated, next_state, logp_mu,
            n_actions, alpha, beta, gamma, z_max, polyak, lr, adam_betas[0], adam_betas[1], adam_eps, matmul_dtype)


def gru_sequence(gi: Tensor, keep: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """The memories ``hs [T, R, H]`` of a GRU cell's recurrence over ``T`` steps with episode ends, differentiable
    with respect to ``gi``, ``h0``, ``w_hh`` and ``b_hh`` (docs/design.md 5.7).

    See :func:`inspo.reference.gru_sequence` for the definition and shapes. The kernel is the CPU's; on another device
    the call runs that twin (no kernel is built for it).
    """
    if gi.device.type != "cpu":
        return reference.gru_sequence(gi, keep, h0, w_hh, b_hh)
    return torch.ops.inspo.gru_sequence.default(gi, keep, h0, w_hh, b_hh)[0]


def _check_same_device(anchor_name: str, anchor: Tensor, **others: Tensor | None) -> None:
    # A meta tensor among real ones sends the whole call here, so the fake kernels repeat the C++ device checks.
    for name, t in others.items():
        if t is not None and t.device != anchor.device:
            raise ValueError(f"{name} is on {t.device} but {anchor_name} is on {anchor.device}")


@torch.library.register_fake("inspo::advantage_weights")
def _(q, v, logp_pi, logp_mu, mask, agent, tau, beta, rho_max, z_max):
    _check_same_device("logp_pi", logp_pi, q=q, v=v, logp_mu=logp_mu, mask=mask)
    torch._check(logp_pi.dim() == 2, lambda: f"logp_pi must be [N, B], got shape {tuple(logp_pi.shape)}")
    shape = logp_pi.shape if agent == -1 else logp_pi.shape[1:]
    return logp_pi.new_empty(shape), logp_pi.new_empty(shape)


@torch.library.register_fake("inspo::masked_softmax_stats")
def _(logits, avail, actions):
    _check_same_device("logits", logits, avail=avail, actions=actions)
    torch._check(logits.dim() >= 1, lambda: "logits must be [..., A]")
    return logits.new_empty(logits.shape[:-1]), logits.new_empty(logits.shape[:-1])


@torch.library.register_fake("inspo::masked_softmax_stats_backward")
def _(grad_logp, grad_entropy, logits, avail, actions):
    _check_same_device("logits", logits, avail=avail, actions=actions, grad_logp=grad_logp,
                       grad_entropy=grad_entropy)
    return torch.empty_like(logits)


@torch.library.register_fake("inspo::sequential_update")
def _(pi, pi_exp_avg, pi_exp_avg_sq, pi_steps, local_q, local_q_exp_avg, local_q_exp_avg_sq, local_q_steps, logp_pi,
      obs, state, avail, actions, logmu_all, logp_mu, qbar, order, *args):
    _check_same_device("obs", obs, state=state, avail=avail, actions=actions, logmu_all=logmu_all, logp_mu=logp_mu,
                       qbar=qbar, logp_pi=logp_pi)
    return qbar.new_empty(4)


@torch.library.register_fake("inspo::critic_update")
def _(q, q_target, v, exp_avg, exp_avg_sq, step, state, actions, reward, terminated, next_state, logp_mu, *args):
    _check_same_device("state", state, actions=actions, reward=reward, terminated=terminated, next_state=next_state,
                       logp_mu=logp_mu)
    return state.new_empty(state.shape[0]), state.new_empty(()), state.new_empty(())


@torch.library.register_fake("inspo::gru_sequence")
def _(gi, keep, h0, w_hh, b_hh):
    _check_same_device("h0", h0, gi=gi, keep=keep, w_hh=w_hh, b_hh=b_hh)
    t, (r, h) = gi.shape[0], h0.shape
    return h0.new_empty(t, r, h), h0.new_empty(t, r, 4 * h)


@torch.library.register_fake("inspo::gru_sequence_backward")
def _(grad_hs, saved, hs, keep, h0, w_hh):
    _check_same_device("h0", h0, grad_hs=grad_hs, saved=saved, hs=hs, keep=keep, w_hh=w_hh)
    t, (r, h) = hs.shape[0], h0.shape
    return h0.new_empty(t, r, 3 * h), torch.empty_like(h0), torch.empty_like(w_hh), w_hh.new_empty(3 * h)


def _gru_setup_context(ctx, inputs, output):
    gi, keep, h0, w_hh, b_hh = inputs
    hs, saved = output
    ctx.save_for_backward(saved, hs, keep, h0, w_hh)


def _gru_backward(ctx, grad_hs, grad_saved):
    saved, hs, keep, h0, w_hh = ctx.saved_tensors
    # The gates (second output) are the backward's own record: no loss reaches them through gru_sequence.
    d_gi, d_h0, d_w, d_b = torch.ops.inspo.gru_sequence_backward.default(grad_hs, saved, hs, keep, h0, w_hh)
    return d_gi, None, d_h0, d_w, d_b


torch.library.register_autograd("inspo::gru_sequence", _gru_backward, setup_context=_gru_setup_context)


def _setup_context(ctx, inputs, output):
    logits, avail, actions = inputs
    ctx.save_for_backward(logits, avail, actions)


def _backward(ctx, grad_logp, grad_entropy):
    logits, avail, actions = ctx.saved_tensors
    # Autograd passes None for an output that did not reach the loss.
    if grad_logp is None:
        grad_logp = logits.new_zeros(actions.shape)
    if grad_entropy is None:
        grad_entropy = logits.new_zeros(actions.shape)
    grad = torch.ops.inspo.masked_softmax_stats_backward.default(grad_logp, grad_entropy, logits, avail, actions)
    return grad, None, None


torch.library.register_autograd("inspo::masked_softmax_stats", _backward, setup_context=_setup_context)
