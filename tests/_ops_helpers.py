"""What the kernel tests (``test_op_*.py``) share: the devices they run on, the one accuracy rule, the
extended-precision oracles of ops 1 and 2, their inputs, and InSPO learners and batches for the update ops.

Accuracy rule, for every output and gradient of ops 1 and 2, on every device: the kernel's error against an
independent extended-precision oracle is at most twice the error of the same-precision PyTorch reference
(:mod:`inspo.reference`, on the same device), or at most FLOOR_ULPS units of roundoff (on CUDA the reference is
sometimes exact where the kernel is off by 2-4 ulp: measured on an H200).
The oracle is numpy in long double (x87 extended: 11 bits more than float64), written from the definitions in
docs/design.md 5.1 / 5.2, so it also judges float64 results. Errors are measured as max |x - truth| / (1 + |truth|):
relative
for large values, absolute for small ones. The update ops (docs/design.md 5.3) are held to their twins to float
rounding.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch

import inspo
from inspo.algos.batch import Batch
from inspo.algos.inspo import InSPO
from inspo.algos.networks import AgentPolicies
from inspo.algos.optim import BETAS, EPS
from inspo.config import TrainConfig


# ------------------------------------------------------------------------------------------------------ devices
def _cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if not inspo.built_with_cuda():
        return "inspo was built without its CUDA kernels (torch without CUDA, or no nvcc at build time)"
    return None


CUDA_SKIP = _cuda_skip_reason()
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(CUDA_SKIP is not None, reason=str(CUDA_SKIP))]
"""The marks of a test that needs a CUDA device and the CUDA kernels (see :func:`cuda_only`)."""
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
"""The ``device`` parameter of every kernel test: the CPU, and CUDA where there is a device and the build has its
kernels (skipped otherwise)."""


def cuda_only(fn):
    """Decorator: a test of the CUDA kernels alone (e.g. against the CPU kernels), skipped without them."""
    for mark in needs_cuda:
        fn = mark(fn)
    return fn


# ------------------------------------------------------------------------------------------------ accuracy rule
DTYPES = [torch.float32, torch.float64]
# Where the reference's error is below one unit of roundoff (a single value, an exactly representable result),
# twice it bounds nothing meaningful: a correctly rounded result may be half an ulp off, and 2 x 0 would demand
# bit equality. There, and only there, the kernel is held to one unit of roundoff instead.
FLOOR_ULPS = 4
EXTENDED = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps


def need_oracle(dtype: torch.dtype) -> None:
    if dtype == torch.float64 and not EXTENDED:
        pytest.skip("numpy long double is not more precise than float64 here: no oracle for float64")


def _ld(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.longdouble)


def _err(x: torch.Tensor, truth: np.ndarray) -> float:
    if truth.size == 0:
        return 0.0
    d = np.abs(_ld(x) - truth)
    return float(np.max(d / (1 + np.abs(truth))))


def assert_accurate(name: str, kernel: torch.Tensor, reference: torch.Tensor, truth: np.ndarray) -> None:
    """The accuracy rule (module docstring): ``kernel`` and ``reference`` are the same call's results."""
    assert kernel.shape == reference.shape == truth.shape, (name, kernel.shape, reference.shape, truth.shape)
    assert kernel.dtype == reference.dtype and kernel.device == reference.device, name
    assert torch.isfinite(kernel).all(), f"{name}: kernel output is not finite"
    ek, er = _err(kernel, truth), _err(reference, truth)
    floor = FLOOR_ULPS * torch.finfo(kernel.dtype).eps
    assert ek <= max(2 * er, floor), f"{name}: kernel error {ek:.3g} > max(2 x reference error {er:.3g}, {floor:.3g})"


def assert_same_as_cpu(out_cuda: torch.Tensor, out_cpu: torch.Tensor) -> None:
    """A CUDA kernel's result against the CPU kernel's on the same inputs."""
    assert out_cuda.is_cuda
    tol = 2e-5 if out_cpu.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------------ oracles
def truth_weights(q, v, logp_pi, logp_mu, mask, agent, tau, beta, rho_max, z_max):
    """docs/design.md 5.1 literally, in long double: rho_i = min(exp(sum_{j != i, alive} lpi_j - lmu_j), rho_max)."""
    n, b = logp_pi.shape
    alive = np.ones((n, b), bool) if mask is None else mask.cpu().numpy()
    lpi, lmu = _ld(logp_pi), _ld(logp_mu)
    qq, vv = np.broadcast_to(_ld(q), (n, b)), np.broadcast_to(_ld(v), (n, b))
    with np.errstate(invalid="ignore", over="ignore"):  # garbage in dead entries is selected away
        diff = np.where(alive, lpi - lmu, 0)
        tau_ld, beta_ld = np.longdouble(tau), np.longdouble(beta)
        rho, expadv = [], []
        for i in (range(n) if agent == -1 else [agent]):
            s = np.sum(diff[[j for j in range(n) if j != i]], axis=0) if n > 1 else np.zeros(b, np.longdouble)
            z = (qq[i] - vv[i]) / tau_ld - (beta_ld / tau_ld) * lmu[i]
            rho.append(np.where(alive[i], np.minimum(np.exp(s), np.longdouble(rho_max)), 0))
            expadv.append(np.where(alive[i], np.exp(np.minimum(z, np.longdouble(z_max))), 0))
    if agent == -1:
        return np.stack(rho).reshape(n, b), np.stack(expadv).reshape(n, b)
    return rho[0], expadv[0]


def truth_softmax(logits, avail, actions, g_logp=None, g_ent=None):
    """docs/design.md 5.2 in long double: log-probability, entropy and (optionally) the gradient of
    sum(g_logp * logp + g_ent * entropy) with respect to the logits."""
    a = logits.shape[-1]
    lead = logits.shape[:-1]
    av = avail.cpu().numpy().reshape(-1, a)
    act = actions.cpu().numpy().reshape(-1)
    rows = np.arange(act.size)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        x = np.where(av, _ld(logits).reshape(-1, a), -np.inf)
        sh = x - x.max(axis=1, keepdims=True)
        e = np.exp(sh)
        s = e.sum(axis=1, keepdims=True)
        logp_all = np.where(av, sh - np.log(s), 0)
        p = e / s
        logp = logp_all[rows, act]
        entropy = -np.sum(p * logp_all, axis=1)
        grad = None
        if g_logp is not None:
            onehot = np.zeros_like(p)
            onehot[rows, act] = 1
            gl, gh = _ld(g_logp).reshape(-1, 1), _ld(g_ent).reshape(-1, 1)
            grad = np.where(av, gl * (onehot - p) - gh * p * (logp_all + entropy[:, None]), 0).reshape(logits.shape)
    return logp.reshape(lead), entropy.reshape(lead), grad


# ------------------------------------------------------------------------------------------- inputs of ops 1, 2
# tau, beta, rho_max, z_max: both clamps are active for some entries and inactive for others.
W_SCALARS = (0.5, 0.3, 4.0, 2.0)


def weights_inputs(n, b, q_per_agent, v_per_agent, masked, dtype, device="cpu", seed=0):
    """``(q, v, logp_pi, logp_mu, mask)`` of ``advantage_weights`` on ``device``."""
    g = torch.Generator().manual_seed(seed)
    lpi = torch.randn(n, b, generator=g, dtype=dtype) * 0.7 - 1.5
    lmu = torch.randn(n, b, generator=g, dtype=dtype) * 0.7 - 1.5
    q = torch.randn(*((n, b) if q_per_agent else (b,)), generator=g, dtype=dtype) * 2
    v = torch.randn(*((n, b) if v_per_agent else (b,)), generator=g, dtype=dtype) * 2
    mask = None
    if masked:
        mask = torch.rand(n, b, generator=g) < 0.7
        mask[:, : max(1, b // 10)] = False  # whole columns dead
        if b > 2:
            mask[:, 1] = False
            mask[0, 1] = True  # exactly one agent alive
    return tuple(None if t is None else t.to(device) for t in (q, v, lpi, lmu, mask))


def softmax_inputs(lead, a, dtype, device="cpu", seed=0, scale=3.0, garbage=True):
    """``(logits, avail, actions)`` of ``masked_softmax_stats`` on ``device``; with ``garbage`` the unavailable
    logits hold NaN, +-inf and 1e30, none of which may matter."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*lead, a, generator=g, dtype=dtype) * scale
    avail = torch.rand(*lead, a, generator=g) < 0.6
    actions = torch.randint(0, a, lead, generator=g)
    avail.scatter_(-1, actions[..., None], True)
    flat = avail.reshape(-1, a)
    if flat.shape[0] > 2 and a > 1:
        flat[1] = False  # a row with exactly one available action
        flat[1, actions.reshape(-1)[1]] = True
    if garbage:
        junk = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30], dtype=dtype)
        idx = torch.randint(0, 4, logits.shape, generator=g)
        logits = torch.where(avail, logits, junk[idx])
    return logits.to(device), avail.to(device), actions.to(device)


def softmax_fwd_bwd(fn, logits, avail, actions, g_logp, g_ent):
    """``(logp, entropy, d(sum(g_logp logp + g_ent entropy)) / d logits)`` of ``fn``."""
    x = logits.detach().clone().requires_grad_()
    logp, entropy = fn(x, avail, actions)
    grad, = torch.autograd.grad((logp, entropy), (x,), (g_logp, g_ent))
    return logp.detach(), entropy.detach(), grad


# ----------------------------------------------------------------------------------- the update ops (docs/design.md
# 5.3)
N, OBS, STATE, A, ROWS, HIDDEN = 3, 6, 7, 5, 48, 16
FLOAT, DOUBLE = r"(Float|torch\.float32)", r"(Double|torch\.float64)"
"""A dtype in an error message: the kernels name it as ATen does, the reference twins as torch does."""


def make_batch(seed: int, mu: AgentPolicies, dtype: torch.dtype, device: str = "cpu") -> Batch:
    """A random batch with a random availability mask (the stop action 0 always available) and dataset actions
    among the available ones; ``logmu_all`` from ``mu``, as the trainer computes it."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(ROWS, N, OBS, generator=g, dtype=dtype)
    avail = torch.rand(ROWS, N, A, generator=g) < 0.6
    avail[..., 0] = True
    actions = torch.multinomial(avail.reshape(-1, A).double(), 1, generator=g).view(ROWS, N)
    with torch.no_grad():
        logmu_all = torch.log_softmax(copy.deepcopy(mu).cpu().all_logits(obs).masked_fill(~avail, -math.inf), -1)
    b = Batch(obs=obs, state=torch.randn(ROWS, STATE, generator=g, dtype=dtype), avail=avail, actions=actions,
              reward=torch.randn(ROWS, generator=g, dtype=dtype),
              terminated=(torch.rand(ROWS, generator=g) < 0.2).to(dtype),
              next_state=torch.randn(ROWS, STATE, generator=g, dtype=dtype), logmu_all=logmu_all,
              logp_mu=logmu_all.gather(-1, actions[..., None]).squeeze(-1).t().contiguous())
    return Batch(**{f: getattr(b, f).to(device) for f in ("obs", "state", "avail", "actions", "reward", "terminated",
                                                          "next_state", "logmu_all", "logp_mu")})


def make_learner(dtype: torch.dtype, backend: str = "fused", device: str = "cpu", **change: Any) -> InSPO:
    """An InSPO learner made as the trainer makes it (modules moved to ``dtype`` after construction), from seed 0."""
    cfg = TrainConfig(**{"dataset": "-", "hidden": HIDDEN, "batch_size": ROWS, "alpha": 0.5, "beta": 0.3,
                         "lr_policy": 3e-3, "lr_critic": 3e-3, "backend": backend, **change})
    torch.manual_seed(0)
    mu = AgentPolicies(N, OBS, A, HIDDEN, shared=cfg.shared_policy).to(device, dtype)
    learner = InSPO(cfg, mu, STATE, torch.device(device), torch.Generator(device).manual_seed(1))
    for module in vars(learner).values():
        if isinstance(module, torch.nn.Module):
            module.to(dtype)
    return learner


def everything(learner: InSPO) -> dict[str, torch.Tensor]:
    """Every network's parameters and every optimiser's state, by name."""
    state = learner.state_dict()
    flat = {f"{net}.{k}": v for net in ("pi", "q", "q_target", "v", "local_q") for k, v in state[net].items()}
    for opt in ("pi_opt", "critic_opt", "local_opt"):
        for k, v in state[opt].items():
            for j, t in enumerate(v if isinstance(v, list) else [v]):
                flat[f"{opt}.{k}.{j}"] = t
    return flat


def assert_learners_close(got: InSPO, want: InSPO, **tol: float) -> None:
    a, b = everything(got), everything(want)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name, **tol)


def pass_args(learner: InSPO, b: Batch, seed: int = 5, **change: Any) -> tuple[list, dict]:
    """Positional and keyword arguments of ``sequential_update`` from ``learner``'s networks and optimisers (the
    tensors themselves: a call updates them) on batch ``b``, the agents in the order 2, 0, 1."""
    pi, lq = learner.pi_opt, learner.local_opt
    with torch.no_grad():
        qbar = learner.q_target(b.state, b.actions)
        logp_pi = learner.logp_stack(b)
    args = [pi.params, *pi.state(), lq.params, *lq.state(), logp_pi, b.obs, b.state, b.avail, b.actions,
            b.logmu_all, b.logp_mu, qbar, torch.tensor([2, 0, 1])]
    cfg = learner.cfg
    kwargs = {"alpha": cfg.alpha, "beta": cfg.beta, "rho_max": cfg.rho_max, "z_max": cfg.z_max,
              "lr_policy": cfg.lr_policy, "lr_critic": cfg.lr_critic, "adam_betas": BETAS, "adam_eps": EPS,
              "local_critic_steps": cfg.local_critic_steps, "sequential": cfg.order != "simultaneous",
              "use_rho": cfg.use_rho, "resample": cfg.weighting == "resample",
              "generator": torch.Generator(b.obs.device).manual_seed(seed), **change}
    return args, kwargs


def critic_args(learner: InSPO, b: Batch) -> tuple[list, dict]:
    """Positional and keyword arguments of ``critic_update`` from ``learner``'s critics and their optimiser."""
    cfg = learner.cfg
    args = [list(learner.q.parameters()), list(learner.q_target.parameters()), list(learner.v.parameters()),
            *learner.critic_opt.state(), b.state, b.actions, b.reward, b.terminated, b.next_state, b.logp_mu]
    kwargs = {"n_actions": A, "alpha": cfg.alpha, "beta": cfg.beta, "gamma": cfg.gamma, "z_max": cfg.z_max,
              "polyak": cfg.polyak, "lr": cfg.lr_critic, "adam_betas": BETAS, "adam_eps": EPS}
    return args, kwargs


def clone_args(args: list) -> list:
    """A copy of positional arguments whose tensors (and lists of tensors) are fresh clones."""
    return [[t.detach().clone() for t in a] if isinstance(a, list) else
            a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]


def raw_args(args: list, kw: dict, names: tuple[str, ...]) -> tuple:
    """The dispatcher's positional arguments (``torch.ops.inspo.*.default``): ``adam_betas`` is two floats there."""
    out = list(args)
    for name in names:
        out += list(kw[name]) if name == "adam_betas" else [kw[name]]
    return tuple(out)


VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "weighted-2-local-steps": {"weighting": "weighted", "local_critic_steps": 2},
    "simultaneous-resample": {"order": "simultaneous"},
    "simultaneous-weighted": {"order": "simultaneous", "weighting": "weighted"},
    "fixed-order": {"order": "fixed"},
    "no-rho": {"use_rho": False},
    "no-entropy": {"beta": 0.0},
}
"""Every variant of InSPO's pass (order, weighting, rho, entropy, local-critic steps), by test id."""


def cpu_kernel_or_public(op_name: str, public: Any, device: str) -> tuple[Any, str]:
    """``(kernel, other device)`` for a device-mismatch test: on the CPU a meta tensor stands for the other device,
    and since a meta tensor would send the public call to the fake kernel, the CPU kernel is reached by
    redispatching; on CUDA the public op, with the CPU as the other device."""
    if device != "cpu":
        return public, "cpu"
    op = getattr(torch.ops.inspo, op_name).default
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    return (lambda *args: op.redispatch(cpu, *args)), "meta"

