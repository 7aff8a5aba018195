"""Op 3, ``torch.ops.inspo.sequential_update`` (SPEC 5.3): the whole sequential pass in C++ equals the Python loop
over the agents, for every variant of the pass; its optimiser state and networks are the stacked ones the learner
keeps; bad input raises errors that name it."""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

import inspo
from inspo import ops
from inspo.algos.batch import Batch
from inspo.algos.inspo import InSPO
from inspo.algos.networks import AgentPolicies, StackedMLP
from inspo.algos.optim import BETAS, EPS, FusedAdam
from inspo.config import TrainConfig

# The learners are driven directly, not through inspo.train: one intra-op thread, as there.
pytestmark = pytest.mark.usefixtures("one_thread")

N, OBS, STATE, A, ROWS, HIDDEN = 3, 6, 7, 5, 48, 16


def _batch(seed: int, mu: AgentPolicies, dtype: torch.dtype) -> Batch:
    """A random batch with a random availability mask (the stop action 0 always available) and dataset actions
    among the available ones; ``logmu_all`` from ``mu``, as the trainer computes it."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(ROWS, N, OBS, generator=g, dtype=dtype)
    avail = torch.rand(ROWS, N, A, generator=g) < 0.6
    avail[..., 0] = True
    actions = torch.multinomial(avail.reshape(-1, A).double(), 1, generator=g).view(ROWS, N)
    with torch.no_grad():
        logmu_all = torch.log_softmax(mu.all_logits(obs).masked_fill(~avail, -math.inf), -1)
    return Batch(obs=obs, state=torch.randn(ROWS, STATE, generator=g, dtype=dtype), avail=avail, actions=actions,
                 reward=torch.randn(ROWS, generator=g, dtype=dtype),
                 terminated=(torch.rand(ROWS, generator=g) < 0.2).to(dtype),
                 next_state=torch.randn(ROWS, STATE, generator=g, dtype=dtype), logmu_all=logmu_all,
                 logp_mu=logmu_all.gather(-1, actions[..., None]).squeeze(-1).t().contiguous())


def _learner(dtype: torch.dtype, backend: str = "fused", device: str = "cpu", **change: Any) -> InSPO:
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


def _everything(learner: InSPO) -> dict[str, torch.Tensor]:
    state = learner.state_dict()
    flat = {f"{net}.{k}": v for net in ("pi", "q", "q_target", "v", "local_q") for k, v in state[net].items()}
    for opt in ("pi_opt", "critic_opt", "local_opt"):
        for k, v in state[opt].items():
            for j, t in enumerate(v if isinstance(v, list) else [v]):
                flat[f"{opt}.{k}.{j}"] = t
    return flat


VARIANTS = {
    "default": {},
    "weighted-2-local-steps": {"weighting": "weighted", "local_critic_steps": 2},
    "simultaneous-resample": {"order": "simultaneous"},
    "simultaneous-weighted": {"order": "simultaneous", "weighting": "weighted"},
    "fixed-order": {"order": "fixed"},
    "no-rho": {"use_rho": False},
    "no-entropy": {"beta": 0.0},
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_op_equals_the_python_loop(variant: dict[str, Any], dtype: torch.dtype) -> None:
    """Several whole iterations (critic step, then the pass) with the ops and with the Python code (fused kernels),
    from the same networks and generator: the same parameters, optimiser states and statistics."""
    fused, loop = _learner(dtype, **variant), _learner(dtype, **variant)
    assert fused.fused_pass and fused.fused_critic
    loop.fused_pass = loop.fused_critic = False
    start = copy.deepcopy(fused.pi.state_dict())
    mu = copy.deepcopy(fused.pi)
    for it in range(4):
        b = _batch(it, mu, dtype)
        stats_f, stats_l = fused.update(b), loop.update(b)
        assert stats_f.keys() == stats_l.keys()
        for key in stats_f:
            torch.testing.assert_close(stats_f[key], stats_l[key], msg=key)
    tol = {} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    got, want = _everything(fused), _everything(loop)
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name], msg=name, **tol)
    # Equal because both moved, not because neither did: every agent's policy left its starting point.
    for name, p in fused.pi.state_dict().items():
        assert all((p[i] - start[name][i]).abs().max() > 1e-4 for i in range(N)), name
    assert fused.pi_opt.state()[2].tolist() == [4.0] * N  # one step per agent and iteration


@pytest.mark.cuda
def test_op_equals_the_python_loop_on_cuda() -> None:
    if not (torch.cuda.is_available() and inspo.built_with_cuda()):
        pytest.skip("needs a CUDA device and inspo built with its CUDA kernels")
    fused, loop = _learner(torch.float64, device="cuda"), _learner(torch.float64, device="cuda")
    loop.fused_pass = loop.fused_critic = False
    mu = copy.deepcopy(fused.pi).cpu()
    for it in range(3):
        b = _batch(it, mu, torch.float64)
        b = Batch(**{f: getattr(b, f).cuda() for f in ("obs", "state", "avail", "actions", "reward", "terminated",
                                                       "next_state", "logmu_all", "logp_mu")})
        fused.update(b)
        loop.update(b)
    for name, want in _everything(loop).items():
        torch.testing.assert_close(_everything(fused)[name], want, rtol=1e-10, atol=1e-12, msg=name)


def test_op_equals_the_pure_pytorch_learner() -> None:
    """The op against ``backend="torch"`` (the Python loop on the reference kernels of inspo.reference)."""
    fused, ref = _learner(torch.float64), _learner(torch.float64, backend="torch")
    assert fused.fused_pass and not ref.fused_pass
    mu = copy.deepcopy(fused.pi)
    for it in range(3):
        b = _batch(10 + it, mu, torch.float64)
        fused.update(b)
        ref.update(b)
    for name, want in _everything(ref).items():
        torch.testing.assert_close(_everything(fused)[name], want, rtol=1e-10, atol=1e-12, msg=name)


def test_python_loop_only_where_the_ops_do_not_apply() -> None:
    fused = _learner(torch.float64)
    assert fused.fused_pass and fused.fused_critic
    torch_backend = _learner(torch.float64, backend="torch")
    assert not torch_backend.fused_pass and not torch_backend.fused_critic
    shared = _learner(torch.float64, shared_policy=True)
    assert not shared.fused_pass and shared.fused_critic
    compiled = _learner(torch.float64, compile=True)
    assert compiled.fused_pass and not compiled.fused_critic


def _op_args(learner: InSPO, b: Batch) -> tuple[list, dict]:
    pi, lq = learner.pi_opt, learner.local_opt
    qbar = learner.q_target(b.state, b.actions)
    args = [pi.params, *pi.state(), lq.params, *lq.state(), learner.logp_stack(b), b.obs, b.state, b.avail,
            b.actions, b.logmu_all, b.logp_mu, qbar.detach(), torch.tensor([2, 0, 1])]
    cfg = learner.cfg
    kwargs = {"alpha": cfg.alpha, "beta": cfg.beta, "rho_max": cfg.rho_max, "z_max": cfg.z_max,
              "lr_policy": cfg.lr_policy, "lr_critic": cfg.lr_critic, "adam_betas": BETAS, "adam_eps": EPS,
              "local_critic_steps": 1, "sequential": True, "use_rho": True, "resample": True,
              "generator": torch.Generator().manual_seed(5)}
    return args, kwargs


def test_opcheck_sequential_update() -> None:
    learner = _learner(torch.float64)
    args, kw = _op_args(learner, _batch(0, learner.pi, torch.float64))
    raw = [*args, kw["alpha"], kw["beta"], kw["rho_max"], kw["z_max"], kw["lr_policy"], kw["lr_critic"],
           *kw["adam_betas"], kw["adam_eps"], kw["local_critic_steps"], kw["sequential"], kw["use_rho"],
           kw["resample"], None]
    # Schema (the declared mutations are the only ones) and fake kernel; no autograd: the op takes no gradient.
    torch.library.opcheck(torch.ops.inspo.sequential_update.default, tuple(raw),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("case, error, message", [
    ("order-repeats", ValueError, r"order must be a permutation of 0\.\.2, got"),
    ("order-float", ValueError, r"order must be an int64 CPU tensor \[N\]=\[3\], got Float"),
    ("stack-short", ValueError, r"pi\[0\] must be \[N, out, in\] with N=3, got shape \[2, 16, 6\]"),
    ("moments-missing", ValueError, r"local_q: expected one exp_avg and one exp_avg_sq per parameter \(6\), got 5"),
    ("dtype", TypeError, r"pi\[1\] has dtype Float but the data have Double"),
    ("steps", ValueError, r"pi: steps must be float32 \[N\]=\[3\]"),
    ("qbar", ValueError, r"qbar must be \[B\]=\[48\], got shape \[47\]"),
    ("local-steps", ValueError, r"local_critic_steps must be >= 1, got 0"),
    ("qbar-dtype", TypeError, r"qbar has dtype Float but obs has Double; all must match"),
])
def test_bad_arguments_name_the_value(case: str, error: type, message: str) -> None:
    learner = _learner(torch.float64)
    args, kw = _op_args(learner, _batch(0, learner.pi, torch.float64))
    if case == "order-repeats":
        args[-1] = torch.tensor([0, 0, 1])
    elif case == "order-float":
        args[-1] = torch.tensor([0.0, 1.0, 2.0])
    elif case == "stack-short":
        args[0] = [args[0][0][:2], *args[0][1:]]
    elif case == "moments-missing":
        args[5] = args[5][:5]
    elif case == "dtype":
        args[0] = [args[0][0], args[0][1].float(), *args[0][2:]]
    elif case == "steps":
        args[3] = args[3].double()
    elif case == "qbar":
        args[-2] = args[-2][:-1]
    elif case == "local-steps":
        kw["local_critic_steps"] = 0
    elif case == "qbar-dtype":
        args[-2] = args[-2].float()
    before = [p.clone() for p in learner.pi_opt.params]
    with pytest.raises(error, match=message):
        ops.sequential_update(*args, **kw)
    assert all(torch.equal(p, q) for p, q in zip(learner.pi_opt.params, before))  # checked before any update


@pytest.mark.parametrize("bad, name", [("qbar", "local_q_loss"), ("obs", "policy_loss")])
def test_non_finite_loss_stops_before_its_step(bad: str, name: str) -> None:
    learner = _learner(torch.float64, order="fixed")
    b = _batch(0, learner.pi, torch.float64)
    qbar = learner.q_target(b.state, b.actions).detach()
    if bad == "qbar":
        qbar.fill_(math.nan)
    else:
        b.obs[:, 0] = math.inf  # agent 0, the first of the fixed order: its logits are not finite
    lq_before = [p.clone() for p in learner.local_opt.params]
    pi_before = [p.clone() for p in learner.pi_opt.params]
    with pytest.raises(FloatingPointError, match=f"non-finite {name}"):
        learner.policy_pass(b, qbar)
    for p in learner.pi_opt.params + learner.local_opt.params:
        assert torch.isfinite(p).all()
    assert all(torch.equal(p, q) for p, q in zip(learner.pi_opt.params, pi_before))
    if bad == "qbar":
        assert all(torch.equal(p, q) for p, q in zip(learner.local_opt.params, lq_before))


def test_stacked_adam_equals_one_torch_adam_per_member() -> None:
    """A stacked FusedAdam stepping one member at a time is, bit for bit, a torch.optim.Adam(fused=True) per
    member: the other members do not move."""
    torch.manual_seed(0)
    net = StackedMLP(3, 4, 8, 2)
    members = [[p[k].detach().clone().requires_grad_() for p in net.stacked()] for k in range(3)]
    torch_opts = [torch.optim.Adam(m, lr=1e-2, betas=BETAS, eps=EPS, fused=True) for m in members]
    ours = FusedAdam(net.stacked(), lr=1e-2, stacked=True)
    g = torch.Generator().manual_seed(1)
    for k in [0, 2, 2, 1, 0, 2]:
        grads = [torch.randn(p.shape, generator=g) for p in members[k]]
        for p, grad in zip(members[k], grads):
            p.grad = grad
        torch_opts[k].step()
        ours.step(grads, k)
    for k in range(3):
        for p, q in zip(net.member(k), members[k]):
            assert torch.equal(p, q)
    assert ours.state()[2].tolist() == [2.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="one member at a time"):
        ours.step(grads)


def test_fused_adam_equals_torch_adam_on_batched_forward_gradients() -> None:
    """The gradients of the batched forward (baddbmm) come back transposed: FusedAdam must step as torch.optim.Adam
    does on them (a kernel that reads them as contiguous memory would mix up the elements)."""
    torch.manual_seed(0)
    theirs, ours = AgentPolicies(N, OBS, A, HIDDEN), AgentPolicies(N, OBS, A, HIDDEN)
    ours.load_state_dict(theirs.state_dict())
    torch_opt = torch.optim.Adam(theirs.parameters(), lr=1e-2, betas=BETAS, eps=EPS, fused=True)
    fused = FusedAdam(list(ours.parameters()), lr=1e-2)
    obs = torch.randn(32, N, OBS)
    for _ in range(3):
        torch_opt.zero_grad()
        theirs.all_logits(obs).pow(2).mean().backward()
        torch_opt.step()
        grads = torch.autograd.grad(ours.all_logits(obs).pow(2).mean(), fused.params)
        assert not all(g.is_contiguous() for g in grads)  # the case this test is about
        fused.step(grads)
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_policies_load_checkpoints_from_before_the_stacking() -> None:
    """A policy saved as one nn.Sequential per agent (``nets.<agent>.<layer>.weight``) loads into the stack."""
    torch.manual_seed(0)
    policy = AgentPolicies(N, OBS, A, HIDDEN)
    legacy = {f"nets.{k}.{2 * l}.{kind}": policy.nets.get_parameter(f"{kind}{l}")[k].clone()
              for k in range(N) for l in range(3) for kind in ("weight", "bias")}
    loaded = AgentPolicies(N, OBS, A, HIDDEN)
    loaded.load_state_dict(legacy)
    for name, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_batched_forward_equals_each_agent_alone() -> None:
    torch.manual_seed(0)
    obs = torch.randn(5, 7, N, OBS, dtype=torch.float64)
    for shared in (False, True):
        policy = AgentPolicies(N, OBS, A, HIDDEN, shared=shared).double()
        alone = torch.stack([policy.logits(obs[..., i, :], i) for i in range(N)], dim=-2)
        torch.testing.assert_close(policy.all_logits(obs), alone, rtol=1e-12, atol=1e-12)


def test_compiled_critic_losses_train_like_eager() -> None:
    """``TrainConfig.compile``: the critic losses as generated code, the same iterations as eager to rounding."""
    compiled, eager = _learner(torch.float64, compile=True), _learner(torch.float64)
    mu = copy.deepcopy(eager.pi)
    for it in range(3):
        b = _batch(20 + it, mu, torch.float64)
        compiled.update(b)
        eager.update(b)
    for name, want in _everything(eager).items():
        torch.testing.assert_close(_everything(compiled)[name], want, rtol=1e-9, atol=1e-11, msg=name)


def _critic_args(learner: InSPO, b: Batch) -> tuple[list, dict]:
    cfg = learner.cfg
    args = [list(learner.q.parameters()), list(learner.q_target.parameters()), list(learner.v.parameters()),
            *learner.critic_opt.state(), b.state, b.actions, b.reward, b.terminated, b.next_state, b.logp_mu]
    kwargs = {"n_actions": A, "alpha": cfg.alpha, "beta": cfg.beta, "gamma": cfg.gamma, "z_max": cfg.z_max,
              "polyak": cfg.polyak, "lr": cfg.lr_critic, "adam_betas": BETAS, "adam_eps": EPS}
    return args, kwargs


def test_critic_op_equals_the_python_step() -> None:
    """One critic step with ``critic_update`` and with autograd on ``critic_losses``, from the same networks; z_max is
    the median of z, so that the clamp in the V loss is active on half the rows (its gradient is zero there)."""
    fused, ref = _learner(torch.float64), _learner(torch.float64)
    ref.fused_critic = False
    b = _batch(3, fused.pi, torch.float64)
    with torch.no_grad():
        z = ((fused.q_target(b.state, b.actions) - fused.v(b.state).squeeze(-1)) / fused.tau
             - (fused.cfg.beta / fused.tau) * b.logp_mu.sum(0))
    fused.cfg.z_max = ref.cfg.z_max = float(z.median())
    got, want = fused.critic_step(b), ref.critic_step(b)
    for g, w, name in zip(got, want, ("qbar", "q_loss", "v_loss")):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)
    for name, value in _everything(ref).items():
        torch.testing.assert_close(_everything(fused)[name], value, rtol=1e-12, atol=1e-12, msg=name)


def test_opcheck_critic_update() -> None:
    learner = _learner(torch.float64)
    args, kw = _critic_args(learner, _batch(0, learner.pi, torch.float64))
    raw = [*args, kw["n_actions"], kw["alpha"], kw["beta"], kw["gamma"], kw["z_max"], kw["polyak"], kw["lr"],
           *kw["adam_betas"], kw["adam_eps"]]
    torch.library.opcheck(torch.ops.inspo.critic_update.default, tuple(raw),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("case, error, message", [
    ("reward", ValueError, r"reward must be \[B\]=\[48\], got shape \[47\]"),
    ("actions", ValueError, r"actions must be int64 \[B, N\] with B=48, got Float"),
    ("target", ValueError, r"q_target must have q's 6 tensors, got 4"),
    ("weight", ValueError, r"q, v\[0\] must be \[out, in\], got shape \[1, 16, 22\]"),
    ("step", ValueError, r"critic: steps must be float32 \[\]"),
])
def test_critic_op_bad_arguments_name_the_value(case: str, error: type, message: str) -> None:
    learner = _learner(torch.float64)
    args, kw = _critic_args(learner, _batch(0, learner.pi, torch.float64))
    if case == "reward":
        args[8] = args[8][:-1]
    elif case == "actions":
        args[7] = args[7].float()
    elif case == "target":
        args[1] = args[1][:4]
    elif case == "weight":
        args[0] = [args[0][0][None], *args[0][1:]]
    elif case == "step":
        args[5] = args[5].double()
    with pytest.raises(error, match=message):
        ops.critic_update(*args, **kw)


def test_critic_op_non_finite_loss_changes_nothing() -> None:
    learner = _learner(torch.float64)
    b = _batch(0, learner.pi, torch.float64)
    b.reward[5] = math.nan
    before = {name: t.clone() for name, t in _everything(learner).items()}
    with pytest.raises(FloatingPointError, match="non-finite q_loss"):
        learner.update(b)
    for name, t in _everything(learner).items():
        assert torch.equal(t, before[name]), name
