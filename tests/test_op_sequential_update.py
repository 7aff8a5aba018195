"""Op 3, ``sequential_update`` (docs/design.md 5.3), on every device: the whole sequential pass in one call equals its
pure-PyTorch twin :func:`inspo.reference.sequential_update` (same arguments, same returns, same in-place updates,
same draws from the generator) for every variant of the pass, one call at a time and over whole training
iterations; PyTorch's op tooling; bad input. The op takes no gradient: what it updates in place is its result."""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from _ops_helpers import (
    DEVICES,
    DOUBLE,
    FLOAT,
    VARIANTS,
    N,
    assert_learners_close,
    clone_args,
    make_batch,
    make_learner,
    pass_args,
    raw_args,
)
from inspo import ops, reference

# The learners are driven directly, not through inspo.train: one intra-op thread, as there.
pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = [torch.float64, torch.float32]
SCALARS = ("alpha", "beta", "rho_max", "z_max", "lr_policy", "lr_critic", "adam_betas", "adam_eps",
           "local_critic_steps", "sequential", "use_rho", "resample")


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}


def _flat(args: list) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, list) else [a]) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference(device: str, variant: dict[str, Any], dtype: torch.dtype) -> None:
    """One call of the op and one of its twin on copies of the same arguments: the same statistics, the same
    in-place updates (every parameter, Adam moment, step count and the refreshed log-prob stack) and the same
    generator state afterwards."""
    learner = make_learner(dtype, device=device, **variant)
    args, kw = pass_args(learner, make_batch(0, learner.pi, dtype, device))
    got_args, want_args = clone_args(args), clone_args(args)
    got_kw, want_kw = dict(kw), dict(kw, generator=torch.Generator(device).set_state(kw["generator"].get_state()))
    got = ops.sequential_update(*got_args, **got_kw)
    want = reference.sequential_update(*want_args, **want_kw)
    torch.testing.assert_close(got, want, **_tol(dtype))
    for k, (g, w) in enumerate(zip(_flat(got_args), _flat(want_args), strict=True)):
        torch.testing.assert_close(g, w, msg=f"argument tensor {k}", **_tol(dtype))
    assert torch.equal(got_kw["generator"].get_state(), want_kw["generator"].get_state())
    # Equal because both moved, not because neither did: every agent's policy left its starting point.
    for before, after in zip(args[0], got_args[0]):
        assert all((after[i] - before[i]).abs().max() > 1e-5 for i in range(N))
    assert got_args[3].tolist() == [1.0] * N  # one policy step per agent


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
@pytest.mark.parametrize("device", DEVICES)
def test_training_with_the_op_equals_training_with_the_twin(device: str, variant: dict[str, Any],
                                                            dtype: torch.dtype) -> None:
    """Several whole iterations (critic step, then the pass) of a learner on the ops (``backend="fused"``) and of one
    on their twins (``backend="torch"``), from the same networks and generator: the same parameters, optimiser
    states and statistics."""
    fused = make_learner(dtype, device=device, **variant)
    twin = make_learner(dtype, backend="torch", device=device, **variant)
    assert fused.k is ops and twin.k is reference and fused.one_call_pass and twin.one_call_pass
    start = copy.deepcopy(fused.pi.state_dict())
    mu = copy.deepcopy(fused.pi)
    for it in range(4):
        b = make_batch(it, mu, dtype, device)
        stats_f, stats_t = fused.update(b), twin.update(b)
        assert stats_f.keys() == stats_t.keys()
        for key in stats_f:
            torch.testing.assert_close(stats_f[key], stats_t[key], msg=key)
    assert_learners_close(fused, twin, **_tol(dtype))
    for name, p in fused.pi.state_dict().items():
        assert all((p[i] - start[name][i]).abs().max() > 1e-4 for i in range(N)), name
    assert fused.pi_opt.state()[2].tolist() == [4.0] * N  # one step per agent and iteration


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device: str) -> None:
    learner = make_learner(torch.float64, device=device)
    args, kw = pass_args(learner, make_batch(0, learner.pi, torch.float64, device))
    # Schema (the declared mutations are the only ones) and fake kernel; no autograd: the op takes no gradient.
    torch.library.opcheck(torch.ops.inspo.sequential_update.default, raw_args(args, kw, SCALARS) + (None,),
                          test_utils=("test_schema", "test_faketensor"))


BAD = [
    ("order-repeats", RuntimeError, r"order must be a permutation of 0\.\.2"),  # checked on the device
    ("order-float", ValueError, rf"order must be an int64 tensor \[N\]=\[3\], got {FLOAT}"),
    ("stack-short", ValueError, r"pi\[0\] must be \[N, out, in\] with N=3, got shape \[2, 16, 6\]"),
    ("moments-missing", ValueError, r"local_q: expected one exp_avg and one exp_avg_sq per parameter \(6\), got 5"),
    ("dtype", TypeError, rf"pi\[1\] has dtype {FLOAT} but the data have {DOUBLE}"),
    ("steps", ValueError, r"pi: steps must be float32 \[N\]=\[3\]"),
    ("qbar", ValueError, r"qbar must be \[B\]=\[48\], got shape \[47\]"),
    ("local-steps", ValueError, r"local_critic_steps must be >= 1, got 0"),
    ("qbar-dtype", TypeError, rf"qbar has dtype {FLOAT} but obs has {DOUBLE}; all must match"),
]


@pytest.mark.parametrize("fn", [ops.sequential_update, reference.sequential_update], ids=["kernel", "reference"])
@pytest.mark.parametrize("case, error, message", BAD, ids=[case for case, *_ in BAD])
@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments_name_the_value(device: str, case: str, error: type, message: str, fn) -> None:
    if case == "order-repeats" and device == "cuda":
        # On CUDA the permutation check is a device-side assert (the host never waits for it), which leaves the
        # process's CUDA context unusable: it cannot be caught as an exception in this process.
        pytest.skip("a device-side assert on CUDA; the check is tested on the CPU")
    learner = make_learner(torch.float64, device=device)
    args, kw = pass_args(learner, make_batch(0, learner.pi, torch.float64, device))
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
        fn(*args, **kw)
    assert all(torch.equal(p, q) for p, q in zip(learner.pi_opt.params, before))  # checked before any update


# Infinite observations only with the op: the reference's ratio (a sum over all agents less the agent's own term)
# turns the agent's own NaN log-probability into NaN ratios, which fail the resampling before any loss.
@pytest.mark.parametrize("bad, name, backend", [("qbar", "local_q_loss", "fused"), ("qbar", "local_q_loss", "torch"),
                                                ("obs", "policy_loss", "fused")])
def test_non_finite_loss_is_found_by_the_deferred_check(bad: str, name: str, backend: str) -> None:
    """The pass reads nothing back: a non-finite loss shows in its statistics, and the learner's deferred check
    (the trainer's, every ``check_every`` iterations) names it. Weighted rows: resampling by the NaN ratios that
    follow would raise before the pass returns (the trainer then runs the check, see tests/test_sync_free.py)."""
    learner = make_learner(torch.float64, backend=backend, order="fixed", weighting="weighted")
    b = make_batch(0, learner.pi, torch.float64)
    qbar = learner.q_target(b.state, b.actions).detach()
    if bad == "qbar":
        qbar.fill_(math.nan)
    else:
        b.obs[:, 0] = math.inf  # agent 0, the first of the fixed order: its logits are not finite
    stats = learner.policy_pass(b, qbar)
    assert not torch.isfinite(stats[name])
    with pytest.raises(FloatingPointError, match=f"non-finite .*{name}"):
        learner.check_finite()
