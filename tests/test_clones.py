"""Behaviour clones kept for reuse (``clones=``, :mod:`inspo.clones`): a run that starts from a saved clone ends
bit for bit in the state of the run that cloned itself (networks, optimisers, RNG states, curve, logged rows), for
single runs and populations; the clone is reused across methods and kept apart where the cloning differs."""
from __future__ import annotations

import csv
import json
import shutil
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from _pausing import paused_train
from inspo import checkpoint
from inspo.algos.bc import BehaviourCloning
from inspo.cli import main
from inspo.clones import AFTER_CLONING, Clones, clone_key
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.population_training import train_members
from inspo.training import train

TINY = {"iters": 12, "bc_steps": 30, "batch_size": 32, "hidden": 16, "eval_every": 6, "eval_episode_limit": 2,
        "checkpoint_every": 7, "log_every": 10, "gamma": 0.9}
TIMES = ("/update_time", "/wall_time", "/cpu_time", "/out")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    ds = generate_matrix("mne", "mne-imbalanced", 200, seed=3, episode_limit=2)
    return str(save_dataset(ds, tmp_path_factory.mktemp("data") / "mne2"))


def _leaves(x: Any, path: str = "") -> dict[str, Any]:
    if isinstance(x, dict):
        return {k: v for key, value in x.items() for k, v in _leaves(value, f"{path}/{key}").items()}
    if isinstance(x, (list, tuple)):
        return {k: v for i, value in enumerate(x) for k, v in _leaves(value, f"{path}/{i}").items()}
    return {} if path.endswith(TIMES) else {path: x}


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "progress.csv") as fh:
        return [{k: v for k, v in row.items() if k != "updates_per_second"} for row in csv.DictReader(fh)]


def assert_identical(expected: Path, got: Path) -> None:
    """Two run folders hold the same training state and final policy bit for bit (timings and folders aside), the
    same logged rows and the same curve."""
    for name in ("checkpoint.pt", "final.pt"):
        want, have = _leaves(checkpoint.load(expected / name)), _leaves(checkpoint.load(got / name))
        assert want.keys() == have.keys(), name
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(have[key], value), f"{name}{key}"
            else:
                assert have[key] == value, f"{name}{key}"
    assert _rows(got) == _rows(expected)
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (expected, got)]
    for entry in ("curve", "final_return", "best_return", "bc_nll"):
        assert metrics[1][entry] == metrics[0][entry], entry


def _no_cloning(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("this run should have started from the saved clone")
    monkeypatch.setattr(BehaviourCloning, "update", refuse)


@pytest.mark.parametrize("algo", ["omiga", "inspo", "bc"])
def test_a_run_from_a_saved_clone_is_the_run_that_cloned(data: str, tmp_path: Path, algo: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    clones = tmp_path / "clones"
    base = TrainConfig(dataset=data, algo="icq", **TINY)
    train(replace(base, out=str(tmp_path / "icq")), clones=clones)  # clones, and keeps its clone
    assert len(list(clones.glob("*.pt"))) == 1
    alone = replace(base, algo=algo, out=str(tmp_path / "alone"))
    train(alone)
    _no_cloning(monkeypatch)
    train(replace(alone, out=str(tmp_path / "reused")), clones=clones)
    assert_identical(tmp_path / "alone", tmp_path / "reused")
    assert len(list(clones.glob("*.pt"))) == 1


def test_a_population_from_its_saved_clone_is_the_population_that_cloned(data: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    clones = tmp_path / "clones"

    def members(algo: str, name: str) -> list[TrainConfig]:
        return [TrainConfig(dataset=data, algo=algo, seed=s, out=str(tmp_path / name / f"seed{s}"), **TINY)
                for s in (0, 1, 2)]

    train_members(members("omiga", "omiga"), clones=clones)
    train_members(members("inspo", "alone"))
    _no_cloning(monkeypatch)
    train_members(members("inspo", "reused"), clones=clones)
    for s in (0, 1, 2):
        assert_identical(tmp_path / "alone" / f"seed{s}", tmp_path / "reused" / f"seed{s}")
    # A single run of seed 0 does not take the population's clone (stacked cloning agrees only to rounding).
    monkeypatch.undo()
    train(members("inspo", "single")[0], clones=clones)
    assert len(list(clones.glob("*.pt"))) == 2


def test_a_run_resumed_during_its_cloning_neither_reuses_nor_keeps_a_clone(data: str, tmp_path: Path) -> None:
    clones = tmp_path / "clones"
    cfg = TrainConfig(dataset=data, algo="omiga", **TINY)
    train(replace(cfg, algo="icq", out=str(tmp_path / "icq")), clones=clones)  # the clone a fresh OMIGA run would take
    train(replace(cfg, out=str(tmp_path / "whole")))
    flags = ["--dataset", data, "--algo", "omiga"]
    for k, v in TINY.items():
        flags += [f"--{k.replace('_', '-')}", str(v)]
    # Killed in its checkpoint write at step 21 of its 30 cloning steps: it resumes from step 14, after its row 10.
    proc = paused_train(3, *flags, "--out", str(tmp_path / "killed"))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert checkpoint.load(tmp_path / "killed" / "checkpoint.pt")["run"]["step"] == 14
    shutil.copytree(tmp_path / "killed", tmp_path / "killed-2")
    # With a clone it could take, it clones on from its checkpoint, as the run that was never killed ...
    assert main(["train", "--resume", str(tmp_path / "killed"), "--clones", str(clones)]) == 0
    assert_identical(tmp_path / "whole", tmp_path / "killed")
    # ... and without one it keeps none: its rows before the kill are in its log only.
    assert main(["train", "--resume", str(tmp_path / "killed-2"), "--clones", str(tmp_path / "new")]) == 0
    assert_identical(tmp_path / "whole", tmp_path / "killed-2")
    assert not (tmp_path / "new").exists()


def test_the_key_holds_what_the_cloning_reads() -> None:
    base = TrainConfig(dataset="d", algo="icq", **TINY)
    key = clone_key([base], "sha")
    after = {"algo": "cfcql", "alpha": 0.5, "lr_critic": 1e-2, "iters": 99, "eval_every": 3, "out": "x",
             "dataset": "elsewhere", "checkpoint_every": 2}
    assert set(after) <= AFTER_CLONING
    assert clone_key([replace(base, **after)], "sha") == key
    for field, value in {"seed": 1, "bc_steps": 31, "lr_policy": 1e-3, "hidden": 8, "batch_size": 16,
                         "shared_policy": True, "dtype": "float64", "log_every": 5, "threads": 2}.items():
        assert clone_key([replace(base, **{field: value})], "sha") != key, field
    assert clone_key([base], "other data") != key
    assert clone_key([base, replace(base, seed=1)], "sha") != key
    # A field added after clones were saved (critic_alpha) leaves their keys as they were.
    inspo = replace(base, algo="inspo")
    assert "critic_alpha" not in clone_key([inspo], "sha")["members"][0]
    assert clone_key([replace(inspo, critic_alpha=2.0)], "sha") == clone_key([inspo], "sha")


def test_an_unreadable_clone_is_made_again(data: str, tmp_path: Path) -> None:
    clones = tmp_path / "clones"
    cfg = TrainConfig(dataset=data, algo="bc", **TINY)
    train(replace(cfg, out=str(tmp_path / "first")), clones=clones)
    (saved,) = clones.glob("*.pt")
    saved.write_bytes(b"not a checkpoint")
    sha256 = json.loads((Path(data) / "manifest.json").read_text())["manifest_sha256"]
    assert Clones(clones).load(clone_key([cfg], sha256)) is None
    train(replace(cfg, out=str(tmp_path / "second")), clones=clones)
    assert_identical(tmp_path / "first", tmp_path / "second")
    assert checkpoint.load(saved)["members"][0]["bc_nll"] > 0


def test_inspo_train_clones_flag(data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = ["--dataset", data, "--iters", "12", "--bc-steps", "30", "--batch-size", "32", "--hidden", "16",
             "--eval-every", "6", "--eval-episode-limit", "2", "--log-every", "10", "--gamma", "0.9"]
    clones = str(tmp_path / "clones")
    assert main(["train", *flags, "--algo", "cfcql", "--out", str(tmp_path / "cfcql"), "--clones", clones]) == 0
    assert main(["train", *flags, "--algo", "inspo", "--out", str(tmp_path / "alone")]) == 0
    _no_cloning(monkeypatch)
    assert main(["train", *flags, "--algo", "inspo", "--out", str(tmp_path / "reused"), "--clones", clones]) == 0
    assert_identical(tmp_path / "alone", tmp_path / "reused")
