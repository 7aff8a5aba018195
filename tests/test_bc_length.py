"""The held-out behaviour-cloning length (`inspo.bc_length`, `inspo datasets bc-length`, `inspo reproduce smax
--bc-steps auto`): the episode split, the stopping rule on a dataset whose held-out NLL has a known minimum, the
cache, and clear errors."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from inspo.bc_length import BCLengthSettings, cached_bc_length, heldout_bc_length, heldout_split
from inspo.data import Dataset, generate_matrix, load_dataset, save_dataset


def test_split_is_deterministic_and_keeps_episodes_whole() -> None:
    ds = load_dataset("bridge_mix", verify=False)
    train, held = heldout_split(ds.episode_start, 10)
    again = heldout_split(np.array(ds.episode_start), 10)
    assert np.array_equal(train, again[0]) and np.array_equal(held, again[1])
    episode = np.cumsum(ds.episode_start) - 1
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(ds)))
    assert set(np.unique(episode[held]).tolist()) == set(range(9, ds.n_episodes, 10))
    assert not set(episode[train].tolist()) & set(episode[held].tolist())  # no episode on both sides
    assert np.unique(episode[held]).size == ds.n_episodes // 10


def test_split_errors() -> None:
    with pytest.raises(ValueError, match="has 3 episodes; holding out every 10th needs at least 10"):
        heldout_split(np.array([True, False, True, True]), 10)
    with pytest.raises(ValueError, match="start with True"):
        heldout_split(np.array([False, True]), 2)


def _xor_with_known_minimum(tmp_path: Path) -> Path:
    """20 one-step XOR episodes, every 2nd held out: the 10 training ones all play (A, A); of the 10 held-out ones,
    9 play (A, A) and 1 (B, B). Cloning drives p(A) from 1/2 towards 1, so each agent's held-out NLL
    -(0.9 log p + 0.1 log(1 - p)) falls to its minimum, the entropy H(0.9) at p = 0.9, then rises."""
    pool = generate_matrix("xor", [[1, 0], [0, 1]], 64, seed=0)
    aa = int(np.flatnonzero((pool.actions == 0).all(axis=1))[0])
    bb = int(np.flatnonzero((pool.actions == 1).all(axis=1))[0])
    rows = [bb if k == 19 else aa for k in range(20)]
    arrays = {name: np.asarray(value)[rows] for name, value in pool.arrays().items()}
    from inspo.envs import make

    ds = Dataset.create(arrays, make("xor"), behaviour="test: known held-out minimum", seed=None, source="test")
    return save_dataset(ds, tmp_path / "xor_known")


def test_length_is_the_argmin_of_the_heldout_curve_and_stops_by_patience(tmp_path: Path) -> None:
    path = _xor_with_known_minimum(tmp_path)
    found = heldout_bc_length(path, hidden=8, lr=1e-2, batch_size=16, max_steps=2000, every=5, patience=3,
                              rel_tol=0.0, heldout_every=2, seed=0)
    steps, values = zip(*found.curve)
    best = int(np.argmin(values))
    assert found.steps == steps[best] and found.heldout_nll == values[best]
    assert 0 < found.steps < found.last_step < 2000 and found.stopped == "patience"
    # Stopped at the first evaluation that made `patience` in a row without a new minimum.
    assert found.last_step == found.steps + 3 * 5 and steps[-1] == found.last_step
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert entropy <= found.heldout_nll < entropy + 0.01  # the known minimum, up to the evaluation grid
    assert (found.train_episodes, found.heldout_episodes, found.heldout_rows) == (10, 10, 10)
    assert found.dataset_sha256 == load_dataset(path, verify=False).manifest["manifest_sha256"]
    again = heldout_bc_length(path, hidden=8, lr=1e-2, batch_size=16, max_steps=2000, every=5, patience=3,
                              rel_tol=0.0, heldout_every=2, seed=0)
    assert again.curve == found.curve  # deterministic per seed


def test_a_dataset_in_memory_gives_the_same_curve_as_saved(tmp_path: Path) -> None:
    path = _xor_with_known_minimum(tmp_path)
    saved = heldout_bc_length(path, hidden=8, lr=1e-2, batch_size=16, max_steps=20, every=5, heldout_every=2)
    loaded = heldout_bc_length(load_dataset(path), hidden=8, lr=1e-2, batch_size=16, max_steps=20, every=5,
                               heldout_every=2)
    assert loaded.curve == saved.curve and loaded.dataset_sha256 == saved.dataset_sha256
    fresh = generate_matrix("xor", "xor-uniform", 20, seed=0)
    assert heldout_bc_length(fresh, max_steps=5, every=5, heldout_every=2).dataset_sha256 is None


def test_relative_tolerance_and_cap(tmp_path: Path) -> None:
    path = _xor_with_known_minimum(tmp_path)
    capped = heldout_bc_length(path, hidden=8, lr=1e-2, batch_size=16, max_steps=10, every=5, patience=3,
                               rel_tol=0.0, heldout_every=2)
    assert capped.stopped == "max_steps" and capped.last_step == 10 and [s for s, _ in capped.curve] == [0, 5, 10]
    assert capped.steps == 10  # still improving when the cap came
    # A tolerance no decrease can reach: nothing improves on the untrained policy, which is the length.
    flat = heldout_bc_length(path, hidden=8, lr=1e-2, batch_size=16, max_steps=2000, every=5, patience=2,
                             rel_tol=0.99, heldout_every=2)
    assert (flat.steps, flat.last_step, flat.stopped) == (0, 10, "patience")
    assert flat.heldout_nll == flat.curve[0][1] and min(v for _, v in flat.curve) < flat.heldout_nll


@pytest.mark.parametrize(("change", "message"), [
    ({"every": 0}, "every must be a positive integer, got 0"),
    ({"max_steps": 10, "every": 20}, "every (20) must not exceed max_steps (10)"),
    ({"lr": -1.0}, "lr must be a finite number > 0, got -1.0"),
    ({"rel_tol": 1.5}, "rel_tol must be in [0, 1), got 1.5"),
    ({"heldout_every": 1}, "heldout_every must be an integer >= 2"),
    ({"patience": 2.5}, "patience must be a positive integer, got 2.5"),
])
def test_bad_settings_are_clear_errors(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        BCLengthSettings(**change)


def test_unknown_setting_and_too_few_episodes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown bc-length setting steps"):
        heldout_bc_length("bridge_mix", steps=3)
    small = save_dataset(generate_matrix("xor", "xor-uniform", 5, seed=0), tmp_path / "five")
    with pytest.raises(ValueError, match="has 5 episodes; holding out every 10th"):
        heldout_bc_length(small, max_steps=5, every=5)


def test_cache_is_keyed_by_content_and_settings(tmp_path: Path) -> None:
    path = _xor_with_known_minimum(tmp_path)
    settings = BCLengthSettings(hidden=8, lr=1e-2, batch_size=16, max_steps=20, every=5, heldout_every=2)
    first = cached_bc_length(path, tmp_path / "cache", settings)
    files = list((tmp_path / "cache").glob("*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    saved["bc_length"]["steps"] = -7  # a cached answer is read back, not measured again
    files[0].write_text(json.dumps(saved))
    assert cached_bc_length(path, tmp_path / "cache", settings).steps == -7
    other = cached_bc_length(path, tmp_path / "cache", BCLengthSettings(**{**settings.__dict__, "every": 10}))
    assert other.curve != first.curve and len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_cli_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inspo.cli import main

    path = _xor_with_known_minimum(tmp_path)
    out = tmp_path / "len.json"
    argv = ["datasets", "bc-length", str(path), "--hidden", "8", "--lr", "0.01", "--batch-size", "16",
            "--max-steps", "2000", "--every", "5", "--patience", "3", "--rel-tol", "0", "--heldout-every", "2",
            "--out", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    direct = heldout_bc_length(path, hidden=8, lr=1e-2, batch_size=16, max_steps=2000, every=5, patience=3,
                               rel_tol=0.0, heldout_every=2)
    assert printed == json.loads(out.read_text())
    assert printed["steps"] == direct.steps and printed["curve"] == [list(p) for p in direct.curve]
    with pytest.raises(SystemExit) as exit_:
        main(["datasets", "bc-length", str(path), "--every", "0"])
    assert exit_.value.code == 2
    assert "--every: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["datasets", "bc-length", str(path), "--heldout-every", "30"]) == 2
    assert "has 20 episodes; holding out every 30th needs at least 30" in capsys.readouterr().err


def test_reproduce_rejects_auto_outside_smax(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from inspo.cli import main

    assert main(["reproduce", "matrix", "--bc-steps", "auto", "--out", str(tmp_path)]) == 2
    assert "--bc-steps auto (each dataset's held-out cloning length) is for SMAX" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "smax", "--bc-steps", "often", "--out", str(tmp_path)])
    assert "expected a positive integer or auto, got often" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("jaxmarl") is None,
                    reason="SMAX needs the optional extra: pip install 'inspo[smax]'")
def test_reproduce_smax_auto_trains_every_run_with_the_measured_length(tmp_path: Path) -> None:
    from dataclasses import replace

    from inspo.reproduce.smax import SMAX, reproduce_smax

    suite = replace(SMAX, bc_length=BCLengthSettings(max_steps=6, every=2, patience=2, heldout_every=2))
    out = tmp_path / "res"
    record = reproduce_smax(["3m"], ["random"], [0, 1], 2, "auto", 8, 4, out, suite=suite,
                            command="inspo reproduce smax --bc-steps auto")
    length = record["bc_lengths"]["3m-random"]
    assert record["bc_steps"] == "auto" and length["settings"]["hidden"] == SMAX.settings["hidden"]
    assert (length["train_episodes"], length["heldout_episodes"]) == (4, 4)
    for row in record["rows"]:
        assert row["bc_steps"] == length["steps"] and row["bc_heldout_nll"] == length["heldout_nll"]
    for method in ("bc", "inspo"):
        for seed in (0, 1):
            run = json.loads((out / "cache" / "runs" / "smax" / "3m-random" / method / f"seed{seed}"
                              / "metrics.json").read_text())
            assert run["config"]["bc_steps"] == length["steps"]
    text = (out / "smax.md").read_text()
    assert "| BC steps | BC held-out NLL |" in text
    assert f"| {length['steps']} | {length['heldout_nll']:.4f} |" in text
    assert len(list((out / "cache" / "bc_length").glob("*.json"))) == 1
    again = reproduce_smax(["3m"], ["random"], [0, 1], 2, "auto", 8, 4, out, suite=suite)
    assert again["bc_lengths"] == record["bc_lengths"]  # read from the cache
    with pytest.raises(ValueError, match="bc_steps must be a non-negative integer or 'auto', got 'often'"):
        reproduce_smax(["3m"], ["random"], [0], 2, "often", 8, 4, out, suite=suite)
