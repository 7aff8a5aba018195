"""Watching a run: the CSV and TensorBoard logs written as it goes (and continued by a resumed run), the progress
line off a terminal, per-episode returns in the curve."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from inspo import checkpoint
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.progress import ProgressBar
from inspo.training import train

SMALL = {"bc_steps": 20, "iters": 40, "batch_size": 32, "hidden": 16, "eval_every": 20, "log_every": 10,
         "eval_episodes": 4}


@pytest.fixture(scope="module")
def xor(tmp_path_factory: pytest.TempPathFactory) -> str:
    ds = generate_matrix("xor", "xor-aa-ab-ba", 200, seed=0)
    return str(save_dataset(ds, tmp_path_factory.mktemp("data") / "xor"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_and_tensorboard_are_written_during_the_run(xor: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    seen: list[list[dict[str, str]]] = []
    import inspo.loggers

    write = inspo.loggers.CSVLog.write

    def spy(self: inspo.loggers.CSVLog, step: int, row: dict[str, float]) -> None:
        write(self, step, row)
        seen.append(_rows(self.path))  # what a reader of the file sees while the run goes

    monkeypatch.setattr(inspo.loggers.CSVLog, "write", spy)
    result = train(TrainConfig(dataset=xor, out=str(out), logger="csv,tensorboard", **SMALL))
    # Every row was on disk as soon as it was logged.
    assert [len(rows) for rows in seen] == list(range(1, len(seen) + 1))
    rows = _rows(out / "progress.csv")
    # BC rows every 10 steps (10, 20), then iteration 0, 10 (log), 20 (eval), 30 (log), 40 (eval).
    assert [(int(r["step"]), int(r["iteration"])) for r in rows] == [(10, 0), (20, 0), (20, 0), (30, 10), (40, 20),
                                                                     (50, 30), (60, 40)]
    evals = [r for r in rows if r["return"]]
    assert [float(r["return"]) for r in evals] == pytest.approx([c["return"] for c in result.curve])
    assert all(r["policy_loss"] for r in rows if int(r["iteration"]) > 0)
    assert all(float(r["updates_per_second"]) > 0 for r in rows if int(r["iteration"]) > 0)
    acc = event_accumulator.EventAccumulator(str(out / "tb"))
    acc.Reload()
    returns = acc.Scalars("eval/return")
    assert [e.step for e in returns] == [20, 40, 60]
    assert [e.value for e in returns] == pytest.approx([c["return"] for c in result.curve], rel=1e-6)
    assert "train/policy_loss" in acc.Tags()["scalars"] and "perf/updates_per_second" in acc.Tags()["scalars"]
    # Per-episode returns of every evaluation are kept in metrics.json (matrix games: the exact expectation).
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(len(c["episode_returns"]) == 1 for c in metrics["curve"])


def test_a_resumed_run_continues_the_csv_without_duplicate_rows(xor: str, tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    cfg = {**SMALL, "checkpoint_every": 30}
    train(TrainConfig(dataset=xor, out=str(whole), **cfg))
    train(TrainConfig(dataset=xor, out=str(cut), **cfg))
    # Roll the second run back to its checkpoint at step 30 with the rows logged after it still in the file, as if
    # it had been killed at the end: the resumed run must drop those and log them again, once.
    state = checkpoint.load(cut / "checkpoint.pt")
    rows = _rows(cut / "progress.csv")
    assert len(rows) == 7
    state["run"]["step"] = 30
    state["run"]["logged"] = 4
    state["run"]["curve"] = state["run"]["curve"][:2]
    checkpoint.save(state, cut / "checkpoint.pt")
    (cut / "metrics.json").unlink()
    for name in ("final.pt", "best.pt"):
        (cut / name).unlink()
    train(TrainConfig(dataset=xor, out=str(cut), **cfg), resume=True)
    assert [(r["step"], r["iteration"]) for r in _rows(cut / "progress.csv")] == \
        [(r["step"], r["iteration"]) for r in _rows(whole / "progress.csv")]


def test_progress_off_a_terminal_prints_plain_lines() -> None:
    log = io.StringIO()
    bar = ProgressBar(10, "train", stream=log, interval=0.0)
    for k in range(1, 11):
        bar.update(k, f"step {k}")
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in log.getvalue()
    assert lines[4].startswith("train: 5/10 (50%)") and "step 5" in lines[4] and "eta" in lines[4]
    assert lines[-1].startswith("train: 10/10 (100%)")
    quiet = io.StringIO()
    bar = ProgressBar(10, "train", stream=quiet, enabled=False, interval=0.0)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""


def test_marl_eval_export(xor: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inspo.cli import main

    runs = []
    for seed in (0, 1):
        runs.append(str(tmp_path / f"seed{seed}"))
        train(TrainConfig(dataset=xor, out=runs[-1], seed=seed, logger="none", **SMALL))
    out = tmp_path / "marl_eval.json"
    assert main(["report", *runs, "--marl-eval", str(out)]) == 0
    record = json.loads(out.read_text())
    by_seed = record["xor"]["xor"]["inspo"]
    assert sorted(by_seed) == ["run_0", "run_1"]
    curve = json.loads((Path(runs[1]) / "metrics.json").read_text())["curve"]
    run = by_seed["run_1"]
    assert [run[f"step_{k}"]["step_count"] for k in range(len(curve))] == [c["iteration"] for c in curve]
    assert run["step_2"]["return"] == curve[2]["episode_returns"]
    assert run["absolute_metrics"] == {"return": curve[-1]["episode_returns"]}
    assert not (Path(runs[0]) / "progress.csv").exists()  # logger "none"
    capsys.readouterr()
    assert main(["report", runs[0], runs[0], "--marl-eval", str(out)]) == 2
    assert "both xor/xor/inspo/run_0" in capsys.readouterr().err
