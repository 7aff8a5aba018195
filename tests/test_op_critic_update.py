"""Op 4, ``critic_update`` (docs/design.md 5.3, policy evaluation), on every device: one call equals its pure-PyTorch
twin
:func:`inspo.reference.critic_update` (same arguments, same returns, same in-place updates); PyTorch's op tooling;
bad input. The op takes no gradient: what it updates in place is its result."""
from __future__ import annotations

import math

import pytest
import torch

from _ops_helpers import DEVICES, FLOAT, clone_args, critic_args, make_batch, make_learner, raw_args
from inspo import ops, reference

pytestmark = pytest.mark.usefixtures("one_thread")

SCALARS = ("n_actions", "alpha", "beta", "gamma", "z_max", "polyak", "lr", "adam_betas", "adam_eps")


def _flat(args: list) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, list) else [a])]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference(device: str, dtype: torch.dtype) -> None:
    """One critic step with the op and with its twin on copies of the same arguments; z_max is the median of z, so
    that the clamp in the V loss is active on half the rows (its gradient is zero there)."""
    learner = make_learner(dtype, device=device)
    b = make_batch(3, learner.pi, dtype, device)
    with torch.no_grad():
        z = ((learner.q_target(b.state, b.actions) - learner.v(b.state).squeeze(-1)) / learner.tau
             - (learner.cfg.beta / learner.tau) * b.logp_mu.sum(0))
    args, kw = critic_args(learner, b)
    kw["z_max"] = float(z.median())
    got_args, want_args = clone_args(args), clone_args(args)
    got, want = ops.critic_update(*got_args, **kw), reference.critic_update(*want_args, **kw)
    tol = {} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for g, w, name in zip(got, want, ("qbar", "q_loss", "v_loss"), strict=True):
        torch.testing.assert_close(g, w, msg=name, **tol)
    for k, (g, w) in enumerate(zip(_flat(got_args), _flat(want_args), strict=True)):
        torch.testing.assert_close(g, w, msg=f"argument tensor {k}", **tol)
    for before, after in zip(args[0], got_args[0]):  # q moved (and so, by Polyak averaging, q_target)
        assert not torch.equal(before, after)
    assert float(got_args[5]) == 1.0  # one Adam step


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device: str) -> None:
    learner = make_learner(torch.float64, device=device)
    args, kw = critic_args(learner, make_batch(0, learner.pi, torch.float64, device))
    torch.library.opcheck(torch.ops.inspo.critic_update.default, raw_args(args, kw, SCALARS),
                          test_utils=("test_schema", "test_faketensor"))


BAD = [
    ("reward", ValueError, r"reward must be \[B\]=\[48\], got shape \[47\]"),
    ("actions", ValueError, rf"actions must be int64 \[B, N\] with B=48, got {FLOAT}"),
    ("target", ValueError, r"q_target must have q's 6 tensors, got 4"),
    ("weight", ValueError, r"q, v\[0\] must be \[out, in\], got shape \[1, 16, 22\]"),
    ("step", ValueError, r"critic: steps must be float32 \[\]"),
]


@pytest.mark.parametrize("fn", [ops.critic_update, reference.critic_update], ids=["kernel", "reference"])
@pytest.mark.parametrize("case, error, message", BAD, ids=[case for case, *_ in BAD])
@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments_name_the_value(device: str, case: str, error: type, message: str, fn) -> None:
    learner = make_learner(torch.float64, device=device)
    args, kw = critic_args(learner, make_batch(0, learner.pi, torch.float64, device))
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
    before = [p.clone() for p in learner.critic_opt.params]
    with pytest.raises(error, match=message):
        fn(*args, **kw)
    assert all(torch.equal(p, q) for p, q in zip(learner.critic_opt.params, before))


@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_non_finite_loss_is_found_by_the_deferred_check(backend: str) -> None:
    """The step reads nothing back: a non-finite loss is returned, and the learner's deferred check (the trainer's,
    every ``check_every`` iterations) names it."""
    learner = make_learner(torch.float64, backend=backend)
    b = make_batch(0, learner.pi, torch.float64)
    b.reward[5] = math.nan
    stats = learner.update(b)
    assert not torch.isfinite(stats["q_loss"])
    with pytest.raises(FloatingPointError, match="non-finite q_loss"):
        learner.check_finite()
