"""The fused ops (SPEC section 5) against an independent extended-precision oracle, their PyTorch references, and
PyTorch's op tooling (opcheck, gradcheck, torch.compile).

Accuracy rule: on every output (and gradient), the kernel's error against the oracle is at most twice the error of
the same-precision PyTorch reference, except where both errors are below one unit of roundoff (see FLOOR_ULPS).
The oracle is numpy in long double (x87 extended: 11 bits more than float64), written from the definitions in
SPEC 5.1 / 5.2, so it also judges float64 results. Errors are measured as max |x - truth| / (1 + |truth|):
relative for large values, absolute for small ones.
"""
from __future__ import annotations

import re
import types

import numpy as np
import pytest
import torch

import inspo
import inspo.ops as ops
import inspo.reference as ref

DTYPES = [torch.float32, torch.float64]
# Where the reference's error is below one unit of roundoff (a single value, an exactly representable result),
# twice it bounds nothing meaningful: a correctly rounded result may be half an ulp off, and 2 x 0 would demand
# bit equality. There, and only there, the kernel is held to one unit of roundoff instead.
FLOOR_ULPS = 1
EXTENDED = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps


def _need_oracle(dtype):
    if dtype == torch.float64 and not EXTENDED:
        pytest.skip("numpy long double is not more precise than float64 here: no oracle for float64")


def _ld(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.longdouble)


def _err(x: torch.Tensor, truth: np.ndarray) -> float:
    if truth.size == 0:
        return 0.0
    d = np.abs(_ld(x) - truth)
    return float(np.max(d / (1 + np.abs(truth))))


def assert_rule(name: str, kernel: torch.Tensor, reference: torch.Tensor, truth: np.ndarray) -> None:
    assert kernel.shape == reference.shape == truth.shape, (name, kernel.shape, reference.shape, truth.shape)
    assert kernel.dtype == reference.dtype, (name, kernel.dtype, reference.dtype)
    assert torch.isfinite(kernel).all(), f"{name}: kernel output is not finite"
    ek, er = _err(kernel, truth), _err(reference, truth)
    floor = FLOOR_ULPS * torch.finfo(kernel.dtype).eps
    assert ek <= 2 * er or max(ek, er) <= floor, f"{name}: kernel error {ek:.3g} > 2 x reference error {er:.3g}"


# --------------------------------------------------------------------------------------------------- oracles
def truth_weights(q, v, logp_pi, logp_mu, mask, agent, tau, beta, rho_max, z_max):
    """SPEC 5.1 literally, in long double: rho_i = min(exp(sum_{j != i, alive} lpi_j - lmu_j), rho_max)."""
    n, b = logp_pi.shape
    alive = np.ones((n, b), bool) if mask is None else mask.numpy()
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
    """SPEC 5.2 in long double: log-probability, entropy and (optionally) the gradient of
    sum(g_logp * logp + g_ent * entropy) with respect to the logits."""
    a = logits.shape[-1]
    lead = logits.shape[:-1]
    av = avail.numpy().reshape(-1, a)
    act = actions.numpy().reshape(-1)
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


# ---------------------------------------------------------------------------------------------------- inputs
def weights_inputs(n, b, q_per_agent, v_per_agent, masked, dtype, seed=0):
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
    return q, v, lpi, lmu, mask


# tau, beta, rho_max, z_max: both clamps are active for some entries and inactive for others.
W_SCALARS = (0.5, 0.3, 4.0, 2.0)


def softmax_inputs(lead, a, dtype, seed=0, scale=3.0, garbage=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*lead, a, generator=g, dtype=dtype) * scale
    avail = torch.rand(*lead, a, generator=g) < 0.6
    actions = torch.randint(0, a, lead, generator=g)
    avail.scatter_(-1, actions[..., None], True)
    flat = avail.reshape(-1, a)
    if flat.shape[0] > 2 and a > 1:
        flat[1] = False  # a row with exactly one available action
        flat[1, actions.reshape(-1)[1]] = True
    if garbage:  # what an unavailable logit holds must never matter
        junk = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30], dtype=dtype)
        idx = torch.randint(0, 4, logits.shape, generator=g)
        logits = torch.where(avail, logits, junk[idx])
    return logits, avail, actions


# -------------------------------------------------------------------------------------- advantage weights
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("qv", [(False, False), (True, True), (False, True)], ids=["qB_vB", "qNB_vNB", "qB_vNB"])
@pytest.mark.parametrize("b", [1, 37, 1500])
@pytest.mark.parametrize("n", [1, 3, 32])
def test_weights_matches_reference(n, b, qv, masked, dtype):
    _need_oracle(dtype)
    q, v, lpi, lmu, mask = weights_inputs(n, b, *qv, masked, dtype)
    for agent in sorted({-1, 0, n - 1}):
        args = (q, v, lpi, lmu, mask, agent) + W_SCALARS
        truth = truth_weights(*args)
        for name, k, r, t in zip(("rho", "expadv"), ops.advantage_weights(*args), ref.advantage_weights(*args), truth):
            assert_rule(f"{name} agent={agent}", k, r, t)
        if mask is not None:
            dead = ~mask if agent == -1 else ~mask[agent]
            rho, expadv = ops.advantage_weights(*args)
            assert (rho[dead] == 0).all() and (expadv[dead] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weights_extreme_values_stay_finite(dtype):
    n, b = 4, 300
    q, v, lpi, lmu, mask = weights_inputs(n, b, True, True, True, dtype)
    lpi[:, ::3] = 1e4  # log ratios far past log(rho_max): rho clamps
    lpi[:, 1::3] = -1e4  # and far below: rho underflows to 0
    q[:, ::2] = 1e30  # advantage far past z_max
    q[:, 1::2] = -1e30  # expadv underflows to 0
    for agent in (-1, 0, n - 1):
        args = (q, v, lpi, lmu, mask, agent) + W_SCALARS
        truth = truth_weights(*args)
        for name, k, r, t in zip(("rho", "expadv"), ops.advantage_weights(*args), ref.advantage_weights(*args), truth):
            assert torch.isfinite(r).all(), f"reference {name} is not finite"
            assert_rule(f"{name} agent={agent}", k, r, t)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weights_ignore_garbage_of_dead_agents(dtype):
    # Dead agents' inputs may hold anything (a padded agent has no defined log-probability); the kernel's outputs
    # are bitwise those of clean inputs. (The reference propagates NaN from a dead agent's own q/v/logp_mu into
    # its expadv, as NaN * 0, so it is not held to this.)
    q, v, lpi, lmu, mask = weights_inputs(5, 333, True, True, True, dtype)
    dirty = [t.clone() for t in (q, v, lpi, lmu)]
    junk = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    for i, t in enumerate(dirty):
        t[~mask] = junk[(torch.arange(int((~mask).sum())) + i) % 3]
    for agent in (-1, 0, 4):
        clean = ops.advantage_weights(q, v, lpi, lmu, mask, agent, *W_SCALARS)
        messy = ops.advantage_weights(*dirty, mask, agent, *W_SCALARS)
        for c, m in zip(clean, messy):
            assert torch.equal(c, m)


def test_weights_noncontiguous_and_empty():
    q, v, lpi, lmu, mask = weights_inputs(3, 40, True, False, True, torch.float32)
    strided = [t.t().contiguous().t() for t in (q, lpi, lmu)]  # same values, column-major
    assert not strided[0].is_contiguous()
    for agent in (-1, 1):
        want = ops.advantage_weights(q, v, lpi, lmu, mask, agent, *W_SCALARS)
        got = ops.advantage_weights(strided[0], v, strided[1], strided[2], mask, agent, *W_SCALARS)
        assert all(torch.equal(w, g) for w, g in zip(want, got))
    e = torch.empty(3, 0)
    for agent, shape in ((-1, (3, 0)), (0, (0,))):
        out = ops.advantage_weights(e, e, e, e, None, agent, *W_SCALARS)
        assert all(o.shape == shape for o in out)


# ------------------------------------------------------------------------------------------ masked softmax
def _softmax_fwd_bwd(fn, logits, avail, actions, g_logp, g_ent):
    x = logits.clone().requires_grad_()
    logp, entropy = fn(x, avail, actions)
    grad, = torch.autograd.grad((logp, entropy), (x,), (g_logp, g_ent))
    return logp.detach(), entropy.detach(), grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("a", [1, 5, 16, 33])
@pytest.mark.parametrize("lead", [(1,), (300,), (1, 32), (37, 32), (3, 50, 4), (2, 3, 1)], ids=str)
def test_softmax_matches_reference(lead, a, dtype):
    _need_oracle(dtype)
    logits, avail, actions = softmax_inputs(lead, a, dtype)
    g = torch.Generator().manual_seed(1)
    g_logp, g_ent = torch.randn(lead, generator=g, dtype=dtype), torch.randn(lead, generator=g, dtype=dtype)
    truth = truth_softmax(logits, avail, actions, g_logp, g_ent)
    got = _softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    want = _softmax_fwd_bwd(ref.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    for name, k, r, t in zip(("logp", "entropy", "grad"), got, want, truth):
        assert_rule(name, k, r, t)
    assert (got[2][~avail] == 0).all(), "gradient on unavailable logits"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softmax_large_logits(dtype):
    _need_oracle(dtype)
    lead, a = (64, 8), 12
    logits, avail, actions = softmax_inputs(lead, a, dtype, scale=1.0)
    sign = torch.randint(0, 3, logits.shape, generator=torch.Generator().manual_seed(2)) - 1
    logits = torch.where(avail, logits + 1e4 * sign, logits)  # available logits spread over [-1e4, 1e4]
    g_logp, g_ent = torch.ones(lead, dtype=dtype), torch.full(lead, -0.5, dtype=dtype)
    truth = truth_softmax(logits, avail, actions, g_logp, g_ent)
    got = _softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    want = _softmax_fwd_bwd(ref.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    for name, k, r, t in zip(("logp", "entropy", "grad"), got, want, truth):
        assert torch.isfinite(r).all(), f"reference {name} is not finite"
        assert_rule(name, k, r, t)


@pytest.mark.parametrize("fn", [ops.masked_softmax_stats, ref.masked_softmax_stats], ids=["kernel", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_softmax_garbage_never_leaks(fn, dtype):
    # Forward and gradient are bitwise those of the same inputs with zeros in the unavailable entries.
    logits, avail, actions = softmax_inputs((40, 6), 9, dtype, garbage=True)
    clean = torch.where(avail, logits, torch.zeros((), dtype=dtype))
    g_logp, g_ent = torch.randn(40, 6, dtype=dtype), torch.randn(40, 6, dtype=dtype)
    dirty_out = _softmax_fwd_bwd(fn, logits, avail, actions, g_logp, g_ent)
    clean_out = _softmax_fwd_bwd(fn, clean, avail, actions, g_logp, g_ent)
    for d, c in zip(dirty_out, clean_out):
        assert torch.isfinite(d).all()
        assert torch.equal(d, c)
    assert (dirty_out[2][~avail] == 0).all()


def test_softmax_bitwise_independent_of_threads_and_position():
    # Large enough for the kernel to split the rows between two threads.
    logits, avail, actions = softmax_inputs((20000, 3), 7, torch.float32)
    g = torch.randn(20000, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g, g)
        torch.set_num_threads(2)
        two = _softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g, g)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    # The same rows at another offset land in other blocks and vector lanes.
    tail = _softmax_fwd_bwd(ops.masked_softmax_stats, logits[13:], avail[13:], actions[13:], g[13:], g[13:])
    assert all(torch.equal(x[13:], y) for x, y in zip(one, tail))


def test_weights_bitwise_independent_of_threads_and_position():
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


def test_softmax_noncontiguous_and_empty():
    logits, avail, actions = softmax_inputs((30, 4), 6, torch.float64)
    x = logits.transpose(0, 1).contiguous().transpose(0, 1)
    assert not x.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(ops.masked_softmax_stats(logits, avail, actions),
                                                 ops.masked_softmax_stats(x, avail, actions)))
    logp, entropy = ops.masked_softmax_stats(torch.empty(0, 5), torch.empty(0, 5, dtype=torch.bool),
                                             torch.empty(0, dtype=torch.long))
    assert logp.shape == entropy.shape == (0,)


# -------------------------------------------------------------------------------------- PyTorch op tooling
def test_opcheck_advantage_weights():
    for dtype, masked, agent in ((torch.float32, True, -1), (torch.float64, False, 2)):
        q, v, lpi, lmu, mask = weights_inputs(3, 20, False, True, masked, dtype)
        torch.library.opcheck(torch.ops.inspo.advantage_weights.default, (q, v, lpi, lmu, mask, agent) + W_SCALARS)


def test_opcheck_masked_softmax_stats():
    logits, avail, actions = softmax_inputs((5, 3), 4, torch.float64, garbage=False)
    torch.library.opcheck(torch.ops.inspo.masked_softmax_stats.default,
                          (logits.requires_grad_(), avail, actions))
    g = torch.randn(5, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.inspo.masked_softmax_stats_backward.default,
                          (g, g, logits.detach(), avail, actions))


def test_gradcheck_masked_softmax_stats():
    for lead, a in (((6,), 5), ((3, 2), 16), ((2, 1, 2), 1)):
        logits, avail, actions = softmax_inputs(lead, a, torch.float64, garbage=False)
        x = logits.requires_grad_()
        assert torch.autograd.gradcheck(lambda t: ops.masked_softmax_stats(t, avail, actions), (x,))
        assert torch.autograd.gradcheck(lambda t: ops.masked_softmax_stats(t, avail, actions)[1], (x,))


def test_compile_fullgraph_advantage_weights():
    q, v, lpi, lmu, mask = weights_inputs(4, 100, True, False, True, torch.float32)

    @torch.compile(fullgraph=True)
    def f(q, v, lpi, lmu, mask):
        return ops.advantage_weights(q, v, lpi, lmu, mask, -1, *W_SCALARS)

    for got, want in zip(f(q, v, lpi, lmu, mask), ops.advantage_weights(q, v, lpi, lmu, mask, -1, *W_SCALARS)):
        assert torch.equal(got, want)


def test_compile_fullgraph_masked_softmax_stats():
    logits, avail, actions = softmax_inputs((20, 3), 7, torch.float32)
    g_logp, g_ent = torch.randn(20, 3), torch.randn(20, 3)
    compiled = torch.compile(ops.masked_softmax_stats, fullgraph=True)
    got = _softmax_fwd_bwd(compiled, logits, avail, actions, g_logp, g_ent)
    want = _softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    for x, y in zip(got, want):
        assert torch.equal(x, y)


# ------------------------------------------------------------------------------------------------ bad input
SOFTMAX_FNS = {"kernel": ops.masked_softmax_stats, "reference": ref.masked_softmax_stats,
               "backward": lambda x, av, act: torch.ops.inspo.masked_softmax_stats_backward(
                   torch.ones(act.shape, dtype=x.dtype), torch.ones(act.shape, dtype=x.dtype), x, av, act)}


@pytest.mark.parametrize("which", list(SOFTMAX_FNS))
@pytest.mark.parametrize("case", ["no_action", "out_of_range_low", "out_of_range_high", "unavailable",
                                  "precedence"])
def test_softmax_bad_rows_named(which, case):
    logits, avail, actions = softmax_inputs((2, 300), 5, torch.float32, garbage=False)
    flat_av, flat_act = avail.view(-1, 5), actions.view(-1)  # row r of the message is row r of these views
    if case == "no_action":
        flat_av[317] = False
        msg = "row 317 has no available action"
    elif case == "out_of_range_low":
        flat_act[401] = -1
        msg = "row 401: action -1 is out of range [0, 5)"
    elif case == "out_of_range_high":
        flat_act[599] = 5
        msg = "row 599: action 5 is out of range [0, 5)"
    elif case == "unavailable":
        flat_av[42, flat_act[42]] = False
        flat_av[42, (flat_act[42] + 1) % 5] = True
        msg = f"row 42: action {int(flat_act[42])} is not available"
    else:  # several bad rows: the checks run in the reference's order, each reporting its first row
        flat_act[3] = 9
        flat_av[500] = False
        flat_av[300] = False
        msg = "row 300 has no available action"
    with pytest.raises(ValueError, match=re.escape(msg)):
        SOFTMAX_FNS[which](logits, avail, actions)


@pytest.mark.parametrize("which", list(SOFTMAX_FNS))
def test_softmax_bad_arguments(which):
    fn = SOFTMAX_FNS[which]
    logits, avail, actions = softmax_inputs((4, 3), 5, torch.float32, garbage=False)
    cases = [
        ((logits.long(), avail, actions), TypeError, r"logits must be .*float"),
        ((logits, avail.to(torch.uint8), actions), ValueError, r"avail must be a bool tensor"),
        ((logits, avail[:, :2], actions), ValueError, r"avail must be a bool tensor of the logits' shape"),
        ((logits, avail, actions.int()), ValueError, r"actions must be an int64 tensor"),
        ((logits, avail, actions[:, :2]), ValueError, r"actions must be an int64 tensor of shape"),
        ((logits[..., :0], avail[..., :0], actions), ValueError, r"logits must be \[\.\.\., A\] with A >= 1"),
    ]
    for args, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn(*args)


def test_softmax_device_mismatch():
    # The CPU kernel's own check (reached by dispatching to it directly) and the reference's.
    logits, avail, actions = softmax_inputs((4, 3), 5, torch.float32, garbage=False)
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    op = torch.ops.inspo.masked_softmax_stats.default
    with pytest.raises(ValueError, match="avail is on meta but logits is on cpu"):
        op.redispatch(cpu, logits, avail.to("meta"), actions)
    with pytest.raises(ValueError, match="actions is on meta but logits is on cpu"):
        op.redispatch(cpu, logits, avail, actions.to("meta"))
    with pytest.raises(ValueError, match="avail is on meta but logits is on cpu"):
        ref.masked_softmax_stats(logits, avail.to("meta"), actions)


def test_public_ops_reject_meta_mixed_with_cpu():
    # A meta tensor sends the whole call to the fake kernels, which must repeat the device check.
    logits, avail, actions = softmax_inputs((4, 3), 5, torch.float32, garbage=False)
    with pytest.raises(ValueError, match="avail is on meta but logits is on cpu"):
        ops.masked_softmax_stats(logits, avail.to("meta"), actions)
    q, v, lpi, lmu, mask = weights_inputs(3, 6, True, False, True, torch.float32)
    with pytest.raises(ValueError, match="mask is on meta but logp_pi is on cpu"):
        ops.advantage_weights(q, v, lpi, lmu, mask.to("meta"), 0, *W_SCALARS)


@pytest.mark.parametrize("which", ["kernel", "reference"])
def test_weights_bad_arguments(which):
    fn = ops.advantage_weights if which == "kernel" else ref.advantage_weights
    q, v, lpi, lmu, mask = weights_inputs(3, 6, True, False, True, torch.float32)
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


def test_weights_device_mismatch():
    q, v, lpi, lmu, mask = weights_inputs(3, 6, True, False, True, torch.float32)
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    op = torch.ops.inspo.advantage_weights.default
    with pytest.raises(ValueError, match="q is on meta but logp_pi is on cpu"):
        op.redispatch(cpu, q.to("meta"), v, lpi, lmu, mask, 0, *W_SCALARS)
    with pytest.raises(ValueError, match="mask is on meta but logp_pi is on cpu"):
        op.redispatch(cpu, q, v, lpi, lmu, mask.to("meta"), 0, *W_SCALARS)
    with pytest.raises(ValueError, match="q is on meta but logp_pi is on cpu"):
        ref.advantage_weights(q.to("meta"), v, lpi, lmu, mask, 0, *W_SCALARS)


def test_cuda_tensor_on_a_cpu_only_build_names_the_rebuild() -> None:
    if inspo.built_with_cuda():
        pytest.skip("this build has its CUDA kernels")
    with pytest.raises(RuntimeError, match="built without its CUDA kernels.*INSPO_CUDA=ON"):
        ops._check_cuda_build(types.SimpleNamespace(is_cuda=True))
