"""Datasets: PyMARL import of the public data, save/load round trip, generators, and every refusal."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inspo.data import (
    FIELDS,
    MATRIX_PRESETS,
    Dataset,
    DatasetError,
    dataset_digest,
    generate_matrix,
    import_pymarl,
    load_dataset,
    save_dataset,
)
from inspo.data.format import manifest_digest
from inspo.envs import make
from inspo.envs.bridge import bridge_optimum


def _same_data(a: Dataset, b: Dataset) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def _without_files(manifest) -> dict:
    return {key: value for key, value in manifest.items() if key not in ("files", "manifest_sha256")}


def _hashes(path: Path) -> dict[str, str]:
    files = json.loads((path / "manifest.json").read_text())["files"]
    return {name: entry["sha256"] for name, entry in files.items()}


def _rebuild(ds: Dataset, **changes: np.ndarray) -> Dataset:
    """`ds` with some arrays replaced, not verified (to build broken datasets)."""
    arrays = {name: np.array(array) for name, array in ds.arrays().items()}
    arrays.update(changes)
    return Dataset.create(
        arrays, make(ds.env_info.name, **ds.manifest["env"]["options"]), behaviour=ds.manifest["behaviour"],
        seed=ds.manifest["seed"], source="test", verify=False,
    )


@pytest.fixture()
def small() -> Dataset:
    return generate_matrix("xor", "xor-uniform", episodes=20, seed=3)


@pytest.fixture()
def saved(small: Dataset, tmp_path: Path) -> Path:
    return save_dataset(small, tmp_path / "xor")


# ---------------------------------------------------------------- PyMARL import


def test_import_bridge_optimal(shared_data: Path) -> None:
    ds = import_pymarl(shared_data / "bridge_optimal", "bridge-alberdice")
    assert (ds.n_episodes, len(ds), ds.n_agents, ds.n_actions) == (500, 4000, 2, 5)
    assert ds.env_info == make("bridge-alberdice").info
    # Every optimal episode finishes the task: terminated, never truncated.
    assert ds.terminated.sum() == 500 and not ds.truncated.any()
    returns = ds.episode_returns()
    assert round(float(returns.mean()), 3) == -1.262 == round(ds.manifest["returns"]["mean"], 3)
    assert returns.max() == pytest.approx(bridge_optimum(20), abs=1e-6)
    assert ds.manifest["seed"] is None and "bridge_optimal" in ds.manifest["source"]
    ds.validate("bridge-alberdice")


def test_import_bridge_mix_recovers_truncation(shared_data: Path) -> None:
    ds = import_pymarl(shared_data / "bridge_mix", "bridge-alberdice")
    assert ds.n_episodes == 1000
    lengths = np.diff(np.append(np.flatnonzero(ds.episode_start), len(ds)))
    ends = np.flatnonzero(ds.terminated | ds.truncated)
    # The buffer flags all 1000 ends as terminated; those at the 50-step limit without both agents home are
    # time-outs.
    assert (ds.truncated[ends] == (lengths == 50)).all()
    assert ds.truncated.sum() == 491 and ds.terminated.sum() == 509
    # next_* come from the following slot, including the buffer's final observation slot.
    raw_state = np.load(shared_data / "bridge_mix" / "state.npy")
    np.testing.assert_array_equal(ds.next_state[ends[0]], raw_state[0, lengths[0]])
    assert ds.reward[ends].max() == 0.0  # the step that ends an episode scores 0


@pytest.mark.parametrize(("name", "joint"), [("xor_02", {1}), ("xor_02_20", {1, 2}), ("xor_00_02_20", {0, 1, 2})])
def test_import_xor(shared_data: Path, name: str, joint: set[int]) -> None:
    ds = import_pymarl(shared_data / name, "xor")
    assert ds.env_info.episode_limit == 50 and (ds.n_episodes, len(ds)) == (100, 5000)
    assert set((ds.actions[:, 0] * 2 + ds.actions[:, 1]).tolist()) == joint


def _copy_buffer(shared_data: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "buffers"
    shutil.copytree(shared_data / name, dst / name)
    shutil.copy(shared_data / "SHA256SUMS", dst / "SHA256SUMS")
    return dst / name


def test_import_refuses_checksum_mismatch(shared_data: Path, tmp_path: Path) -> None:
    src = _copy_buffer(shared_data, tmp_path, "xor_02")
    reward = np.load(src / "reward.npy")
    reward[0, 0, 0] = 5.0
    np.save(src / "reward.npy", reward)
    with pytest.raises(DatasetError, match=r"checksum mismatch for .*xor_02/reward\.npy"):
        import_pymarl(src, "xor")
    # Without the checksum the replay still catches the edit.
    with pytest.raises(DatasetError, match=r"episode 0: recorded reward at slot 0 is 5\.0, but xor gives 1\.0"):
        import_pymarl(src, "xor", verify_checksums=False)


def test_import_refuses_wrong_env(shared_data: Path) -> None:
    with pytest.raises(DatasetError, match=r"obs\.npy has shape \(100, 51, 2, 4\), expected \(100, 51, 2, 8\)"):
        import_pymarl(shared_data / "xor_02", "bridge-alberdice")
    with pytest.raises(DatasetError, match=r"step limit of 50 .* environment has episode_limit 20"):
        import_pymarl(shared_data / "bridge_optimal", make("bridge-alberdice", episode_limit=20))


# ---------------------------------------------------------------- save / load


def test_round_trip(small: Dataset, saved: Path) -> None:
    loaded = load_dataset(saved, env="xor")
    _same_data(small, loaded)
    assert _without_files(loaded.manifest) == dict(small.manifest)
    assert set(loaded.manifest["files"]) == {f"{name}.npy" for name in FIELDS}
    assert isinstance(loaded.obs, np.memmap) and not loaded.obs.flags.writeable
    assert len(loaded) == 20 and loaded.n_episodes == 20 and loaded.n_agents == 2 and loaded.n_actions == 2
    np.testing.assert_array_equal(loaded.episode_returns(), small.reward)
    manifest = loaded.manifest
    assert manifest["counts"] == {"transitions": 20, "episodes": 20}
    assert manifest["env"] == {"id": "xor", "options": {"episode_limit": 1}, "spec": {
        "name": "xor", "n_agents": 2, "obs_dim": 4, "state_dim": 4, "n_actions": 2, "episode_limit": 1}}
    assert set(manifest["returns"]) == {"mean", "std", "min", "max"}
    entry = manifest["files"]["obs.npy"]
    assert entry["shape"] == [20, 2, 4] and entry["dtype"] == "<f4"
    assert entry["bytes"] == (saved / "obs.npy").stat().st_size


def test_dataset_digest_keys_the_content(small: Dataset, saved: Path, tmp_path: Path) -> None:
    assert dataset_digest(saved) == load_dataset(saved).manifest["manifest_sha256"] == manifest_digest(
        json.loads((saved / "manifest.json").read_text()))
    assert dataset_digest(save_dataset(small, tmp_path / "again")) == dataset_digest(saved)
    other = generate_matrix("xor", "xor-uniform", episodes=20, seed=4)
    assert dataset_digest(save_dataset(other, tmp_path / "other")) != dataset_digest(saved)
    with pytest.raises(DatasetError, match="manifest.json is missing"):
        dataset_digest(tmp_path)


def test_round_trip_imported_bridge(shared_data: Path, tmp_path: Path) -> None:
    ds = import_pymarl(shared_data / "bridge_mix", "bridge-alberdice")
    loaded = load_dataset(save_dataset(ds, tmp_path / "bridge"), env=make("bridge-alberdice", episode_limit=20))
    _same_data(ds, loaded)


def test_save_refuses_existing_directory(small: Dataset, saved: Path) -> None:
    with pytest.raises(FileExistsError, match=r"already exists and is not empty; pass overwrite=True"):
        save_dataset(small, saved)
    other = generate_matrix("xor", "xor-ab-ba", episodes=5, seed=0)
    save_dataset(other, saved, overwrite=True)
    assert len(load_dataset(saved)) == 5
    assert sorted(p.name for p in saved.parent.iterdir()) == ["xor"]  # no temporary directories left behind


def test_save_into_empty_directory(small: Dataset, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert len(load_dataset(save_dataset(small, tmp_path / "empty"))) == 20


def test_load_refuses_corrupted_byte(saved: Path) -> None:
    file = saved / "reward.npy"
    raw = bytearray(file.read_bytes())
    raw[-1] ^= 0xFF
    file.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"checksum mismatch for .*reward\.npy"):
        load_dataset(saved)


def _rewrite_manifest(path: Path, manifest: dict) -> None:
    """Edit a manifest the way a careful forger would: consistently, with a fresh self-checksum."""
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_load_refuses_edited_manifest(saved: Path) -> None:
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["source"] = "somewhere else"
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"manifest\.json was modified after it was written"):
        load_dataset(saved, verify=False)


def test_load_refuses_truncated_file(saved: Path) -> None:
    file = saved / "next_obs.npy"
    file.write_bytes(file.read_bytes()[:-16])
    with pytest.raises(DatasetError, match=r"next_obs\.npy has \d+ bytes, the manifest says \d+ \(truncated"):
        load_dataset(saved, verify=False)
    # Also when the manifest was edited to agree with the short file: the .npy header gives it away.
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["next_obs.npy"]["bytes"] = file.stat().st_size
    _rewrite_manifest(saved, manifest)
    with pytest.raises(DatasetError, match=r"next_obs\.npy is truncated: \d+ bytes, its header implies \d+"):
        load_dataset(saved)


def test_load_refuses_missing_file(saved: Path) -> None:
    (saved / "avail.npy").unlink()
    with pytest.raises(DatasetError, match=r"dataset file .*avail\.npy is missing"):
        load_dataset(saved)


def test_load_refuses_missing_or_broken_manifest(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset directory .*nowhere does not exist"):
        load_dataset(tmp_path / "nowhere")
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"manifest\.json is not valid JSON"):
        load_dataset(saved)
    (saved / "manifest.json").unlink()
    with pytest.raises(DatasetError, match=r"manifest\.json is missing"):
        load_dataset(saved)


def test_load_refuses_shape_or_dtype_change(saved: Path) -> None:
    np.save(saved / "actions.npy", np.zeros((20, 2), dtype=np.int32))
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["actions.npy"]["bytes"] = (saved / "actions.npy").stat().st_size
    _rewrite_manifest(saved, manifest)
    with pytest.raises(DatasetError, match=r"actions\.npy holds <i4 \[20, 2\], the manifest says <i8 \[20, 2\]"):
        load_dataset(saved)


def test_load_refuses_other_env(saved: Path) -> None:
    with pytest.raises(DatasetError, match=r"recorded on environment 'xor', not on 'mne'"):
        load_dataset(saved, env="mne")
    with pytest.raises(DatasetError, match=r"recorded on 'xor' does not match environment 'bridge-alberdice': "
                                           r"name: .*obs_dim: dataset 4 vs environment 8"):
        load_dataset(saved, env=make("bridge-alberdice"))
    # The step limit may differ: data are often collected with a longer limit than evaluation uses.
    load_dataset(saved, env=make("xor", episode_limit=7))


def test_unavailable_action_refused(small: Dataset, tmp_path: Path) -> None:
    avail = np.array(small.avail)
    avail[3, 1, small.actions[3, 1]] = False
    bad = _rebuild(small, avail=avail)
    message = rf"field 'actions' at index \(3, 1\): action {small.actions[3, 1]} is unavailable"
    with pytest.raises(DatasetError, match=message):
        save_dataset(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    save_dataset(bad, tmp_path / "bad", verify=False)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / "bad")


def test_nan_reward_refused(small: Dataset, tmp_path: Path) -> None:
    reward = np.array(small.reward)
    reward[5] = np.nan
    bad = _rebuild(small, reward=reward)
    with pytest.raises(DatasetError, match=r"field 'reward' has a non-finite value nan at index \(5,\)"):
        save_dataset(bad, tmp_path / "bad")
    save_dataset(bad, tmp_path / "bad", verify=False)
    with pytest.raises(DatasetError, match=r"field 'reward' has a non-finite value nan at index \(5,\)"):
        load_dataset(tmp_path / "bad")
    assert len(load_dataset(tmp_path / "bad", verify=False)) == 20  # content checks are what verify adds


def test_out_of_range_action_refused(small: Dataset) -> None:
    actions = np.array(small.actions)
    actions[7, 0] = 2
    with pytest.raises(DatasetError, match=r"field 'actions' at index \(7, 0\): action 2 is out of range \[0, 2\)"):
        _rebuild(small, actions=actions).validate()


def test_episode_boundaries_checked() -> None:
    ds = generate_matrix("xor", "xor-uniform", episodes=4, seed=0, episode_limit=3)
    start = np.array(ds.episode_start)
    start[4] = True
    with pytest.raises(DatasetError, match=r"episode boundaries inconsistent at index 3: terminated or truncated "
                                           r"is False but 'episode_start' at index 4 is True"):
        _rebuild(ds, episode_start=start).validate()
    next_state = np.array(ds.next_state)
    next_state[1, 0] = 7.0
    with pytest.raises(DatasetError, match=r"field 'next_state' at index 1 differs from 'state' at index 2"):
        _rebuild(ds, next_state=next_state).validate()
    terminated = np.array(ds.terminated)
    terminated[-1] = False
    with pytest.raises(DatasetError, match=r"the last episode is incomplete"):
        _rebuild(ds, terminated=terminated).validate()


def test_wrong_dtype_or_shape_refused(small: Dataset) -> None:
    with pytest.raises(DatasetError, match=r"field 'state' has shape \(20, 3\), expected \(20, 4\)"):
        Dataset(**{**small.arrays(), "state": np.zeros((20, 3), np.float32)}, manifest=small.manifest).validate()
    with pytest.raises(DatasetError, match=r"field 'terminated' has dtype uint8, expected bool"):
        Dataset(**{**small.arrays(), "terminated": np.ones(20, np.uint8)}, manifest=small.manifest).validate()
    with pytest.raises(DatasetError, match=r"field 'actions' must hold integers or booleans, got dtype float64"):
        _rebuild(small, actions=small.actions + 0.5)
    with pytest.raises(DatasetError, match=r"missing \['next_obs'\], unexpected \['nxt_obs'\]"):
        arrays = small.arrays()
        arrays["nxt_obs"] = arrays.pop("next_obs")
        Dataset.create(arrays, make("xor"), behaviour="test", seed=None, source="test")


# ---------------------------------------------------------------- generators


def test_generate_deterministic_per_seed(tmp_path: Path) -> None:
    paths = [
        save_dataset(generate_matrix("mne", "mne-imbalanced", episodes=200, seed=seed), tmp_path / f"{i}")
        for i, seed in enumerate((1, 1, 2))
    ]
    same, also_same, other = (_hashes(p) for p in paths)
    assert same == also_same
    assert same["actions.npy"] != other["actions.npy"] and same["reward.npy"] != other["reward.npy"]


def test_generate_mne_imbalanced_distribution() -> None:
    ds = generate_matrix("mne", "mne-imbalanced", episodes=8900, seed=0)
    counts = np.bincount(ds.actions[:, 0] * 3 + ds.actions[:, 1], minlength=9)
    expected = np.array([2, 1, 1, 1, 1, 1, 1, 1, 80]) * 100
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 5)
    assert ds.terminated.all() and not ds.truncated.any() and ds.episode_start.all()
    np.testing.assert_array_equal(ds.reward, make("mne").payoff[ds.actions[:, 0], ds.actions[:, 1]])
    assert ds.manifest["behaviour"]["preset"] == "mne-imbalanced" and ds.manifest["seed"] == 0
    assert sum(map(sum, MATRIX_PRESETS["mne-imbalanced"][1])) == 89


def test_generate_with_explicit_probs() -> None:
    ds = generate_matrix("xor", [[1, 1], [1, 0]], episodes=300, seed=0)
    joint = set((ds.actions[:, 0] * 2 + ds.actions[:, 1]).tolist())
    assert joint == {0, 1, 2}
    np.testing.assert_allclose(ds.manifest["behaviour"]["probs"], [[1 / 3, 1 / 3], [1 / 3, 0]])


def test_generate_refusals() -> None:
    with pytest.raises(ValueError, match=r"preset 'mne-balanced' is for environment 'mne', not 'xor'"):
        generate_matrix("xor", "mne-balanced", episodes=1, seed=0)
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; known: xor-uniform"):
        generate_matrix("xor", "nope", episodes=1, seed=0)
    with pytest.raises(ValueError, match=r"probs for 'mne' must have shape \(3, 3\), got \(2, 2\)"):
        generate_matrix("mne", [[1, 0], [0, 1]], episodes=1, seed=0)
    with pytest.raises(ValueError, match=r"probs must be finite, non-negative and not all zero"):
        generate_matrix("xor", [[1, -1], [0, 1]], episodes=1, seed=0)
    with pytest.raises(ValueError, match=r"episodes must be a positive integer, got 0"):
        generate_matrix("xor", "xor-uniform", episodes=0, seed=0)
