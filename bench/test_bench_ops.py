"""Microbenchmarks of the four ops as pytest-benchmark tests: for each op and a few shapes, one group comparing our
kernel with the eager pure-PyTorch twin (:mod:`inspo.reference`) and ``torch.compile`` of the twin.

    pytest bench/ --benchmark-only                       # about two minutes on two CPU cores
    pytest bench/ --benchmark-only -k softmax --benchmark-columns=median,iqr,rounds

CUDA shapes run too where there is a device and the build has the CUDA kernels; every timed CUDA call ends with a
synchronisation. Shapes are kept small so that the run stays short; ``inspo bench ops`` (:mod:`inspo.benchmarks.ops`)
is the full grid that writes the result tables in ``bench/results/``. Not collected by plain ``pytest`` (its
testpaths are ``tests/``).
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

import inspo
import inspo.reference as ref
from inspo import ops
from inspo.algos.batch import Batch
from inspo.algos.inspo import InSPO
from inspo.algos.networks import AgentPolicies
from inspo.algos.optim import BETAS, EPS
from inspo.benchmarks.ops import softmax_case, weights_case
from inspo.config import TrainConfig

pytest.importorskip("pytest_benchmark")

_CUDA = torch.cuda.is_available() and inspo.built_with_cuda()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _CUDA, reason="no CUDA device or kernels"))]
IMPLS = ["kernel", "eager", "compile"]
# torch.compile cannot trace the update twins: their fused Adam step mutates the inputs in place, which
# functionalization rejects (torch 2.13: "mutating a non-functional tensor with a functional tensor").
NO_COMPILE = "torch.compile cannot trace the twin's in-place fused Adam step on its inputs"


def _run(benchmark, device: str, group: str, fn: Callable[[], object]) -> None:
    """Time ``fn`` after one warm-up call (where torch.compile compiles), in the group ``group``."""
    if device == "cuda":
        inner = fn

        def fn():
            inner()
            torch.cuda.synchronize()
    benchmark.group = f"{group} [{device}]"
    fn()
    benchmark(fn)


def _compiled(fn):
    # A fresh compiled wrapper per shape: dynamo's guards on one shape, as a training loop with a fixed batch sees.
    torch._dynamo.reset()
    return torch.compile(fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("b, n, agent", [(4096, 8, 0), (4096, 8, -1), (65536, 8, 0), (65536, 8, -1)])
@pytest.mark.parametrize("device", DEVICES)
def test_advantage_weights(benchmark, device, b, n, agent, impl):
    fns, args, eff_bytes, _ = weights_case(b, n, agent, torch.float32, torch.device(device))
    if impl == "compile":
        compiled = _compiled(ref.advantage_weights)
        fns["compile"] = lambda: compiled(*args)
    fn = fns[impl]
    benchmark.extra_info["effective_bytes"] = eff_bytes
    _run(benchmark, device, f"advantage_weights B={b} N={n} agent={agent}", fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("b, n, a", [(4096, 8, 16), (65536, 8, 16)])
@pytest.mark.parametrize("device", DEVICES)
def test_masked_softmax_stats(benchmark, device, b, n, a, mode, impl):
    fns, run, eff_bytes, _ = softmax_case(b, n, a, torch.float32, mode, torch.device(device))
    fn = run(_compiled(ref.masked_softmax_stats)) if impl == "compile" else fns[impl]
    benchmark.extra_info["effective_bytes"] = eff_bytes
    _run(benchmark, device, f"masked_softmax_stats {mode} B={b} N={n} A={a}", fn)


def _learner(n: int, rows: int, device: str) -> tuple[InSPO, Batch]:
    """An InSPO learner of ``n`` agents (hidden width 64, 8 actions) and a random batch of ``rows`` transitions."""
    obs_dim, state_dim, n_actions, hidden = 16, 24, 8, 64
    cfg = TrainConfig(dataset="-", hidden=hidden, batch_size=rows)
    torch.manual_seed(0)
    mu = AgentPolicies(n, obs_dim, n_actions, hidden).to(device)
    learner = InSPO(cfg, mu, state_dim, torch.device(device), torch.Generator(device).manual_seed(1))
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(rows, n, obs_dim, generator=g)
    avail = torch.rand(rows, n, n_actions, generator=g) < 0.7
    avail[..., 0] = True
    actions = torch.multinomial(avail.reshape(-1, n_actions).float(), 1, generator=g).view(rows, n)
    with torch.no_grad():
        logmu_all = torch.log_softmax(copy.deepcopy(mu).cpu().all_logits(obs).masked_fill(~avail, -torch.inf), -1)
    batch = Batch(obs=obs, state=torch.randn(rows, state_dim, generator=g), avail=avail, actions=actions,
                  reward=torch.randn(rows, generator=g), terminated=(torch.rand(rows, generator=g) < 0.1).float(),
                  next_state=torch.randn(rows, state_dim, generator=g), logmu_all=logmu_all,
                  logp_mu=logmu_all.gather(-1, actions[..., None]).squeeze(-1).t().contiguous())
    return learner, Batch(**{k: v.to(device) for k, v in vars(batch).items() if v is not None})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n, rows", [(3, 256), (8, 1024)])
@pytest.mark.parametrize("device", DEVICES)
def test_sequential_update(benchmark, device, n, rows, impl):
    if impl == "compile":
        pytest.skip(NO_COMPILE)
    learner, b = _learner(n, rows, device)
    cfg, pi, lq = learner.cfg, learner.pi_opt, learner.local_opt
    with torch.no_grad():
        qbar, logp_pi = learner.q_target(b.state, b.actions), learner.logp_stack(b)
    args = (pi.params, *pi.state(), lq.params, *lq.state(), logp_pi, b.obs, b.state, b.avail, b.actions, b.logmu_all,
            b.logp_mu, qbar, learner.order())
    kwargs = dict(alpha=cfg.alpha, beta=cfg.beta, rho_max=cfg.rho_max, z_max=cfg.z_max, lr_policy=cfg.lr_policy,
                  lr_critic=cfg.lr_critic, adam_betas=BETAS, adam_eps=EPS, local_critic_steps=cfg.local_critic_steps,
                  sequential=True, use_rho=cfg.use_rho, resample=True, generator=learner.gen)
    fn = ops.sequential_update if impl == "kernel" else ref.sequential_update
    # Every call updates the networks in place: the timed calls are consecutive passes, as in training.
    _run(benchmark, device, f"sequential_update N={n} B={rows}", lambda: fn(*args, **kwargs))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n, rows", [(3, 256), (8, 1024)])
@pytest.mark.parametrize("device", DEVICES)
def test_critic_update(benchmark, device, n, rows, impl):
    if impl == "compile":
        pytest.skip(NO_COMPILE)
    learner, b = _learner(n, rows, device)
    cfg = learner.cfg
    args = (list(learner.q.parameters()), list(learner.q_target.parameters()), list(learner.v.parameters()),
            *learner.critic_opt.state(), b.state, b.actions, b.reward, b.terminated, b.next_state, b.logp_mu)
    kwargs = dict(n_actions=learner.q.n_actions, alpha=cfg.alpha, beta=cfg.beta, gamma=cfg.gamma, z_max=cfg.z_max,
                  polyak=cfg.polyak, lr=cfg.lr_critic, adam_betas=BETAS, adam_eps=EPS)
    fn = ops.critic_update if impl == "kernel" else ref.critic_update
    _run(benchmark, device, f"critic_update N={n} B={rows}", lambda: fn(*args, **kwargs))
