"""Run folders: a folder that holds a run is not replaced without --overwrite, one run at a time works in a folder,
stale checkpoint temporaries are swept, a stop before the first step leaves nothing behind, a zero-iteration run is
behaviour cloning alone, and the reproduce run cache keys on the dataset's content, not on its path."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from inspo import checkpoint, run_folder, training
from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.reproduce import runner
from inspo.training import TrainingInterrupted, train

TINY = {"iters": 10, "bc_steps": 5, "eval_every": 5, "eval_episode_limit": 1, "batch_size": 32,
        "checkpoint_every": 5}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "xor"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 100, seed=0), path)
    return path


def _config(dataset: Path, out: Path, **change) -> TrainConfig:
    return TrainConfig(dataset=str(dataset), out=str(out), **{**TINY, **change})


def test_a_folder_holding_a_run_is_refused_without_overwrite(dataset, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    flags = ["train", "--dataset", str(dataset), "--iters", "10", "--bc-steps", "5", "--eval-every", "5",
             "--eval-episode-limit", "1", "--batch-size", "32", "--out", str(out)]
    assert main(flags) == 0
    before = (out / "metrics.json").read_bytes()
    assert main([*flags, "--seed", "1"]) != 0
    assert f"{out} already holds a run" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before  # untouched
    assert main([*flags, "--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(_config(dataset, out))
    with pytest.raises(ValueError, match="pass one"):
        train(_config(dataset, out), resume=True, overwrite=True)


def test_an_empty_or_foreign_folder_is_used(dataset, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    train(_config(dataset, tmp_path))
    assert (tmp_path / "final.pt").is_file() and (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / ".lock").exists()


def test_a_held_folder_is_refused_at_once(dataset, tmp_path) -> None:
    out = tmp_path / "run"
    with run_folder.claim(out):
        with pytest.raises(run_folder.RunFolderBusy, match=f"run folder {out} is in use by another run "
                                                           f"\\(process {os.getpid()}"):
            train(_config(dataset, out), overwrite=True)
    assert not out.exists()  # the holder created it and wrote nothing into it


def test_stale_checkpoint_temporaries_are_removed(dataset, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint.pt.k3j4h5g6", out / ".metrics.json.a1b2c3d4"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = out / ".other.pt.x"
    keep.write_bytes(b"not ours")
    train(_config(dataset, out))
    assert not any(path.exists() for path in stale) and keep.exists()


def test_zero_iterations_is_behaviour_cloning_alone(dataset, tmp_path) -> None:
    out = tmp_path / "run"
    result = train(_config(dataset, out, iters=0))
    assert [r["iteration"] for r in result.curve] == [0]
    assert result.updates_per_second == 0.0
    assert (out / "final.pt").is_file() and (out / "metrics.json").is_file()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
@pytest.mark.parametrize("resume", [False, True], ids=["new", "resume"])
def test_sigint_before_the_first_step_leaves_nothing(dataset, tmp_path, monkeypatch, capsys, resume: bool) -> None:
    out = tmp_path / "run"
    if resume:
        with pytest.raises(TrainingInterrupted):  # a checkpoint at step 7 to resume from
            _interrupt_at_checkpoint(dataset, out, monkeypatch)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if resume else {}
    real_load = training.load_dataset

    def load_then_interrupt(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # while the dataset is being read: before any training step
        return real_load(*args, **kwargs)

    monkeypatch.setattr(training, "load_dataset", load_then_interrupt)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT before training started"):
        train(_config(dataset, out), resume=resume)
    if resume:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert not out.exists()
    flags = ["--resume", str(out)] if resume else ["--dataset", str(dataset), "--out", str(out)]
    assert main(["train", *flags]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped by SIGINT before training started" in err


def _interrupt_at_checkpoint(dataset: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train into ``out`` and stop (SIGINT) right after the first checkpoint."""
    real_save = training.ckpt_io.save

    def save_then_interrupt(obj, path):
        real_save(obj, path)
        if Path(path).name == "checkpoint.pt":
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(training.ckpt_io, "save", save_then_interrupt)
        train(_config(dataset, out))


def test_run_cache_keys_on_dataset_content_not_path(dataset, tmp_path) -> None:
    config = _config(dataset, tmp_path / "run").to_dict()
    runner.train_one(config)
    assert runner.cached(config) is not None
    moved = tmp_path / "moved-data"
    shutil.copytree(dataset, moved)
    assert runner.cached({**config, "dataset": str(moved)}) is not None  # same content elsewhere: a hit
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 100, seed=1), moved, overwrite=True)
    assert runner.cached({**config, "dataset": str(moved)}) is None  # other content at that path: a miss
    runner.train_one({**config, "dataset": str(moved)})  # retrains into the folder of the outdated run
    assert runner.cached({**config, "dataset": str(moved)}) is not None
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    metrics["package"]["version"] = "0.0.0-other"
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics))
    assert runner.cached({**config, "dataset": str(moved)}) is None  # made by another inspo version: a miss


def test_resume_of_a_checkpoint_without_dataset_digest_warns(dataset, tmp_path) -> None:
    out = tmp_path / "run"
    train(_config(dataset, out))
    state = checkpoint.load(out / "checkpoint.pt")
    del state["dataset_sha256"]  # as written before the digest was recorded
    checkpoint.save(state, out / "checkpoint.pt")
    with pytest.warns(UserWarning, match="records no dataset digest"):
        train(_config(dataset, out), resume=True)
