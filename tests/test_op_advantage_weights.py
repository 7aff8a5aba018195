"""Op 1, ``advantage_weights`` (docs/design.md 5.1), on every device: against the extended-precision oracle and the
reference
twin (the accuracy rule of ``_ops_helpers``), PyTorch's op tooling, and bad input. Forward only: it takes no
gradient."""
from __future__ import annotations

import pytest
import torch

import inspo.ops as ops
import inspo.reference as ref
from _ops_helpers import (
    DEVICES,
    DTYPES,
    W_SCALARS,
    assert_accurate,
    assert_same_as_cpu,
    cpu_kernel_or_public,
    cuda_only,
    need_oracle,
    truth_weights,
    weights_inputs,
)

# (N, B): every N with every B, and shapes that straddle the CUDA kernel's 256-column blocks.
SHAPES = [(n, b) for n in (1, 3, 32) for b in (1, 37, 1500)] + [(2, 7), (5, 4099)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("qv", [(False, False), (True, True), (False, True)], ids=["qB_vB", "qNB_vNB", "qB_vNB"])
@pytest.mark.parametrize("n, b", SHAPES, ids=[f"N{n}-B{b}" for n, b in SHAPES])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference(device, n, b, qv, masked, dtype):
    need_oracle(dtype)
    q, v, lpi, lmu, mask = weights_inputs(n, b, *qv, masked, dtype, device)
    for agent in sorted({-1, 0, n - 1}):
        args = (q, v, lpi, lmu, mask, agent) + W_SCALARS
        truth = truth_weights(*args)
        got = ops.advantage_weights(*args)
        for name, k, r, t in zip(("rho", "expadv"), got, ref.advantage_weights(*args), truth):
            assert_accurate(f"{name} agent={agent}", k, r, t)
        if mask is not None:
            dead = ~mask if agent == -1 else ~mask[agent]
            assert (got[0][dead] == 0).all() and (got[1][dead] == 0).all()


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n, b", [(1, 1), (2, 7), (3, 1000), (5, 4099)])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cuda_matches_cpu_kernel(dtype, n, b, masked):
    q, v, lpi, lmu, mask = weights_inputs(n, b, True, True, masked, dtype, seed=1)
    if masked:  # dead agents' entries may hold anything; none of it may reach the outputs
        lpi, lmu = lpi.masked_fill(~mask, float("nan")), lmu.masked_fill(~mask, float("inf"))
    inputs = (q, v, lpi, lmu, mask)
    for agent in sorted({-1, 0, n - 1}):
        out_cpu = ops.advantage_weights(*inputs, agent, *W_SCALARS)
        out_cuda = ops.advantage_weights(*[None if t is None else t.cuda() for t in inputs], agent, *W_SCALARS)
        for o_cuda, o_cpu in zip(out_cuda, out_cpu):
            assert_same_as_cpu(o_cuda, o_cpu)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_extreme_values_stay_finite(device, dtype):
    n, b = 4, 300
    q, v, lpi, lmu, mask = weights_inputs(n, b, True, True, True, dtype, device)
    lpi[:, ::3] = 1e4  # log ratios far past log(rho_max): rho clamps
    lpi[:, 1::3] = -1e4  # and far below: rho underflows to 0
    q[:, ::2] = 1e30  # advantage far past z_max
    q[:, 1::2] = -1e30  # expadv underflows to 0
    for agent in (-1, 0, n - 1):
        args = (q, v, lpi, lmu, mask, agent) + W_SCALARS
        truth = truth_weights(*args)
        for name, k, r, t in zip(("rho", "expadv"), ops.advantage_weights(*args), ref.advantage_weights(*args), truth):
            assert torch.isfinite(r).all(), f"reference {name} is not finite"
            assert_accurate(f"{name} agent={agent}", k, r, t)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_ignore_garbage_of_dead_agents(device, dtype):
    # Dead agents' inputs may hold anything (a padded agent has no defined log-probability); the kernel's outputs
    # are bitwise those of clean inputs. (The reference propagates NaN from a dead agent's own q/v/logp_mu into
    # its expadv, as NaN * 0, so it is not held to this.)
    q, v, lpi, lmu, mask = weights_inputs(5, 333, True, True, True, dtype, device)
    dirty = [t.clone() for t in (q, v, lpi, lmu)]
    junk = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype, device=device)
    for i, t in enumerate(dirty):
        t[~mask] = junk[(torch.arange(int((~mask).sum()), device=device) + i) % 3]
    for agent in (-1, 0, 4):
        clean = ops.advantage_weights(q, v, lpi, lmu, mask, agent, *W_SCALARS)
        messy = ops.advantage_weights(*dirty, mask, agent, *W_SCALARS)
        for c, m in zip(clean, messy):
            assert torch.equal(c, m)


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_and_empty(device):
    q, v, lpi, lmu, mask = weights_inputs(3, 40, True, True, True, torch.float32, device)
    strided = [t.t().contiguous().t() for t in (q, v, lpi, lmu, mask)]  # same values, column-major
    assert not any(t.is_contiguous() for t in strided)
    for agent in (-1, 1):
        want = ops.advantage_weights(q, v, lpi, lmu, mask, agent, *W_SCALARS)
        got = ops.advantage_weights(*strided, agent, *W_SCALARS)
        assert all(torch.equal(w, g) for w, g in zip(want, got))
    e = torch.empty(3, 0, device=device)
    for agent, shape in ((-1, (3, 0)), (0, (0,)), (2, (0,))):
        out = ops.advantage_weights(e, e, e, e, None, agent, *W_SCALARS)
        assert all(o.shape == shape and o.device == e.device for o in out)


def test_bitwise_independent_of_threads_and_position():
    q, v, lpi, lmu, mask = weights_inputs(4, 100000, True, True, True, torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.advantage_weights(q, v, lpi, lmu, mask, -1, *W_SCALARS)
        torch.set_num_threads(2)
        two = ops.advantage_weights(q, v, lpi, lmu, mask, -1, *W_SCALARS)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    tail = ops.advantage_weights(q[:, 5:], v[:, 5:], lpi[:, 5:], lmu[:, 5:], mask[:, 5:], -1, *W_SCALARS)
    assert all(torch.equal(x[:, 5:], y) for x, y in zip(one, tail))


# ------------------------------------------------------------------------------------------ PyTorch op tooling
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for dtype, per_agent, masked, agent in ((torch.float32, False, True, -1), (torch.float64, False, False, 2),
                                            (torch.float64, True, True, -1)):
        q, v, lpi, lmu, mask = weights_inputs(3, 20, per_agent, True, masked, dtype, device)
        torch.library.opcheck(torch.ops.inspo.advantage_weights.default, (q, v, lpi, lmu, mask, agent) + W_SCALARS)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device):
    q, v, lpi, lmu, mask = weights_inputs(4, 100, True, False, True, torch.float32, device)

    @torch.compile(fullgraph=True)
    def f(q, v, lpi, lmu, mask):
        return ops.advantage_weights(q, v, lpi, lmu, mask, -1, *W_SCALARS)

    for got, want in zip(f(q, v, lpi, lmu, mask), ops.advantage_weights(q, v, lpi, lmu, mask, -1, *W_SCALARS)):
        assert torch.equal(got, want)


# --------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("which", ["kernel", "reference"])
@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments(device, which):
    fn = ops.advantage_weights if which == "kernel" else ref.advantage_weights
    q, v, lpi, lmu, mask = weights_inputs(3, 6, True, False, True, torch.float32, device)
    s = W_SCALARS
    cases = [
        ((q, v, lpi[0], lmu, mask, 0) + s, ValueError, r"logp_pi must be \[N, B\]"),
        ((q, v, lpi, lmu[:, :5], mask, 0) + s, ValueError, r"logp_mu must have the shape of logp_pi"),
        ((q[:, :5], v, lpi, lmu, mask, 0) + s, ValueError, r"q must be \[B\]"),
        ((q, v[None, :], lpi, lmu, mask, 0) + s, ValueError, r"v must be \[B\]"),
        ((q.double(), v, lpi, lmu, mask, 0) + s, TypeError, r"q has dtype .*but logp_pi has"),
        ((q.long(), v, lpi, lmu, mask, 0) + s, TypeError, r"q must be .*float"),
        ((q, v, lpi, lmu, mask.float(), 0) + s, ValueError, r"mask must be a bool tensor"),
        ((q, v, lpi, lmu, mask[:2], 0) + s, ValueError, r"mask must be a bool tensor of shape"),
        ((q, v, lpi, lmu, mask, 3) + s, ValueError, r"agent must be in \[-1, 3\) for N=3 agents, got 3"),
        ((q, v, lpi, lmu, mask, -2) + s, ValueError, r"agent must be in \[-1, 3\) for N=3 agents, got -2"),
        ((q, v, lpi, lmu, mask, 0, 0.0, 0.3, 4.0, 2.0), ValueError, r"tau must be > 0, got 0"),
        ((q, v, lpi, lmu, mask, 0, 0.5, 0.3, -1.0, 2.0), ValueError, r"rho_max must be > 0, got -1"),
    ]
    for args, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn(*args)


@pytest.mark.parametrize("device", DEVICES)
def test_device_mismatch(device):
    """The kernel's own device check and the reference's (see `cpu_kernel_or_public`)."""
    q, v, lpi, lmu, mask = weights_inputs(3, 6, True, False, True, torch.float32, device)
    kernel, other = cpu_kernel_or_public("advantage_weights", ops.advantage_weights, device)
    with pytest.raises(ValueError, match=f"q is on {other} but logp_pi is on {device}"):
        kernel(q.to(other), v, lpi, lmu, mask, 0, *W_SCALARS)
    with pytest.raises(ValueError, match=f"mask is on {other} but logp_pi is on {device}"):
        kernel(q, v, lpi, lmu, mask.to(other), 0, *W_SCALARS)
    with pytest.raises(ValueError, match=f"q is on {other} but logp_pi is on {device}"):
        ref.advantage_weights(q.to(other), v, lpi, lmu, mask, 0, *W_SCALARS)


def test_public_op_rejects_meta_mixed_with_cpu():
    # A meta tensor sends the whole call to the fake kernel, which must repeat the device check.
    q, v, lpi, lmu, mask = weights_inputs(3, 6, True, False, True, torch.float32)
    with pytest.raises(ValueError, match="mask is on meta but logp_pi is on cpu"):
        ops.advantage_weights(q, v, lpi, lmu, mask.to("meta"), 0, *W_SCALARS)
