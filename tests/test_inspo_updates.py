"""The InSPO learner's two update paths: one call per step of the backend's ``critic_update`` and
``sequential_update`` (the ops, or their pure-PyTorch twins), and the Python code that runs where those calls do not
apply (a shared policy, data-parallel training, ``compile=True``); where each runs, and that they agree."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from _ops_helpers import assert_learners_close, everything, make_batch, make_learner

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = {
    "default": {},
    "weighted-2-local-steps": {"weighting": "weighted", "local_critic_steps": 2},
    "simultaneous-weighted": {"order": "simultaneous", "weighting": "weighted"},
    "no-rho": {"use_rho": False},
    "critic-alpha": {"critic_alpha": 2.0},
}


def test_python_loop_only_where_the_ops_do_not_apply() -> None:
    for backend in ("fused", "torch"):
        plain = make_learner(torch.float64, backend=backend)
        assert plain.one_call_pass and plain.one_call_critic
        shared = make_learner(torch.float64, backend=backend, shared_policy=True)
        assert not shared.one_call_pass and shared.one_call_critic
        compiled = make_learner(torch.float64, backend=backend, compile=True)
        assert compiled.one_call_pass and not compiled.one_call_critic


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_python_loop_equals_the_twins(variant: dict[str, Any], dtype: torch.dtype) -> None:
    """The Python path of a shared policy and of data-parallel training (``policy_loop``, ``critic_losses``), forced
    on per-agent networks, is bit for bit the twins of :mod:`inspo.reference` (``backend="torch"``)."""
    twin, loop = make_learner(dtype, backend="torch", **variant), make_learner(dtype, backend="torch", **variant)
    loop.one_call_pass = loop.one_call_critic = False
    mu = copy.deepcopy(twin.pi)
    for it in range(3):
        b = make_batch(it, mu, dtype)
        stats_t, stats_l = twin.update(b), loop.update(b)
        assert stats_t.keys() == stats_l.keys()
        assert all(torch.equal(stats_t[key], stats_l[key]) for key in stats_t), (stats_t, stats_l)
    got, want = everything(loop), everything(twin)
    assert all(torch.equal(got[name], want[name]) for name in want)


def test_compiled_critic_losses_train_like_eager() -> None:
    """``TrainConfig.compile``: the critic losses as generated code, the same iterations as eager to rounding."""
    compiled, eager = make_learner(torch.float64, compile=True), make_learner(torch.float64)
    mu = copy.deepcopy(eager.pi)
    for it in range(3):
        b = make_batch(20 + it, mu, torch.float64)
        compiled.update(b)
        eager.update(b)
    assert_learners_close(compiled, eager, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_critic_alpha_sets_the_critic_temperature_apart(backend: str) -> None:
    """``TrainConfig.critic_alpha`` (an ablation): the joint critic learns as with ``alpha=critic_alpha``, the
    policies and local critics as with the run's own alpha, bit for bit."""
    apart = make_learner(torch.float64, backend=backend, alpha=0.1, critic_alpha=2.0)
    critic_like = make_learner(torch.float64, backend=backend, alpha=2.0)
    policy_like = make_learner(torch.float64, backend=backend, alpha=0.1)
    mu = copy.deepcopy(apart.pi)
    for it in range(3):
        b = make_batch(40 + it, mu, torch.float64)
        qbar, _, _ = apart.critic_step(b)
        qbar_c, _, _ = critic_like.critic_step(b)
        policy_like.critic_step(b)
        assert torch.equal(qbar, qbar_c)
        # Both policy passes read the ablation's Qbar: only their temperature may tell them apart.
        apart.policy_pass(b, qbar)
        policy_like.policy_pass(b, qbar)
    got, critic, policy = everything(apart), everything(critic_like), everything(policy_like)
    for name in got:
        want = critic if name.split(".")[0] in ("q", "q_target", "v", "critic_opt") else policy
        assert torch.equal(got[name], want[name]), name
    # The temperature is not idle: the run's own alpha gives the critic another value function.
    assert not torch.equal(got["v.0.weight"], policy["v.0.weight"])
