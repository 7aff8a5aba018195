"""Vaults (OG-MARL / flashbax) to and from the dataset format: a round trip, a vault in OG-MARL's own layout written
by flashbax here, the checks of the trusted import, and the CLI through training."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from inspo.cli import main
from inspo.data import DatasetError, generate_matrix, load_dataset
from inspo.data.format import FIELDS

pytest.importorskip("flashbax")
from inspo.data.vault import export_vault, find_vault, import_vault  # noqa: E402


def _write_og_marl_vault(root: Path, experience: dict, uid: str = "Good") -> Path:
    """A vault as OG-MARL writes its SMAC data: `<root>/2s3z.vlt/<uid>`, one stream, no inspo extensions."""
    import jax.numpy as jnp
    from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
    from flashbax.vault import Vault

    steps = experience["actions"].shape[1]
    with contextlib.redirect_stdout(io.StringIO()):
        vault = Vault("2s3z.vlt", experience_structure=experience, rel_dir=str(root), vault_uid=uid)
        vault.write(TrajectoryBufferState(experience=experience, current_index=jnp.array(steps),
                                          is_full=jnp.array(False)))
    return root / "2s3z.vlt"


def _og_marl_experience(rewards_differ: bool = False) -> dict:
    """Two agents, 3 actions, episodes of 3 and 2 steps then 1 step of an unfinished one; agent 1 may only no-op."""
    rng = np.random.default_rng(0)
    t, n = 6, 2
    legals = np.ones((1, t, n, 3), np.float32)
    legals[0, :, 1, 1:] = 0
    actions = np.zeros((1, t, n), np.int32)
    actions[0, :, 0] = [2, 1, 0, 1, 2, 0]
    rewards = np.repeat(np.arange(t, dtype=np.float32)[None, :, None], n, axis=2)
    if rewards_differ:
        rewards[0, 1, 1] += 1
    terminals = np.zeros((1, t, n), np.float32)
    terminals[0, 2] = 1
    truncations = np.zeros((1, t, n), np.float32)
    truncations[0, 4] = 1
    return {"observations": rng.random((1, t, n, 4), dtype=np.float32), "actions": actions, "rewards": rewards,
            "terminals": terminals, "truncations": truncations,
            "infos": {"legals": legals, "state": rng.random((1, t, 5), dtype=np.float32)}}


def test_export_then_import_gives_the_dataset_back(tmp_path: Path) -> None:
    ds = generate_matrix("mne", "mne-imbalanced", episodes=12, seed=3, episode_limit=3)
    folder = export_vault(ds, tmp_path / "mne.vlt", uid="imbalanced")
    assert find_vault(tmp_path / "mne.vlt") == folder
    back = import_vault(tmp_path / "mne.vlt", "mne")
    for name in FIELDS:
        assert np.array_equal(getattr(back, name), getattr(ds, name)), name
        assert getattr(back, name).dtype == getattr(ds, name).dtype, name
    assert back.manifest["env"] == ds.manifest["env"]
    assert back.manifest["returns"] == ds.manifest["returns"] and back.manifest["seed"] == 3
    assert back.manifest["behaviour"]["original"] == ds.manifest["behaviour"]
    assert len(back.manifest["behaviour"]["sha256"]) == 64
    with pytest.raises(FileExistsError, match="overwrite"):
        export_vault(ds, tmp_path / "mne.vlt", uid="imbalanced")
    export_vault(ds, tmp_path / "mne.vlt", uid="imbalanced", overwrite=True)


def test_og_marl_layout_imports_without_the_environment(tmp_path: Path) -> None:
    vault = _write_og_marl_vault(tmp_path, _og_marl_experience())
    ds = import_vault(vault, "smac:2s3z")  # StarCraft II is absent: the data describe the environment
    assert ds.env_info.__dict__ == {"name": "smac:2s3z", "n_agents": 2, "obs_dim": 4, "state_dim": 5,
                                    "n_actions": 3, "episode_limit": 3}
    assert len(ds) == 5 and ds.n_episodes == 2  # the unfinished sixth step is left out, and counted
    assert ds.manifest["behaviour"]["dropped_incomplete_steps"] == 1
    assert ds.terminated.tolist() == [False, False, True, False, False]
    assert ds.truncated.tolist() == [False, False, False, False, True]
    assert ds.reward.tolist() == [0, 1, 2, 3, 4]  # the shared team reward, once
    assert np.array_equal(ds.next_obs[:2], ds.obs[1:3]) and np.array_equal(ds.next_obs[2], ds.obs[2])
    assert ds.avail[:, 1].tolist() == [[True, False, False]] * 5
    assert import_vault(vault, "smac:2s3z", episode_limit=120).env_info.episode_limit == 120


def test_trusted_import_refuses_what_does_not_fit(tmp_path: Path) -> None:
    differ = _write_og_marl_vault(tmp_path / "a", _og_marl_experience(rewards_differ=True))
    with pytest.raises(DatasetError, match="rewards differ at stream 0, step 1"):
        import_vault(differ, "smac:2s3z")
    assert import_vault(differ, "smac:2s3z", reward="sum").reward[1] == 3
    illegal = _og_marl_experience()
    illegal["actions"][0, 3, 1] = 2
    with pytest.raises(DatasetError, match="unavailable"):
        import_vault(_write_og_marl_vault(tmp_path / "b", illegal), "smac:2s3z")
    flags = _og_marl_experience()
    flags["terminals"][0, 0, 0] = 0.5
    with pytest.raises(DatasetError, match="terminals.*only 0 and 1"):
        import_vault(_write_og_marl_vault(tmp_path / "c", flags), "smac:2s3z")
    with pytest.raises(DatasetError, match="n_actions: vault 3 vs environment 2"):
        import_vault(_write_og_marl_vault(tmp_path / "d", _og_marl_experience()), "xor")
    two = _write_og_marl_vault(tmp_path / "e", _og_marl_experience(), uid="Poor")
    _write_og_marl_vault(tmp_path / "e", _og_marl_experience(), uid="Good")
    with pytest.raises(ValueError, match=r"\['Good', 'Poor'\]"):
        import_vault(two, "smac:2s3z")
    assert import_vault(two, "smac:2s3z", uid="Poor").manifest["behaviour"]["uid"] == "Poor"


def test_cli_import_export_and_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = generate_matrix("xor", "xor-uniform", episodes=40, seed=0)
    from inspo.data import save_dataset

    save_dataset(ds, tmp_path / "xor")
    assert main(["datasets", "export", str(tmp_path / "xor"), "--format", "vault", "--out",
                 str(tmp_path / "xor.vlt")]) == 0
    capsys.readouterr()
    assert main(["datasets", "import", str(tmp_path / "xor.vlt"), "--format", "vault", "--env", "xor",
                 "--out", str(tmp_path / "back")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["behaviour"]["kind"] == "vault-import"
    back = load_dataset(tmp_path / "back", env="xor")
    assert np.array_equal(back.actions, ds.actions)
    assert main(["train", "--dataset", str(tmp_path / "back"), "--iters", "4", "--bc-steps", "2",
                 "--batch-size", "8", "--eval-every", "4", "--eval-episodes", "2", "--out", str(tmp_path / "run")]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["final_return"])
