"""CUDA kernels (cuda/) against the pure-PyTorch reference and the CPU kernels, and a compile-only check of the CUDA
sources that needs nvcc but no GPU.

Accuracy rule for float32: the kernel's error against a float64 reference is at most twice the error of the float32
PyTorch reference on the same device (plus two ulps, so that an exact reference does not demand an exact kernel).
Float64 results must match the float64 reference to round-off.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import inspo
import inspo.ops
from inspo import reference

ROOT = Path(__file__).resolve().parent.parent
DTYPES = [torch.float32, torch.float64]


def _cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if not inspo.built_with_cuda():
        return "inspo was built without its CUDA kernels (torch without CUDA, or no nvcc at build time)"
    return None


_SKIP_REASON = _cuda_skip_reason()


def cuda_test(fn):
    return pytest.mark.cuda(pytest.mark.skipif(_SKIP_REASON is not None, reason=str(_SKIP_REASON))(fn))


# --- helpers -------------------------------------------------------------------------------------------------------


def _err(x: torch.Tensor, ref64: torch.Tensor) -> float:
    """Largest error against the float64 reference, absolute below 1 and relative above."""
    if x.numel() == 0:
        return 0.0
    return ((x.double() - ref64).abs() / (1 + ref64.abs())).max().item()


def assert_accurate(name: str, out: torch.Tensor, ref_same: torch.Tensor, ref64: torch.Tensor) -> None:
    assert out.dtype == ref_same.dtype and out.shape == ref64.shape, name
    if out.dtype == torch.float64:
        torch.testing.assert_close(out, ref64, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
        return
    kernel, torch_ref = _err(out, ref64), _err(ref_same, ref64)
    bound = 2 * torch_ref + 2 * torch.finfo(out.dtype).eps
    assert kernel <= bound, f"{name}: kernel error {kernel:.3g} > 2 x float32 reference error {torch_ref:.3g} (+2 ulp)"


def assert_same_as_cpu(out_cuda: torch.Tensor, out_cpu: torch.Tensor) -> None:
    tol = 2e-5 if out_cpu.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, rtol=tol, atol=tol)


def weights_inputs(n: int, b: int, per_agent: bool, masked: bool, dtype: torch.dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    qv_shape = (n, b) if per_agent else (b,)
    q = torch.randn(qv_shape, generator=g, dtype=torch.float64) * 2
    v = torch.randn(qv_shape, generator=g, dtype=torch.float64) * 2
    logp_pi = -torch.rand(n, b, generator=g, dtype=torch.float64) * 3
    logp_mu = -torch.rand(n, b, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(n, b, generator=g) < 0.8 if masked else None
    if masked:
        # Dead agents' entries may hold anything; none of it may reach the outputs.
        logp_pi = logp_pi.masked_fill(~mask, float("nan"))
        logp_mu = logp_mu.masked_fill(~mask, float("inf"))
    tensors = [t.to(device=device, dtype=dtype) for t in (q, v, logp_pi, logp_mu)]
    return (*tensors, None if mask is None else mask.to(device))


def softmax_inputs(batch: tuple[int, ...], a: int, dtype: torch.dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*batch, a, generator=g, dtype=torch.float64) * 3
    avail = torch.rand(*batch, a, generator=g) < 0.6
    avail.scatter_(-1, torch.randint(a, (*batch, 1), generator=g), True)  # every row has an available action
    actions = torch.multinomial(avail.reshape(-1, a).double(), 1, generator=g).reshape(batch)
    # Unavailable logits may hold anything; none of it may reach the outputs or the gradient.
    junk = torch.rand(*batch, a, generator=g) < 0.3
    logits = logits.masked_fill(~avail & junk, float("nan")).masked_fill(~avail & ~junk, float("inf"))
    return logits.to(device=device, dtype=dtype), avail.to(device), actions.to(device)


def softmax_with_grads(fn, logits, avail, actions, w_logp, w_ent):
    x = logits.detach().clone().requires_grad_(True)
    logp, ent = fn(x, avail, actions)
    ((logp * w_logp).sum() + (ent * w_ent).sum()).backward()
    return logp.detach(), ent.detach(), x.grad


# --- compile-only check (runs without a GPU) -----------------------------------------------------------------------


def _cmake_326() -> tuple[str | None, str]:
    """A cmake >= 3.26, preferring the one next to this Python (the venv's), and why none was found."""
    candidates = [Path(sys.executable).parent / "cmake", shutil.which("cmake")]
    seen = []
    for c in candidates:
        if c is None or not Path(c).exists():
            continue
        out = subprocess.run([str(c), "--version"], capture_output=True, text=True).stdout
        m = re.search(r"version (\d+)\.(\d+)", out)
        if m and (int(m[1]), int(m[2])) >= (3, 26):
            return str(c), ""
        seen.append(f"{c} ({m[0] if m else 'unknown version'})")
    return None, "no cmake >= 3.26 (CUDA builds need it); found: " + (", ".join(seen) or "none")


def test_cuda_sources_compile(tmp_path):
    """Every CUDA source compiles (nvcc for sm_80 and sm_90, host side with the C++ compiler), warnings as errors,
    against the installed torch's headers; see .ci/cuda_compile_check.sh. About 30-60 s on two cores."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")
    cmake, why = _cmake_326()
    if cmake is None:
        pytest.skip(why)
    env = dict(os.environ, PYTHON=sys.executable, CMAKE=cmake, INSPO_CUDA_ARCHITECTURES="80;90")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's ninja, if any
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "cuda_compile_check.sh"), str(tmp_path / "build")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"CUDA compile check failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    assert "compiled for architectures 80;90" in proc.stdout


# --- advantage_weights ---------------------------------------------------------------------------------------------

WEIGHTS_SHAPES = [(1, 1), (2, 7), (3, 1000), (5, 4099)]
ARGS = dict(tau=0.7, beta=0.3, rho_max=100.0, z_max=10.0)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,b", WEIGHTS_SHAPES)
@pytest.mark.parametrize("per_agent", [False, True], ids=["shared_qv", "per_agent_qv"])
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
def test_advantage_weights_matches_reference(dtype, n, b, per_agent, masked):
    inputs = weights_inputs(n, b, per_agent, masked, dtype, "cuda")
    inputs64 = [None if t is None else t.double() if t.is_floating_point() else t for t in inputs]
    for agent in sorted({-1, 0, n - 1}):
        out = inspo.ops.advantage_weights(*inputs, agent, **ARGS)
        ref = reference.advantage_weights(*inputs, agent, **ARGS)
        ref64 = reference.advantage_weights(*inputs64, agent, **ARGS)
        for name, o, r, r64 in zip(("rho", "expadv"), out, ref, ref64):
            assert torch.isfinite(o).all(), f"{name}, agent {agent}: non-finite output"
            assert_accurate(f"{name}, agent {agent}", o, r, r64)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,b", WEIGHTS_SHAPES)
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
def test_advantage_weights_matches_cpu_kernel(dtype, n, b, masked):
    inputs = weights_inputs(n, b, True, masked, dtype, "cpu", seed=1)
    for agent in sorted({-1, 0, n - 1}):
        out_cpu = inspo.ops.advantage_weights(*inputs, agent, **ARGS)
        out_cuda = inspo.ops.advantage_weights(*[None if t is None else t.cuda() for t in inputs], agent, **ARGS)
        for o_cuda, o_cpu in zip(out_cuda, out_cpu):
            assert o_cuda.is_cuda
            assert_same_as_cpu(o_cuda, o_cpu)


@cuda_test
def test_advantage_weights_noncontiguous_and_empty():
    q, v, lpi, lmu, mask = weights_inputs(3, 64, True, True, torch.float32, "cuda")
    strided = [t.t().contiguous().t() for t in (q, v, lpi, lmu)] + [mask.t().contiguous().t()]
    assert not strided[2].is_contiguous()
    for got, want in zip(inspo.ops.advantage_weights(*strided, -1, **ARGS),
                         inspo.ops.advantage_weights(q, v, lpi, lmu, mask, -1, **ARGS)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    empty = torch.empty(2, 0, device="cuda")
    rho, expadv = inspo.ops.advantage_weights(empty, empty, empty, empty, None, 1, **ARGS)
    assert rho.shape == expadv.shape == (0,) and rho.is_cuda


@cuda_test
def test_advantage_weights_device_mismatch_is_rejected():
    q, v, lpi, lmu, mask = weights_inputs(2, 8, False, True, torch.float32, "cuda")
    with pytest.raises(ValueError, match="mask is on cpu but logp_pi is on cuda"):
        inspo.ops.advantage_weights(q, v, lpi, lmu, mask.cpu(), 0, **ARGS)


# --- masked_softmax_stats ------------------------------------------------------------------------------------------

# A <= 32 runs one thread per row, A > 32 one warp per row; row counts straddle the 128-row tiles.
SOFTMAX_CASES = [((7,), 1), ((7,), 5), ((3, 129), 5), ((300,), 32), ((257,), 33), ((2, 3, 50), 100), ((4,), 1000)]


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch,a", SOFTMAX_CASES)
def test_masked_softmax_matches_reference(dtype, batch, a):
    logits, avail, actions = softmax_inputs(batch, a, dtype, "cuda")
    g = torch.Generator().manual_seed(2)
    w_logp = torch.randn(batch, generator=g, dtype=torch.float64).to("cuda")
    w_ent = torch.randn(batch, generator=g, dtype=torch.float64).to("cuda")
    out = softmax_with_grads(inspo.ops.masked_softmax_stats, logits, avail, actions, w_logp.to(dtype),
                             w_ent.to(dtype))
    ref = softmax_with_grads(reference.masked_softmax_stats, logits, avail, actions, w_logp.to(dtype),
                             w_ent.to(dtype))
    ref64 = softmax_with_grads(reference.masked_softmax_stats, logits.double(), avail, actions, w_logp, w_ent)
    for name, o, r, r64 in zip(("logp", "entropy", "grad"), out, ref, ref64):
        assert torch.isfinite(o).all(), f"{name}: non-finite output"
        assert_accurate(name, o, r, r64)
    assert (out[2][~avail] == 0).all(), "unavailable logits must get zero gradient"


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch,a", SOFTMAX_CASES)
def test_masked_softmax_matches_cpu_kernel(dtype, batch, a):
    logits, avail, actions = softmax_inputs(batch, a, dtype, "cpu", seed=3)
    grad_logp = torch.randn(batch, dtype=dtype)
    grad_ent = torch.randn(batch, dtype=dtype)
    fwd_cpu = torch.ops.inspo.masked_softmax_stats(logits, avail, actions)
    bwd_cpu = torch.ops.inspo.masked_softmax_stats_backward(grad_logp, grad_ent, logits, avail, actions)
    cuda = [t.cuda() for t in (grad_logp, grad_ent, logits, avail, actions)]
    fwd_cuda = torch.ops.inspo.masked_softmax_stats(*cuda[2:])
    bwd_cuda = torch.ops.inspo.masked_softmax_stats_backward(*cuda)
    for o_cuda, o_cpu in zip((*fwd_cuda, bwd_cuda), (*fwd_cpu, bwd_cpu)):
        assert o_cuda.is_cuda
        assert_same_as_cpu(o_cuda, o_cpu)


@cuda_test
@pytest.mark.parametrize("a", [5, 40])
def test_masked_softmax_available_minus_inf_logit_is_finite(a):
    """An available logit of -inf has probability 0; it must not turn the entropy or the gradient into NaN."""
    logits, avail, actions = softmax_inputs((64,), a, torch.float32, "cuda", seed=4)
    rows = torch.arange(64, device="cuda")
    other = (actions + 1) % a
    avail[rows, other] = True
    logits[rows, other] = float("-inf")
    logits[rows, actions] = 0.0
    logp, ent, grad = softmax_with_grads(inspo.ops.masked_softmax_stats, logits, avail, actions,
                                         torch.ones(64, device="cuda"), torch.ones(64, device="cuda"))
    assert torch.isfinite(logp).all() and torch.isfinite(ent).all() and torch.isfinite(grad).all()
    cpu = softmax_with_grads(inspo.ops.masked_softmax_stats, logits.cpu(), avail.cpu(), actions.cpu(),
                             torch.ones(64), torch.ones(64))
    for o_cuda, o_cpu in zip((logp, ent, grad), cpu):
        assert_same_as_cpu(o_cuda, o_cpu)


@cuda_test
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
def test_masked_softmax_bad_rows_raise_like_cpu(a, op, bad):
    logits, avail, actions = softmax_inputs((256,), a, torch.float32, "cpu", seed=5)
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
        reference.check_softmax_inputs(logits, avail, actions)
    message = str(want.value)
    assert message.startswith("row ")
    grads = (torch.ones(256), torch.ones(256))
    for device in ("cpu", "cuda"):
        x, av, act = logits.to(device), avail.to(device), actions.to(device)
        with pytest.raises(ValueError, match=re.escape(message)):
            if op == "forward":
                torch.ops.inspo.masked_softmax_stats(x, av, act)
            else:
                torch.ops.inspo.masked_softmax_stats_backward(*(t.to(device) for t in grads), x, av, act)
    # The device is still usable after the error (no device-side assert outside graph capture).
    torch.cuda.synchronize()


@cuda_test
def test_masked_softmax_noncontiguous_and_empty():
    logits, avail, actions = softmax_inputs((64, 3), 7, torch.float32, "cuda")
    got = torch.ops.inspo.masked_softmax_stats(logits.transpose(0, 1), avail.transpose(0, 1), actions.t())
    want = torch.ops.inspo.masked_softmax_stats(logits.transpose(0, 1).contiguous(),
                                                 avail.transpose(0, 1).contiguous(), actions.t().contiguous())
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_, rtol=0, atol=0)
    empty = torch.empty(0, 4, device="cuda")
    logp, ent = torch.ops.inspo.masked_softmax_stats(empty, empty.bool(), torch.empty(0, dtype=torch.long,
                                                                                      device="cuda"))
    assert logp.shape == ent.shape == (0,) and logp.is_cuda


@cuda_test
def test_opcheck_and_gradcheck_on_cuda():
    logits, avail, actions = softmax_inputs((5, 3), 6, torch.float64, "cuda", seed=6)
    logits = logits.masked_fill(~avail, 0.0)  # gradcheck perturbs every entry; keep the unavailable ones finite
    torch.library.opcheck(torch.ops.inspo.masked_softmax_stats, (logits.requires_grad_(), avail, actions))
    torch.autograd.gradcheck(lambda x: inspo.ops.masked_softmax_stats(x, avail, actions), (logits,))
    q, v, lpi, lmu, mask = weights_inputs(3, 16, True, True, torch.float64, "cuda")
    torch.library.opcheck(torch.ops.inspo.advantage_weights, (q, v, lpi, lmu, mask, -1, 0.7, 0.3, 100.0, 10.0))
    compiled = torch.compile(inspo.ops.masked_softmax_stats, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(logits.detach(), avail, actions),
                         inspo.ops.masked_softmax_stats(logits.detach(), avail, actions)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@cuda_test
def test_masked_softmax_in_cuda_graph():
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
    new_logits = softmax_inputs((500,), 12, torch.float32, "cuda", seed=7)[0] * 0.5
    logits.copy_(new_logits)
    graph.replay()
    torch.cuda.synchronize()
    want_logp, want_ent = torch.ops.inspo.masked_softmax_stats(logits, avail, actions)
    want_grad = torch.ops.inspo.masked_softmax_stats_backward(grad_logp, grad_ent, logits, avail, actions)
    for got, want in zip((logp, ent, grad), (want_logp, want_ent, want_grad)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@cuda_test
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
