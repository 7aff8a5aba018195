"""Faults: checkpoints are verified, a killed run resumes to exactly the parameters of an uninterrupted one (from
its folder however spelled, and only on the data it started on), SIGTERM stops cleanly with a checkpoint, a second
run on a busy folder fails at once, and a non-finite loss stops the run naming the loss.

The runs that are killed or stopped pause themselves (SIGSTOP) in the middle of a chosen checkpoint write, so that
the signal lands at a known step, past the last complete checkpoint, whatever the machine's speed."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _pausing import paused_train
from inspo import checkpoint, training
from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import generate_matrix, load_dataset, save_dataset
from inspo.training import train
from inspo.training_data import batch, diagnostic_rows

ARGS = ["--iters", "300", "--bc-steps", "60", "--eval-every", "100", "--eval-episode-limit", "1",
        "--checkpoint-every", "7", "--batch-size", "64"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "xor"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0), path)
    return path


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inspo.cli", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _final_params(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "final.pt")["policy"]


def _assert_same_final(expected_run: Path, run: Path, note: str) -> None:
    expected, got = _final_params(expected_run), _final_params(run)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs {note}"


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    proc = _cli("--dataset", str(dataset), *ARGS, "--out", str(out))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


@pytest.mark.parametrize("write", [5, 11], ids=["behaviour-cloning", "learner"])
def test_sigkill_then_resume_gives_identical_parameters(dataset, uninterrupted, tmp_path, write: int) -> None:
    out = tmp_path / "killed"
    proc = paused_train(write, "--dataset", str(dataset), *ARGS, "--out", str(out))
    proc.send_signal(signal.SIGKILL)  # half-way through writing the state of step 7 * write
    proc.communicate()
    step = checkpoint.load(out / "checkpoint.pt")["run"]["step"]
    assert step == 7 * (write - 1)  # the last complete checkpoint; the steps after it are lost
    assert list(out.glob(".checkpoint.pt.*")), "the killed write left no temporary"
    resumed = _cli("--resume", str(out))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    _assert_same_final(uninterrupted, out, f"after resuming from step {step}")
    assert not list(out.glob(".checkpoint.pt.*")), "the resumed run left the killed write's temporary"
    assert not (out / ".lock").exists()


def test_sigterm_writes_a_checkpoint_and_exits_nonzero(dataset, uninterrupted, tmp_path) -> None:
    out = tmp_path / "terminated"
    proc = paused_train(11, "--dataset", str(dataset), *ARGS, "--out", str(out))
    # Paused while saving step 77; once it runs again it finishes that save and step 78, saves that, and stops.
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM" in err and f"--resume {out}" in err
    assert checkpoint.load(out / "checkpoint.pt")["run"]["step"] == 78
    resumed = _cli("--resume", str(out))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    _assert_same_final(uninterrupted, out, "after SIGTERM and resume")


def test_second_run_on_a_busy_folder_fails_at_once(dataset, uninterrupted, tmp_path) -> None:
    out = tmp_path / "busy"
    first = paused_train(1, "--dataset", str(dataset), *ARGS, "--out", str(out))
    try:
        for extra in ([], ["--overwrite"]):
            second = _cli("--dataset", str(dataset), *ARGS, "--out", str(out), *extra)
            _, err = second.communicate(timeout=120)
            assert second.returncode != 0
            assert f"run folder {out} is in use by another run (process {first.pid}" in err
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    _assert_same_final(uninterrupted, out, "after a second run tried the folder")


@pytest.mark.parametrize("spelling", ["trailing-slash", "dot-relative", "moved"])
def test_resume_accepts_any_spelling_of_the_folder(dataset, uninterrupted, tmp_path, spelling: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)  # the original's --out was an absolute path elsewhere: a moved folder
    (run / "final.pt").unlink()
    monkeypatch.chdir(tmp_path)
    where = {"trailing-slash": f"{run}/", "dot-relative": "./run", "moved": str(run)}[spelling]
    assert main(["train", "--resume", where]) == 0
    _assert_same_final(uninterrupted, run, f"after resuming from {where}")


def test_resume_refuses_a_replaced_dataset(tmp_path) -> None:
    data = tmp_path / "data"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 100, seed=0), data)
    cfg = TrainConfig(dataset=str(data), iters=10, bc_steps=5, eval_every=10, eval_episode_limit=1, batch_size=32,
                      out=str(tmp_path / "run"))
    train(cfg)
    started_on = load_dataset(data).manifest["manifest_sha256"]
    assert checkpoint.load(tmp_path / "run" / "checkpoint.pt")["dataset_sha256"] == started_on
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset_sha256"] == started_on and set(metrics["package"]) == {"version", "commit"}
    # The machine too: SMAX data and timings depend on it (docs/design.md 4.4).
    assert metrics["machine"]["cpu"] and metrics["machine"]["logical_cpus"] == os.cpu_count()
    assert metrics["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 100, seed=1), data, overwrite=True)
    now = load_dataset(data).manifest["manifest_sha256"]
    with pytest.raises(ValueError, match=f"another dataset: .*{started_on}.*{now}"):
        train(cfg, resume=True)


def test_corrupted_checkpoint_is_refused(uninterrupted, tmp_path) -> None:
    data = bytearray((uninterrupted / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="corrupted or truncated"):
        checkpoint.load(bad)
    bad.write_bytes(bytes(data[:1000]))
    with pytest.raises(checkpoint.CheckpointError, match="corrupted or truncated"):
        checkpoint.load(bad)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not an inspo checkpoint"):
        checkpoint.load(bad)


def test_resume_refuses_another_config(dataset, uninterrupted) -> None:
    saved = checkpoint.load(uninterrupted / "checkpoint.pt")["config"]
    cfg = TrainConfig.from_dict({**saved, "alpha": 0.5})
    with pytest.raises(ValueError, match="another config"):
        train(cfg, resume=True)


def test_nonfinite_loss_stops_the_run_naming_it(dataset, tmp_path, monkeypatch) -> None:
    # An infinite reward in the third update's batch makes the critic's loss non-finite at iteration 3. (A learning
    # rate high enough to overflow diverged at iteration 1 on one CPU and later on another.)
    updates = []

    def poisoned(data, idx, behaviour=None):
        rows = batch(data, idx, behaviour)
        if not torch.equal(idx, diagnostic_rows(data["obs"].shape[0], idx.numel(), idx.device)):
            updates.append(idx)
            if len(updates) == 3:
                rows = dataclasses.replace(rows, reward=torch.full_like(rows.reward, float("inf")))
        return rows

    monkeypatch.setattr(training, "batch", poisoned)
    cfg = TrainConfig(dataset=str(dataset), iters=200, bc_steps=10, eval_every=100, eval_episode_limit=1,
                      out=str(tmp_path / "nan"), checkpoint_every=1)
    nonfinite = r"non-finite (q_loss|v_loss|local_q_loss|policy_loss) .* at iteration 3;"
    with pytest.raises(FloatingPointError, match=nonfinite):
        train(cfg)
    assert len(updates) == 3
    # The checkpoint on disk is the state after the last good iteration, 2, and every saved parameter is finite.
    state = checkpoint.load(tmp_path / "nan" / "checkpoint.pt")
    assert state["run"]["step"] == cfg.bc_steps + 2
    params = [t for net in ("pi", "q", "v", "local_q") for t in state["learner"][net].values()]
    assert params and all(bool(torch.isfinite(t).all()) for t in params)


def test_nonfinite_behaviour_cloning_loss_stops_the_run(dataset, tmp_path) -> None:
    # A policy learning rate of 1e38 overflows the cloned policy's logits at the first step.
    cfg = TrainConfig(dataset=str(dataset), iters=5, bc_steps=30, lr_policy=1e38, eval_every=5, eval_episode_limit=1)
    with pytest.raises(FloatingPointError, match=r"^non-finite bc_nll \(nan\) at behaviour-cloning step \d+;"):
        train(cfg)
