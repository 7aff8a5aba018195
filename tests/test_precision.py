"""``precision="bf16"`` (:mod:`inspo.precision`): bfloat16 matrix products with float32 master weights.

The update ops and their twins stay twins in bfloat16 (and differ from float32, so that the argument does
something); an ambient autocast changes neither; the networks under autocast compute what the twins' explicit casts
compute; every learner trains in bf16 with float32 parameters and Adam states, the fused and torch backends to the same
result; a bf16 run on a CPU without bfloat16 instructions is warned. The known answers in bf16 are in
test_known_answers.py.
"""
from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import inspo
from _ops_helpers import DEVICES, VARIANTS, clone_args, critic_args, make_batch, make_learner, pass_args
from inspo import ops, precision, reference
from inspo.algos.networks import mlp
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

BF16 = torch.bfloat16
# The twins round the same bfloat16 products: they agree to float32 rounding of the accumulations (measured: at most
# 2.4e-6 after one pass). float32 and bfloat16 results differ by about 6e-3 (an Adam step of lr 3e-3 whose sign
# flips), so this tolerance tells the two apart.
TWINS = {"rtol": 1e-4, "atol": 1e-4}


def _tensors(args: list) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, list) else [a]) if isinstance(t, torch.Tensor)]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True))


def _pass(fn, args: list, kw: dict, **change: Any) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One call of ``fn`` (the op or its twin) on copies of the arguments and a fresh generator of the same seed."""
    copies = clone_args(args)
    gen = torch.Generator(kw["generator"].device).manual_seed(5)
    out = fn(*copies, **{**kw, "generator": gen, **change})
    return out, _tensors(copies), gen.get_state()


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
@pytest.mark.parametrize("device", DEVICES)
def test_sequential_update_twins_agree_in_bf16(device: str, variant: dict[str, Any]) -> None:
    learner = make_learner(torch.float32, device=device, **variant)
    args, kw = pass_args(learner, make_batch(0, learner.pi, torch.float32, device))
    got, got_args, got_gen = _pass(ops.sequential_update, args, kw, matmul_dtype=BF16)
    want, want_args, want_gen = _pass(reference.sequential_update, args, kw, matmul_dtype=BF16)
    torch.testing.assert_close(got, want, **TWINS)
    for k, (g, w) in enumerate(zip(got_args, want_args, strict=True)):
        assert g.dtype == w.dtype, f"argument tensor {k} changed dtype"
        torch.testing.assert_close(g, w, msg=f"argument tensor {k}", **TWINS)
    assert torch.equal(got_gen, want_gen)
    _, fp32_args, _ = _pass(ops.sequential_update, args, kw)
    assert _max_diff(got_args, fp32_args) > 1e-3  # the products did run in bfloat16


@pytest.mark.parametrize("device", DEVICES)
def test_critic_update_twins_agree_in_bf16(device: str) -> None:
    learner = make_learner(torch.float32, device=device)
    args, kw = critic_args(learner, make_batch(3, learner.pi, torch.float32, device))
    results = {}
    for name, fn in (("op", ops.critic_update), ("twin", reference.critic_update)):
        for dtype in (BF16, None):
            copies = clone_args(args)
            out = fn(*copies, **kw, matmul_dtype=dtype)
            results[name, dtype] = [*out, *_tensors(copies)]
    for k, (g, w) in enumerate(zip(results["op", BF16], results["twin", BF16], strict=True)):
        assert g.dtype == (torch.float32 if g.is_floating_point() else torch.int64)
        torch.testing.assert_close(g, w, msg=f"output or argument tensor {k}", **TWINS)
    assert _max_diff(results["op", BF16], results["op", None]) > 1e-4


@pytest.mark.parametrize("fn", [ops.sequential_update, reference.sequential_update], ids=["kernel", "reference"])
def test_update_ops_ignore_autocast(fn) -> None:
    """Their precision is their argument's: under an ambient bfloat16 autocast a float32 pass is bit for bit the
    pass without it (autocast does reach the ATen calls inside the C++ op, which would otherwise fail)."""
    learner = make_learner(torch.float32)
    args, kw = pass_args(learner, make_batch(0, learner.pi, torch.float32))
    plain, plain_args, _ = _pass(fn, args, kw)
    with torch.autocast("cpu", BF16):
        under, under_args, _ = _pass(fn, args, kw)
    assert torch.equal(plain, under)
    assert all(torch.equal(a, b) for a, b in zip(plain_args, under_args, strict=True))


@pytest.mark.parametrize("fn", [ops.critic_update, reference.critic_update], ids=["kernel", "reference"])
def test_bad_matmul_dtype_names_the_value(fn) -> None:
    learner = make_learner(torch.float32)
    args, kw = critic_args(learner, make_batch(0, learner.pi, torch.float32))
    with pytest.raises(TypeError, match=r"matmul_dtype must be None, the data's .*(Float|float32).*, got "
                                        r".*(Double|float64)"):
        fn(*args, **kw, matmul_dtype=torch.float64)


def test_networks_under_autocast_compute_what_the_twins_cast() -> None:
    """The two mechanisms of :mod:`inspo.precision` agree: an MLP under bf16 autocast equals the twins' MLP with
    ``matmul_dtype=bfloat16``, returns float32, and differs from the float32 MLP."""
    torch.manual_seed(0)
    net = mlp(7, 32, 5)
    x = torch.randn(64, 7)
    params = [p.detach() for p in net.parameters()]
    with precision.autocast("bf16", "cpu"):
        low = net(x)
    assert low.dtype == torch.float32
    assert torch.equal(low, reference._mlp(x, params, BF16))
    assert not torch.allclose(low, net(x), rtol=0, atol=1e-5)
    with precision.autocast("fp32", "cpu"):
        assert torch.equal(net(x), reference._mlp(x, params))


def test_bf16_needs_float32() -> None:
    with pytest.raises(ValueError, match=r"config.precision 'bf16' keeps float32 master weights: it needs dtype "
                                         r"'float32', got dtype 'float64'"):
        TrainConfig(dataset="-", precision="bf16", dtype="float64")
    with pytest.raises(ValueError, match=r"config.precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        TrainConfig(dataset="-", precision="fp16")


@pytest.fixture(scope="module")
def xor_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0), tmp_path_factory.mktemp("xor")))


def _run(dataset: str, **change: Any) -> inspo.TrainResult:
    return inspo.train(TrainConfig(dataset=dataset, bc_steps=20, iters=30, batch_size=32, hidden=16,
                                   eval_every=30, eval_episodes=5, gamma=0.0, **change))


@pytest.mark.parametrize("algo", ["bc", "inspo", "icq", "omiga", "cfcql"])
def test_every_algo_trains_in_bf16_with_float32_master_weights(xor_data: str, algo: str) -> None:
    bf16, fp32 = _run(xor_data, algo=algo, precision="bf16"), _run(xor_data, algo=algo)
    weights = bf16.policy.network.state_dict()
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())
    other = fp32.policy.network.state_dict()
    assert max(float((weights[k] - other[k]).abs().max()) for k in weights) > 0  # bf16 products changed the run


def test_backends_train_alike_in_bf16(xor_data: str, tmp_path: Path) -> None:
    """Whole runs on the fused ops and on their twins, in bf16: the same final policy."""
    fused = _run(xor_data, precision="bf16", out=str(tmp_path / "fused"))
    twin = _run(xor_data, precision="bf16", backend="torch", out=str(tmp_path / "torch"))
    a, b = fused.policy.network.state_dict(), twin.policy.network.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name, **TWINS)
    metrics = (tmp_path / "fused" / "metrics.json").read_text()
    assert '"precision": "bf16"' in metrics


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                    reason="reads /proc/cpuinfo's x86 flags")
def test_native_bf16_reads_the_cpus_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next(line for line in cpuinfo if line.startswith("flags")).split()
    assert precision.native_bf16("cpu") == ("avx512_bf16" in flags or "amx_tile" in flags)
    assert precision.native_bf16("cuda") is None  # only CPUs are probed


@pytest.mark.parametrize("native", [True, False, None])
@pytest.mark.parametrize("choice", ["fp32", "bf16"])
def test_bf16_is_warned_only_where_it_is_emulated(monkeypatch: pytest.MonkeyPatch, native: bool | None,
                                                  choice: str) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision.warn_if_emulated(choice, "cpu")
    expected = choice == "bf16" and native is False
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == (
        ["precision 'bf16' on a CPU without bfloat16 instructions (AVX512-BF16 or AMX): its products are converted "
         "on every call (online MAPPO's ran at 0.22x their float32 speed); use precision 'fp32' here"]
        if expected else [])


@pytest.mark.parametrize("population", [False, True])
def test_training_in_bf16_warns_on_a_cpu_without_bf16(xor_data: str, monkeypatch: pytest.MonkeyPatch,
                                                      population: bool) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    from inspo.population_training import train_population

    seeds = {"seeds": [0, 1]} if population else {}
    train = train_population if population else inspo.train
    with pytest.warns(RuntimeWarning, match="without bfloat16 instructions"):
        train(TrainConfig(dataset=xor_data, bc_steps=2, iters=2, batch_size=8, hidden=8, eval_every=2,
                          eval_episodes=2, precision="bf16", **seeds))
