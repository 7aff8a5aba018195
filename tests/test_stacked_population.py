"""Populations trained as one (:mod:`inspo.algos.stacked`): P members stacked over members and agents end every
iteration where P ordinary learners, each updated alone on the same batches with the same generator, end (the
single runs on the fused ops and on their PyTorch twins), for every variant of InSPO's pass and with per-member
hyper-parameters; the same for behaviour cloning; members that cannot be stacked are refused by name."""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from _ops_helpers import VARIANTS, everything
from inspo.algos.batch import Batch, behaviour_log_probs
from inspo.algos.bc import BehaviourCloning
from inspo.algos.inspo import InSPO
from inspo.algos.networks import StackedMLP
from inspo.algos.optim import FusedAdam
from inspo.algos.stacked import StackedBC, StackedInSPO
from inspo.algos.stacking import StackedNets, lr_groups
from inspo.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

N, OBS, STATE, A, HIDDEN, BATCH, DATA_ROWS = 3, 6, 7, 5, 16, 32, 300
SEEDS = (0, 1, 5)
ITERS = 5
CPU = torch.device("cpu")
# Per-member hyper-parameters: every one a member may have of its own, different in each member.
PER_MEMBER = [{"alpha": 0.5, "beta": 0.3, "lr_policy": 3e-3, "lr_critic": 3e-3, "rho_max": 4.0, "z_max": 2.0,
               "gamma": 0.99, "polyak": 0.005, "critic_alpha": 1.5},
              {"alpha": 0.2, "beta": 0.0, "lr_policy": 1e-3, "lr_critic": 2e-3, "rho_max": 100.0, "z_max": 10.0,
               "gamma": 0.9, "polyak": 0.05},
              {"alpha": 1.0, "beta": 0.5, "lr_policy": 3e-3, "lr_critic": 1e-3, "rho_max": 2.0, "z_max": 1.0,
               "gamma": 0.5, "polyak": 0.005}]


def dataset(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A random dataset (the stop action 0 always available, the dataset's actions among the available ones)."""
    g = torch.Generator().manual_seed(123)
    avail = torch.rand(DATA_ROWS, N, A, generator=g) < 0.6
    avail[..., 0] = True
    actions = torch.multinomial(avail.reshape(-1, A).double(), 1, generator=g).view(DATA_ROWS, N)
    return {"obs": torch.randn(DATA_ROWS, N, OBS, generator=g, dtype=dtype), "avail": avail, "actions": actions,
            "state": torch.randn(DATA_ROWS, STATE, generator=g, dtype=dtype),
            "reward": torch.randn(DATA_ROWS, generator=g, dtype=dtype),
            "terminated": (torch.rand(DATA_ROWS, generator=g) < 0.2).to(dtype),
            "next_state": torch.randn(DATA_ROWS, STATE, generator=g, dtype=dtype)}


def config(seed: int, dtype: torch.dtype, backend: str, **change: Any) -> TrainConfig:
    settings = {"hidden": HIDDEN, "batch_size": BATCH, "alpha": 0.5, "beta": 0.3, "lr_policy": 3e-3,
                "lr_critic": 3e-3, **change}
    return TrainConfig(dataset="-", backend=backend, seed=seed, dtype=str(dtype).removeprefix("torch."), **settings)


def bc_member(cfg: TrainConfig) -> tuple[BehaviourCloning, torch.Generator]:
    """Behaviour cloning as the trainer starts it: the seed, then the generator, then the policy in the dtype."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    bc = BehaviourCloning(cfg, N, OBS, A, CPU)
    bc.policy.to(getattr(torch, cfg.dtype))
    return bc, gen


class Member:
    """One run as the trainer builds it (behaviour cloning of 2 steps, then the learner), with the data its batches
    come from (its own mu's log-probabilities)."""

    def __init__(self, cfg: TrainConfig, data: dict[str, torch.Tensor]) -> None:
        bc, gen = bc_member(cfg)
        for _ in range(2):
            idx = torch.randint(DATA_ROWS, (BATCH,), generator=gen)
            bc.update(data["obs"][idx], data["avail"][idx], data["actions"][idx])
        self.data = dict(data)
        logmu_all = behaviour_log_probs(bc.policy, data["obs"], data["avail"])
        self.data["logmu_all"] = logmu_all
        self.logp_mu = logmu_all.gather(-1, data["actions"][..., None]).squeeze(-1).t().contiguous()
        self.learner = InSPO(cfg, bc.policy, STATE, CPU, gen)
        for module in vars(self.learner).values():
            if isinstance(module, torch.nn.Module):
                module.to(getattr(torch, cfg.dtype))

    def batch(self) -> Batch:
        """The next batch, drawn from the learner's generator as the trainer draws it."""
        idx = torch.randint(DATA_ROWS, (BATCH,), generator=self.learner.gen)
        names = ("obs", "state", "avail", "actions", "reward", "terminated", "next_state", "logmu_all")
        return Batch(**{k: self.data[k][idx] for k in names}, logp_mu=self.logp_mu[:, idx])


def members(dtype: torch.dtype, backend: str, per_member: list[dict] | None = None, **change: Any) -> list[Member]:
    data = dataset(dtype)
    return [Member(config(seed, dtype, backend, **change, **(per_member[p] if per_member else {})), data)
            for p, seed in enumerate(SEEDS)]


def train_both(stacked_members: list[Member], singles: list[Member], iters: int = ITERS
               ) -> tuple[StackedInSPO, list[dict], list[dict]]:
    population = StackedInSPO([m.learner for m in stacked_members])
    for _ in range(iters):
        stats_pop = population.update([m.batch() for m in stacked_members])
        stats_single = [m.learner.update(m.batch()) for m in singles]
    population.sync()
    return population, stats_pop, stats_single


def assert_same_runs(population: StackedInSPO, singles: list[Member], stats_pop: list[dict],
                     stats_single: list[dict], start: list[dict], **tol: float) -> None:
    for p, (got_learner, single) in enumerate(zip(population.learners, singles, strict=True)):
        got, want = everything(got_learner), everything(single.learner)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], msg=f"member {p}: {name}", **tol)
        assert torch.equal(got_learner.gen.get_state(), single.learner.gen.get_state()), f"member {p}: generator"
        assert stats_pop[p].keys() == stats_single[p].keys()
        for key, value in stats_single[p].items():
            torch.testing.assert_close(stats_pop[p][key], value, msg=f"member {p}: {key}", **tol)
        # Equal because both moved, not because neither did: every agent's policy and local critic left its start.
        for name in ("pi.nets.weight0", "local_q.weight2", "q.net.0.weight", "v.0.weight"):
            moved = (got[name] - start[p][name]).abs().flatten(1 if name[0] in "pl" else 0).amax(-1)
            assert (moved > 1e-6).all(), f"member {p}: {name} did not move"
    assert population.pi.steps.tolist() == [float(ITERS)] * (len(singles) * N)


F64 = {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("backend", ["fused", "torch"])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_population_equals_single_runs(variant: dict[str, Any], backend: str) -> None:
    """float64, 3 members of different seeds: every parameter, Adam moment and step count, every statistic and the
    generator states equal those of the 3 single runs."""
    stacked, singles = members(torch.float64, backend, **variant), members(torch.float64, backend, **variant)
    start = [{k: v.clone() for k, v in everything(m.learner).items()} for m in singles]
    population, stats_pop, stats_single = train_both(stacked, singles)
    assert_same_runs(population, singles, stats_pop, stats_single, start, **F64)


@pytest.mark.parametrize("variant", ["default", "simultaneous-weighted", "weighted-2-local-steps"])
def test_population_with_hyper_parameters_per_member(variant: str) -> None:
    """Members that differ in alpha, beta, lr_policy, lr_critic, rho_max, z_max, gamma, polyak and critic_alpha
    (member 0's only): each still trains as its single run (the fused ops; beta 0 in member 1)."""
    change = VARIANTS[variant]
    stacked = members(torch.float64, "fused", PER_MEMBER, **change)
    singles = members(torch.float64, "fused", PER_MEMBER, **change)
    start = [{k: v.clone() for k, v in everything(m.learner).items()} for m in singles]
    population, stats_pop, stats_single = train_both(stacked, singles)
    assert len(population.lr_policy) == 2 and len(population.lr_critic) == 3  # learning rates grouped
    assert_same_runs(population, singles, stats_pop, stats_single, start, **F64)


def test_population_in_float32() -> None:
    """float32 (the training default): the same runs to float32 rounding, grown over the iterations."""
    stacked, singles = members(torch.float32, "fused"), members(torch.float32, "fused")
    start = [{k: v.clone() for k, v in everything(m.learner).items()} for m in singles]
    population, stats_pop, stats_single = train_both(stacked, singles)
    assert_same_runs(population, singles, stats_pop, stats_single, start, rtol=1e-4, atol=1e-5)


def test_reload_resumes_the_population() -> None:
    """sync() writes checkpointable member learners; a new population reloaded from their state (as a resumed run
    loads them) continues exactly as the first one."""
    first, second = members(torch.float64, "torch"), members(torch.float64, "torch")
    population = StackedInSPO([m.learner for m in first])
    for _ in range(2):
        population.update([m.batch() for m in first])
    population.sync()
    resumed = StackedInSPO([m.learner for m in second])
    for a, b in zip(first, second):
        b.learner.load_state_dict(copy.deepcopy(a.learner.state_dict()))
        b.learner.gen.set_state(a.learner.gen.get_state())
    resumed.reload()
    for _ in range(2):
        population.update([m.batch() for m in first])
        resumed.update([m.batch() for m in second])
    population.sync()
    resumed.sync()
    for a, b in zip(first, second):
        got, want = everything(b.learner), everything(a.learner)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_check_finite_names_the_member() -> None:
    ms = members(torch.float64, "fused")
    population = StackedInSPO([m.learner for m in ms])
    population.update([m.batch() for m in ms])
    population.check_finite()  # nothing non-finite yet
    batches = [m.batch() for m in ms]
    batches[1].reward[3] = math.nan
    population.update(batches)
    with pytest.raises(FloatingPointError, match=r"^population member 1 \(seed 1\): non-finite q_loss \(nan\)"):
        population.check_finite()


UNSTACKABLE = [
    ({"hidden": 8}, r"hidden differs \(member 0: 16, member 1: 16, member 2: 8\)"),
    ({"order": "fixed"}, r"order differs \(member 0: 'random', member 1: 'random', member 2: 'fixed'\)"),
    ({"weighting": "weighted"}, r"weighting differs"),
    ({"use_rho": False}, r"use_rho differs"),
    ({"local_critic_steps": 2}, r"local_critic_steps differs"),
    ({"batch_size": 16}, r"batch_size differs"),
    ({"shared_policy": True}, r"member 2 has shared_policy=True"),
]


@pytest.mark.parametrize("change, message", UNSTACKABLE, ids=[next(iter(c)) for c, _ in UNSTACKABLE])
def test_unstackable_members_are_refused(change: dict, message: str) -> None:
    data = dataset(torch.float64)
    learners = [Member(config(s, torch.float64, "fused"), data).learner for s in SEEDS[:2]]
    learners.append(Member(config(SEEDS[2], torch.float64, "fused", **change), data).learner)
    with pytest.raises(ValueError, match=message):
        StackedInSPO(learners)


def test_other_unstackable_members_are_refused() -> None:
    ms = members(torch.float64, "fused")
    with pytest.raises(ValueError, match="at least one member"):
        StackedInSPO([])
    with pytest.raises(ValueError, match="member 1 is a BehaviourCloning"):
        StackedInSPO([ms[0].learner, bc_member(config(1, torch.float64, "fused"))[0]])
    cfg = config(2, torch.float64, "fused")
    torch.manual_seed(2)
    other = InSPO(cfg, copy.deepcopy(ms[0].learner.pi), STATE + 1, CPU, torch.Generator().manual_seed(2))
    other.q.to(torch.float64), other.q_target.to(torch.float64), other.v.to(torch.float64)
    other.local_q.to(torch.float64)
    with pytest.raises(ValueError, match=r"state_dim differs \(member 0: 7, member 1: 8\)"):
        StackedInSPO([ms[0].learner, other])
    in_float32 = members(torch.float32, "fused")[0].learner
    with pytest.raises(ValueError, match="dtype differs"):
        StackedInSPO([ms[0].learner, in_float32])


# ------------------------------------------------------------------------------------------ behaviour cloning
def bc_batches(gens: list[torch.Generator], data: dict) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for gen in gens:
        idx = torch.randint(DATA_ROWS, (BATCH,), generator=gen)
        out.append((data["obs"][idx], data["avail"][idx], data["actions"][idx]))
    return out


@pytest.mark.parametrize("backend", ["fused", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_stacked_bc_equals_single_clonings(dtype: torch.dtype, backend: str) -> None:
    """3 behaviour clonings of different seeds and learning rates, stacked: each member's policy, Adam state and
    losses are those of its cloning alone."""
    data = dataset(dtype)
    cfgs = [config(s, dtype, backend, lr_policy=lr) for s, lr in zip(SEEDS, (3e-3, 1e-3, 3e-3))]
    stacked, singles = [bc_member(c) for c in cfgs], [bc_member(c) for c in cfgs]
    start = [copy.deepcopy(bc.state_dict()) for bc, _ in singles]
    population = StackedBC([bc for bc, _ in stacked])
    for _ in range(ITERS):
        got_loss = population.update(bc_batches([g for _, g in stacked], data))
        want_loss = torch.stack([bc.update(*b) for (bc, _), b in zip(singles, bc_batches([g for _, g in singles],
                                                                                          data))])
        torch.testing.assert_close(got_loss, want_loss, **(F64 if dtype == torch.float64 else {}))
    population.sync()
    tol = F64 if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for p, ((got, _), (want, _)) in enumerate(zip(stacked, singles)):
        g_state, w_state = got.state_dict(), want.state_dict()
        for name, value in w_state["policy"].items():
            torch.testing.assert_close(g_state["policy"][name], value, msg=f"member {p}: {name}", **tol)
            assert (value - start[p]["policy"][name]).abs().amax() > 1e-6
        for key in ("exp_avg", "exp_avg_sq"):
            for j, value in enumerate(w_state["opt"][key]):
                torch.testing.assert_close(g_state["opt"][key][j], value, msg=f"member {p}: {key} {j}", **tol)
        assert g_state["opt"]["steps"].item() == w_state["opt"]["steps"].item() == ITERS


def test_stacked_bc_refuses_unstackable_members() -> None:
    cfgs = [config(0, torch.float64, "fused"), config(1, torch.float64, "fused", hidden=8)]
    with pytest.raises(ValueError, match=r"hidden differs \(member 0: 16, member 1: 8\)"):
        StackedBC([bc_member(c)[0] for c in cfgs])
    shared = config(1, torch.float64, "fused", shared_policy=True)
    with pytest.raises(ValueError, match="member 1 has shared_policy=True"):
        StackedBC([bc_member(cfgs[0])[0], bc_member(shared)[0]])


def test_stacked_adam_steps_rows_of_unequal_step_counts() -> None:
    """Rows whose step counts differ (as a reload may bring) are stepped each at its own count and learning rate,
    as each member's own FusedAdam steps them."""
    torch.manual_seed(0)
    nets = [StackedMLP(N, 4, 8, 2).double() for _ in range(3)]
    opts = [FusedAdam(net.stacked(), lr, stacked=True) for net, lr in zip(nets, (1e-2, 1e-3, 1e-2))]
    g = torch.Generator().manual_seed(1)
    for _ in range(2):  # member 1's agents 0 and 2 twice ahead of everyone else
        for agent in (0, 2):
            opts[1].step([torch.randn(p.shape[1:], generator=g, dtype=torch.float64) for p in opts[1].params], agent)
    stack = StackedNets.of(opts)
    assert not stack.uniform
    rows = torch.tensor([2, N + 2, 2 * N + 1])  # member p's agent at row p * N + agent
    part = stack.gather(rows)
    grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in part.params]
    part.adam_step(grads, lr_groups([o.lr for o in opts]))
    stack.put(rows, part)
    for p, (opt, agent) in enumerate(zip(opts, (2, 2, 1))):
        opt.step([grad[p] for grad in grads], agent)
    for p, opt in enumerate(opts):
        mine = [t[p * N:(p + 1) * N] for t in (*stack.params, *stack.exp_avg, *stack.exp_avg_sq, stack.steps)]
        theirs = [*opt.params, *opt.state()[0], *opt.state()[1], opt.state()[2]]
        for a, b in zip(mine, theirs, strict=True):
            assert torch.equal(a, b)
    assert stack.steps.tolist() == [0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 0.0, 1.0, 0.0]
