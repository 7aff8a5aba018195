"""Faults: checkpoints are verified, a killed run resumes to exactly the parameters of an uninterrupted one,
SIGTERM stops cleanly with a checkpoint, and a non-finite loss stops the run naming the loss."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from inspo import checkpoint
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.training import train

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


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    proc = _cli("--dataset", str(dataset), *ARGS, "--out", str(out))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_sigkill_then_resume_gives_identical_parameters(dataset, uninterrupted, tmp_path) -> None:
    out = tmp_path / "killed"
    proc = _cli("--dataset", str(dataset), *ARGS, "--out", str(out))
    _wait_for_checkpoint(out, proc)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 1.5))
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be killed; make it longer")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    step = checkpoint.load(out / "checkpoint.pt")["run"]["step"]
    assert 0 < step < 360
    resumed = _cli("--resume", str(out))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    expected, got = _final_params(uninterrupted), _final_params(out)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resuming from step {step}"


def test_sigterm_writes_a_checkpoint_and_exits_nonzero(dataset, uninterrupted, tmp_path) -> None:
    out = tmp_path / "terminated"
    proc = _cli("--dataset", str(dataset), *ARGS, "--out", str(out))
    _wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "SIGTERM" in err and f"--resume {out}" in err
    resumed = _cli("--resume", str(out))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    expected, got = _final_params(uninterrupted), _final_params(out)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


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


def test_nonfinite_loss_stops_the_run_naming_it(dataset, tmp_path) -> None:
    # A critic learning rate of 1e5 overflows the joint critic within the first few iterations.
    cfg = TrainConfig(dataset=str(dataset), iters=200, bc_steps=10, lr_critic=1e5, eval_every=100,
                      eval_episode_limit=1, out=str(tmp_path / "nan"), checkpoint_every=1)
    with pytest.raises(FloatingPointError, match=r"non-finite (q_loss|v_loss|local_q_loss|policy_loss) .* at iteration \d+") as info:
        train(cfg)
    failed_at = int(re.search(r"at iteration (\d+)", str(info.value)).group(1))
    assert failed_at > 1, "diverged before a learner checkpoint existed; raise the learning rate less"
    # The checkpoint on disk is the state after the last good iteration, and every saved parameter is finite.
    state = checkpoint.load(tmp_path / "nan" / "checkpoint.pt")
    assert state["run"]["step"] == cfg.bc_steps + failed_at - 1
    params = [t for net in ("pi", "q", "v", "local_q") for t in state["learner"][net].values()]
    assert params and all(bool(torch.isfinite(t).all()) for t in params)


def test_nonfinite_behaviour_cloning_loss_stops_the_run(dataset, tmp_path) -> None:
    # A policy learning rate of 1e38 overflows the cloned policy's logits at the first step.
    cfg = TrainConfig(dataset=str(dataset), iters=5, bc_steps=30, lr_policy=1e38, eval_every=5, eval_episode_limit=1)
    with pytest.raises(FloatingPointError, match=r"^non-finite bc_nll \(nan\) at behaviour-cloning step \d+;"):
        train(cfg)
