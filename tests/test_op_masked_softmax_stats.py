"""Op 2, ``masked_softmax_stats`` (docs/design.md 5.2), on every device: forward and backward against the
extended-precision
oracle and the reference twin (the accuracy rule of ``_ops_helpers``), PyTorch's op tooling (opcheck, gradcheck,
torch.compile), CUDA graphs, and bad input."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch

import inspo.ops as ops
import inspo.reference as ref
from _ops_helpers import (
    DEVICES,
    DTYPES,
    assert_accurate,
    assert_same_as_cpu,
    cpu_kernel_or_public,
    cuda_only,
    need_oracle,
    softmax_fwd_bwd,
    softmax_inputs,
    truth_softmax,
)

# (leading shape, A): every leading shape with every A; then, for the CUDA kernel's layouts (A <= 32: a thread per
# row, A > 32: a warp per row), row counts that straddle its 128-row tiles and wide rows.
CASES = ([(lead, a) for lead in [(1,), (300,), (1, 32), (37, 32), (3, 50, 4), (2, 3, 1)] for a in (1, 5, 16, 33)]
         + [((7,), 1), ((7,), 5), ((3, 129), 5), ((300,), 32), ((257,), 33), ((2, 3, 50), 100), ((4,), 1000)])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead, a", CASES, ids=[f"{lead}-A{a}" for lead, a in CASES])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference(device, lead, a, dtype):
    need_oracle(dtype)
    logits, avail, actions = softmax_inputs(lead, a, dtype, device)
    g = torch.Generator().manual_seed(1)
    g_logp = torch.randn(lead, generator=g, dtype=dtype).to(device)
    g_ent = torch.randn(lead, generator=g, dtype=dtype).to(device)
    truth = truth_softmax(logits, avail, actions, g_logp, g_ent)
    got = softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    want = softmax_fwd_bwd(ref.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    for name, k, r, t in zip(("logp", "entropy", "grad"), got, want, truth):
        assert_accurate(name, k, r, t)
    assert (got[2][~avail] == 0).all(), "gradient on unavailable logits"


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead, a", CASES[-7:], ids=[f"{lead}-A{a}" for lead, a in CASES[-7:]])
def test_cuda_matches_cpu_kernel(lead, a, dtype):
    logits, avail, actions = softmax_inputs(lead, a, dtype, seed=3)
    grad_logp, grad_ent = torch.randn(lead, dtype=dtype), torch.randn(lead, dtype=dtype)
    fwd_cpu = torch.ops.inspo.masked_softmax_stats(logits, avail, actions)
    bwd_cpu = torch.ops.inspo.masked_softmax_stats_backward(grad_logp, grad_ent, logits, avail, actions)
    cuda = [t.cuda() for t in (grad_logp, grad_ent, logits, avail, actions)]
    fwd_cuda = torch.ops.inspo.masked_softmax_stats(*cuda[2:])
    bwd_cuda = torch.ops.inspo.masked_softmax_stats_backward(*cuda)
    for o_cuda, o_cpu in zip((*fwd_cuda, bwd_cuda), (*fwd_cpu, bwd_cpu)):
        assert_same_as_cpu(o_cuda, o_cpu)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_large_logits(device, dtype):
    need_oracle(dtype)
    lead, a = (64, 8), 12
    logits, avail, actions = softmax_inputs(lead, a, dtype, device, scale=1.0)
    sign = torch.randint(0, 3, logits.shape, generator=torch.Generator().manual_seed(2)).to(device) - 1
    logits = torch.where(avail, logits + 1e4 * sign, logits)  # available logits spread over [-1e4, 1e4]
    g_logp = torch.ones(lead, dtype=dtype, device=device)
    g_ent = torch.full(lead, -0.5, dtype=dtype, device=device)
    truth = truth_softmax(logits, avail, actions, g_logp, g_ent)
    got = softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    want = softmax_fwd_bwd(ref.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    for name, k, r, t in zip(("logp", "entropy", "grad"), got, want, truth):
        assert torch.isfinite(r).all(), f"reference {name} is not finite"
        assert_accurate(name, k, r, t)


@pytest.mark.parametrize("fn", [ops.masked_softmax_stats, ref.masked_softmax_stats], ids=["kernel", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_garbage_never_leaks(device, fn, dtype):
    # Forward and gradient are bitwise those of the same inputs with zeros in the unavailable entries.
    logits, avail, actions = softmax_inputs((40, 6), 9, dtype, device, garbage=True)
    clean = torch.where(avail, logits, torch.zeros((), dtype=dtype, device=device))
    g_logp = torch.randn(40, 6, dtype=dtype).to(device)
    g_ent = torch.randn(40, 6, dtype=dtype).to(device)
    dirty_out = softmax_fwd_bwd(fn, logits, avail, actions, g_logp, g_ent)
    clean_out = softmax_fwd_bwd(fn, clean, avail, actions, g_logp, g_ent)
    for d, c in zip(dirty_out, clean_out):
        assert torch.isfinite(d).all()
        assert torch.equal(d, c)
    assert (dirty_out[2][~avail] == 0).all()


@pytest.mark.parametrize("a", [5, 40])
@pytest.mark.parametrize("device", DEVICES)
def test_available_minus_inf_logit_is_finite(device, a):
    """An available logit of -inf has probability 0; it must not turn the entropy or the gradient into NaN (the
    reference does: 0 * -inf). On CUDA the results are the CPU kernel's."""
    logits, avail, actions = softmax_inputs((64,), a, torch.float32, device, seed=4)
    rows = torch.arange(64, device=device)
    other = (actions + 1) % a
    avail[rows, other] = True
    logits[rows, other] = float("-inf")
    logits[rows, actions] = 0.0
    ones = torch.ones(64, device=device)
    out = softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, ones, ones)
    assert all(torch.isfinite(o).all() for o in out)
    if device == "cuda":
        cpu = softmax_fwd_bwd(ops.masked_softmax_stats, logits.cpu(), avail.cpu(), actions.cpu(), ones.cpu(),
                              ones.cpu())
        for o_cuda, o_cpu in zip(out, cpu):
            assert_same_as_cpu(o_cuda, o_cpu)


def test_bitwise_independent_of_threads_and_position():
    # Large enough for the kernel to split the rows between two threads.
    logits, avail, actions = softmax_inputs((20000, 3), 7, torch.float32)
    g = torch.randn(20000, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g, g)
        torch.set_num_threads(2)
        two = softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g, g)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    # The same rows at another offset land in other blocks and vector lanes.
    tail = softmax_fwd_bwd(ops.masked_softmax_stats, logits[13:], avail[13:], actions[13:], g[13:], g[13:])
    assert all(torch.equal(x[13:], y) for x, y in zip(one, tail))


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_and_empty(device):
    logits, avail, actions = softmax_inputs((30, 4), 6, torch.float64, device)
    x = logits.transpose(0, 1).contiguous().transpose(0, 1)
    assert not x.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(ops.masked_softmax_stats(logits, avail, actions),
                                                 ops.masked_softmax_stats(x, avail, actions)))
    # Every input strided: the transposes of contiguous tensors.
    got = ops.masked_softmax_stats(logits.transpose(0, 1), avail.transpose(0, 1), actions.t())
    want = ops.masked_softmax_stats(logits.transpose(0, 1).contiguous(), avail.transpose(0, 1).contiguous(),
                                    actions.t().contiguous())
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    logp, entropy = ops.masked_softmax_stats(torch.empty(0, 5, device=device),
                                             torch.empty(0, 5, dtype=torch.bool, device=device),
                                             torch.empty(0, dtype=torch.long, device=device))
    assert logp.shape == entropy.shape == (0,) and logp.device == logits.device


# ------------------------------------------------------------------------------------------ PyTorch op tooling
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    logits, avail, actions = softmax_inputs((5, 3), 4, torch.float64, device, garbage=False)
    torch.library.opcheck(torch.ops.inspo.masked_softmax_stats.default,
                          (logits.clone().requires_grad_(), avail, actions))
    g = torch.randn(5, 3, dtype=torch.float64).to(device)
    torch.library.opcheck(torch.ops.inspo.masked_softmax_stats_backward.default, (g, g, logits, avail, actions))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    for lead, a in (((6,), 5), ((3, 2), 16), ((2, 1, 2), 1), ((5, 3), 6)):
        logits, avail, actions = softmax_inputs(lead, a, torch.float64, device, garbage=False)
        x = logits.requires_grad_()
        assert torch.autograd.gradcheck(lambda t: ops.masked_softmax_stats(t, avail, actions), (x,))
        assert torch.autograd.gradcheck(lambda t: ops.masked_softmax_stats(t, avail, actions)[1], (x,))


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device, backend):
    logits, avail, actions = softmax_inputs((20, 3), 7, torch.float32, device)
    g_logp, g_ent = torch.randn(20, 3).to(device), torch.randn(20, 3).to(device)
    compiled = torch.compile(ops.masked_softmax_stats, fullgraph=True, backend=backend)
    got = softmax_fwd_bwd(compiled, logits, avail, actions, g_logp, g_ent)
    want = softmax_fwd_bwd(ops.masked_softmax_stats, logits, avail, actions, g_logp, g_ent)
    for x, y in zip(got, want):
        assert torch.equal(x, y)


@cuda_only
def test_in_cuda_graph():
    """Under stream capture nothing can be read back, so the ops skip the bad-row read; a captured graph replays the
    same results as eager calls."""
    logits, avail, actions = softmax_inputs((500,), 12, torch.float32, "cuda", seed=7)
    grad_logp, grad_ent = torch.randn(500, device="cuda"), torch.randn(500, device="cuda")
    torch.ops.inspo.masked_softmax_stats(logits, avail, actions)  # warm-up: load the kernels outside the capture
    torch.ops.inspo.masked_softmax_stats_backward(grad_logp, grad_ent, logits, avail, actions)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logp, ent = torch.ops.inspo.masked_softmax_stats(logits, avail, actions)
        grad = torch.ops.inspo.masked_softmax_stats_backward(grad_logp, grad_ent, logits, avail, actions)
    logits.copy_(softmax_inputs((500,), 12, torch.float32, "cuda", seed=7)[0] * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    want_logp, want_ent = torch.ops.inspo.masked_softmax_stats(logits, avail, actions)
    want_grad = torch.ops.inspo.masked_softmax_stats_backward(grad_logp, grad_ent, logits, avail, actions)
    for got, want in zip((logp, ent, grad), (want_logp, want_ent, want_grad)):
        assert torch.equal(got, want)


@cuda_only
def test_bad_row_in_cuda_graph_replay_is_a_device_assert():
    """A bad row that reaches a captured graph cannot raise a Python error; it stops the process with a device-side
    assert naming the row (in a subprocess: the assert leaves the CUDA context unusable)."""
    script = textwrap.dedent("""
        import torch, inspo.ops
        logits = torch.zeros(8, 4, device="cuda")
        avail = torch.ones(8, 4, dtype=torch.bool, device="cuda")
        actions = torch.zeros(8, dtype=torch.long, device="cuda")
        torch.ops.inspo.masked_softmax_stats(logits, avail, actions)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            torch.ops.inspo.masked_softmax_stats(logits, avail, actions)
        avail[3, 0] = False
        graph.replay()
        torch.cuda.synchronize()
        print("NO ERROR")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "NO ERROR" not in output, output
    assert "row 3: action 0 is not available" in output or "device-side assert" in output, output


# --------------------------------------------------------------------------------------------------- bad input
def _backward(x, av, act):
    ones = torch.ones(act.shape, dtype=x.dtype, device=x.device)
    return torch.ops.inspo.masked_softmax_stats_backward(ones, ones, x, av, act)


SOFTMAX_FNS = {"kernel": ops.masked_softmax_stats, "reference": ref.masked_softmax_stats, "backward": _backward}


@pytest.mark.parametrize("which", list(SOFTMAX_FNS))
@pytest.mark.parametrize("case", ["no_action", "out_of_range_low", "out_of_range_high", "unavailable",
                                  "precedence"])
@pytest.mark.parametrize("device", DEVICES)
def test_bad_rows_named(device, which, case):
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
        SOFTMAX_FNS[which](logits.to(device), avail.to(device), actions.to(device))


@pytest.mark.parametrize("a", [6, 48], ids=["thread_per_row", "warp_per_row"])
@pytest.mark.parametrize("op", ["forward", "backward"])
@pytest.mark.parametrize(
    "bad",
    [
        # (row -> corruption); the expected error is the reference's: the first row of the first kind, in the order
        # no available action, action out of range, action not available.
        {3: "unavailable"},
        {200: "out_of_range_high"},
        {5: "out_of_range_negative"},
        {150: "no_action"},
        {2: "unavailable", 9: "out_of_range_high", 250: "no_action"},
        {40: "unavailable", 7: "out_of_range_high"},
        {0: "unavailable", 255: "unavailable"},
    ],
    ids=lambda d: "+".join(f"{k}:{v}" for k, v in d.items()),
)
@pytest.mark.parametrize("device", DEVICES)
def test_bad_rows_raise_like_reference(device, a, op, bad):
    logits, avail, actions = softmax_inputs((256,), a, torch.float32, seed=5, garbage=False)
    for row, kind in bad.items():
        if kind == "unavailable":
            avail[row, actions[row]] = False
            if not avail[row].any():
                avail[row, (actions[row] + 1) % a] = True
        elif kind == "out_of_range_high":
            actions[row] = a
        elif kind == "out_of_range_negative":
            actions[row] = -1
        else:
            avail[row] = False
    with pytest.raises(ValueError) as want:
        ref.check_softmax_inputs(logits, avail, actions)
    message = str(want.value)
    assert message.startswith("row ")
    x, av, act = logits.to(device), avail.to(device), actions.to(device)
    with pytest.raises(ValueError, match=re.escape(message)):
        if op == "forward":
            torch.ops.inspo.masked_softmax_stats(x, av, act)
        else:
            _backward(x, av, act)
    if device == "cuda":  # the device is still usable after the error (no device-side assert outside capture)
        torch.cuda.synchronize()


@pytest.mark.parametrize("which", list(SOFTMAX_FNS))
@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments(device, which):
    fn = SOFTMAX_FNS[which]
    logits, avail, actions = softmax_inputs((4, 3), 5, torch.float32, device, garbage=False)
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


@pytest.mark.parametrize("device", DEVICES)
def test_bad_incoming_gradients(device):
    logits, avail, actions = softmax_inputs((4, 3), 5, torch.float32, device, garbage=False)
    good = torch.ones(4, 3, device=device)
    op = torch.ops.inspo.masked_softmax_stats_backward
    with pytest.raises(ValueError, match=r"grad_logp must match actions' shape \[4, 3\] and logits' dtype Float, "
                                         r"got Float \[4, 2\]"):
        op(good[:, :2], good, logits, avail, actions)
    with pytest.raises(ValueError, match=r"grad_entropy must match actions' shape \[4, 3\] and logits' dtype Float, "
                                         r"got Double \[4, 3\]"):
        op(good, good.double(), logits, avail, actions)


@pytest.mark.parametrize("device", DEVICES)
def test_device_mismatch(device):
    """The kernel's own device check and the reference's (see `cpu_kernel_or_public`)."""
    logits, avail, actions = softmax_inputs((4, 3), 5, torch.float32, device, garbage=False)
    kernel, other = cpu_kernel_or_public("masked_softmax_stats", ops.masked_softmax_stats, device)
    with pytest.raises(ValueError, match=f"avail is on {other} but logits is on {device}"):
        kernel(logits, avail.to(other), actions)
    with pytest.raises(ValueError, match=f"actions is on {other} but logits is on {device}"):
        kernel(logits, avail, actions.to(other))
    with pytest.raises(ValueError, match=f"avail is on {other} but logits is on {device}"):
        ref.masked_softmax_stats(logits, avail.to(other), actions)


def test_public_op_rejects_meta_mixed_with_cpu():
    # A meta tensor sends the whole call to the fake kernels, which must repeat the device check.
    logits, avail, actions = softmax_inputs((4, 3), 5, torch.float32, garbage=False)
    with pytest.raises(ValueError, match="avail is on meta but logits is on cpu"):
        ops.masked_softmax_stats(logits, avail.to("meta"), actions)
