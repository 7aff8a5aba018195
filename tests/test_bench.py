"""``inspo bench``: both benchmarks run from the command line at toy sizes and write their tables."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import inspo
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
    assert set(result["parts"]) == {"fused", "torch"}
    assert report["command"].startswith("inspo bench train --cases n2")
    assert str(tmp_path) not in (tmp_path / "train_cpu.json").read_text()


def test_bench_needs_a_known_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "kernels"])
    assert "invalid choice: 'kernels'" in capsys.readouterr().err
