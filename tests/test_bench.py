"""``inspo bench``: both benchmarks run from the command line at toy sizes and write their tables; the FLOP count of
the roofline columns."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
import torch

import inspo
from inspo.benchmarks import roofline
from inspo.benchmarks.cases import synthetic_data
from inspo.benchmarks.train import Runner
from inspo.cli import main


def test_bench_ops_writes_its_table(tmp_path: Path) -> None:
    rc = main(["bench", "ops", "--ops", "weights", "--B", "1024", "--N", "2", "--agents", "single", "--impls",
               "kernel", "eager", "--repeats", "3", "--budget", "0.05", "--threads", "1", "--tag", "toy",
               "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "toy.json").read_text())
    (result,) = report["results"]
    assert set(result["times"]) == {"kernel", "eager"} and result["times"]["kernel"]["median_s"] > 0
    assert (tmp_path / "toy.md").read_text().startswith("# inspo kernels vs references")
    assert str(tmp_path) not in (tmp_path / "toy.json").read_text()  # no folder of this machine in the table
    assert report["machine"]["package"]["version"] == inspo.__version__


def test_bench_train_writes_its_table(tmp_path: Path) -> None:
    rc = main(["bench", "train", "--cases", "n2", "--rows", "1000", "--repeats", "2", "--warmup", "1",
               "--repeat-seconds", "0.01", "--no-memory", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "train_cpu.json").read_text())
    (result,) = report["results"]
    assert result["case"] == "n2" and result["ratio"] > 0
    assert set(result["parts"]) == {"fused", "torch", "fused+bf16", "torch+bf16"}
    assert result["gflop_per_update"] == roofline.flops(roofline.inspo_update_gemms(
        n_agents=2, obs_dim=80, state_dim=52, n_actions=12, hidden=256, batch_size=256)) / 1e9
    assert set(result["ceiling_gflops"]) == {"fp32", "bf16"} and min(result["ceiling_gflops"].values()) > 0
    for name, v in result["backends"].items():
        assert v["precision"] == ("bf16" if name.endswith("+bf16") else "fp32")
        assert v["ceiling_fraction"] == pytest.approx(
            result["gflop_per_update"] * v["updates_per_s"] / result["ceiling_gflops"][v["precision"]])
    assert "| n2 | torch+bf16 | 1.031 |" in (tmp_path / "train_cpu.md").read_text()
    assert report["command"].startswith("inspo bench train --cases n2")
    assert str(tmp_path) not in (tmp_path / "train_cpu.json").read_text()


def test_bench_train_times_populations(tmp_path: Path) -> None:
    rc = main(["bench", "train", "--cases", "bridge", "n2", "--population", "3", "--precisions", "fp32", "--repeats",
               "2", "--warmup", "1", "--repeat-seconds", "0.01", "--no-memory", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "train_cpu.json").read_text())
    (pop,) = report["population"]  # the bridge and smax cases only
    assert pop["case"] == "bridge" and pop["members"] == 3
    assert pop["ratio"] == pytest.approx(pop["sequential"]["median_s"] / pop["stacked"]["median_s"])
    assert f"| bridge | 3 | {pop['sequential']['updates_per_s']:.1f} |" in (tmp_path / "train_cpu.md").read_text()


def test_bench_workers_writes_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed", reason="dask.distributed is the optional extra 'cluster'")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    rc = main(["bench", "workers", "--cases", "n2", "--rows", "1000", "--repeats", "2", "--warmup", "1",
               "--repeat-seconds", "0.05", "--out", str(tmp_path)])
    assert rc == 0
    (result,) = json.loads((tmp_path / "workers_cpu.json").read_text())["results"]
    places = result["places"]
    assert list(places) == ["this process", "inspo's local dask worker", "dask's default worker"]
    assert places["this process"]["x_this_process"] == 1.0 and all(p["median_s"] > 0 for p in places.values())
    if platform.libc_ver()[0] == "glibc":  # the trim threshold is glibc's: its workers fault memory in at every update
        assert places["dask's default worker"]["faults_per_update"] > 10 * places["inspo's local dask worker"][
            "faults_per_update"]
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # the nanny's variables did not stay in this process
    assert (tmp_path / "workers_cpu.md").read_text().startswith("# InSPO updates in this process and in dask workers")


def test_bench_needs_a_known_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "kernels"])
    assert "invalid choice: 'kernels'" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["train", "workers"])
@pytest.mark.parametrize("case", ["n0", "mpe", "nx"])
def test_bench_needs_a_known_case(which: str, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", which, "--cases", "smax", case])
    assert exc.value.code == 2
    assert f"unknown case '{case}': expected bridge, smax or n<N>" in capsys.readouterr().err

def test_bench_mappo_writes_its_table_and_counts_the_products(tmp_path: Path) -> None:
    from inspo.algos.networks import RecurrentPolicies
    from inspo.benchmarks import mappo
    from inspo.online_critics import RecurrentCritic

    sizes = ["--steps", "4", "--rows", "3", "--agents", "2", "--obs-dim", "7", "--state-dim", "5", "--n-actions", "3",
             "--hidden", "8"]
    assert main(["bench", "mappo", *sizes, "--repeats", "2", "--warmup", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "mappo_cpu.json").read_text())
    variants = {f"{backend}+{p}" for backend in ("fused", "torch", "loop") for p in ("fp32", "bf16")}
    assert set(report["result"]["variants"]) == variants
    assert "| torch+bf16 |" in (tmp_path / "mappo_cpu.md").read_text()
    assert report["command"].startswith("inspo bench mappo --steps 4") and str(tmp_path) not in json.dumps(report)
    # The count from the layer shapes is what the PyTorch twin multiplies (torch.profiler's count of its products;
    # the starting memory needs a gradient, as the kernel always computes it).
    actor, critic = RecurrentPolicies(2, 7, 3, 8), RecurrentCritic(2, 7, 5, 8, agent_state=True)
    obs, state, done, memory = torch.randn(4, 3, 2, 7), torch.randn(4, 3, 5), torch.zeros(4, 3), torch.zeros(3, 2, 8)
    with torch.profiler.profile(with_flops=True) as prof:
        (actor.replay(obs, done, memory.requires_grad_(), "torch").sum()
         + critic.replay(state, obs, done, memory, "torch").sum()).backward()
    counted = sum(e.flops for e in prof.key_averages() if e.key in ("aten::addmm", "aten::mm"))
    gemms = mappo.network_gemms(24, 4, 6, 7 + 2, 8, 3) + mappo.network_gemms(24, 4, 6, 5 + 7 + 2, 8, 1)
    assert report["result"]["gflop_per_step"] * 1e9 == pytest.approx(roofline.flops(gemms)) and counted == \
        roofline.flops(gemms)


@pytest.mark.parametrize("order", ["random", "simultaneous"])
@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_flop_count_is_what_an_update_multiplies(backend: str, order: str) -> None:
    """The count from the layer shapes equals the matrix-product FLOPs torch.profiler records in one real update
    (its own count from each addmm / mm / baddbmm call's shapes), on both backends, with and without the log-prob
    refreshes of a sequential order, with 2 local-critic steps."""
    data, sizes = synthetic_data(3, 500, torch.device("cpu"))
    change = {"hidden": 32, "batch_size": 64, "local_critic_steps": 2, "order": order}
    runner = Runner(data, sizes, change, backend, torch.device("cpu"))
    batch = runner.batch()
    with torch.profiler.profile(with_flops=True) as prof:
        runner.learner.update(batch)
    products = {e.key: e.flops for e in prof.key_averages() if e.key in ("aten::addmm", "aten::mm", "aten::baddbmm",
                                                                          "aten::bmm")}
    gemms = roofline.inspo_update_gemms(**sizes, hidden=32, batch_size=64, local_critic_steps=2,
                                        sequential=order != "simultaneous")
    assert sum(products.values()) == roofline.flops(gemms)
