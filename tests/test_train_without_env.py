"""Training on a dataset whose environment is not installed here (`inspo train --eval none`), and evaluating the
policy later where it is: the training is the one an evaluating run does, and the evaluation gives its return."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from inspo import checkpoint as ckpt_io
from inspo import envs
from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import generate_uniform, save_dataset
from inspo.data.manifest import manifest_digest
from inspo.tune import tune

ARGS = ["--iters", "6", "--bc-steps", "4", "--batch-size", "16", "--eval-every", "3", "--eval-episodes", "4",
        "--eval-episode-limit", "20", "--seed", "1", "--logger", "none"]
EVALUATE = ["--episodes", "4", "--seed", "1"]  # what the runs' evaluations play
EVALUATION_KEYS = {"return", "return_std", "episode_returns"}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = generate_uniform("bridge-alberdice", episodes=30, seed=0, episode_limit=20)
    return save_dataset(data, tmp_path_factory.mktemp("data") / "bridge")


@pytest.fixture(scope="module")
def reference(bridge: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that evaluates in the installed environment, with the same seed and settings."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", "--dataset", str(bridge), *ARGS, "--out", str(out)]) == 0
    return out


def recorded_elsewhere(src: Path, dst: Path, env_id: str) -> Path:
    """Dataset `src` as if recorded on `env_id` (an environment not installed here): its manifest's environment id
    changed and its digest recomputed."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["env"]["id"] = manifest["env"]["spec"]["name"] = env_id
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# "my-game": unknown here (registered by someone else's program); "smac:3m": known, but oxwhirl/smac is not
# installed (the shared venv holds SMAC3 under the module name smac).
@pytest.mark.parametrize("env_id", ["my-game", "smac:3m"])
def test_eval_none_trains_the_same_policy_without_the_environment(
        env_id: str, bridge: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = recorded_elsewhere(bridge, tmp_path / "data", env_id)
    capsys.readouterr()
    assert main(["train", "--dataset", str(data), *ARGS, "--out", str(tmp_path / "default")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and env_id in err and "--eval none" in err, err
    assert not (tmp_path / "default").exists()

    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), *ARGS, "--eval", "none", "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["final_return"] is None and summary["best_return"] is None
    metrics, ref = read_json(run / "metrics.json"), read_json(reference / "metrics.json")
    assert metrics["evaluated"] is False and ref["evaluated"] is True
    assert metrics["final_return"] is None and metrics["best_return"] is None and metrics["optimum"] is None
    assert metrics["config"]["eval"] == "none" and metrics["env"] == env_id
    # The same points, the same losses, no returns: evaluating never touches the training's randomness.
    assert [row["iteration"] for row in metrics["curve"]] == [row["iteration"] for row in ref["curve"]] == [0, 3, 6]
    for row, ref_row in zip(metrics["curve"], ref["curve"]):
        assert not EVALUATION_KEYS & set(row)
        assert row == {key: value for key, value in ref_row.items() if key not in EVALUATION_KEYS}
    assert (run / "final.pt").is_file() and not (run / "best.pt").exists() and (reference / "best.pt").is_file()
    final, ref_final = ckpt_io.load(run / "final.pt"), ckpt_io.load(reference / "final.pt")
    assert final["env"] == env_id and final["env_options"] == {"episode_limit": 20}
    assert final["policy"].keys() == ref_final["policy"].keys()
    for name, weights in final["policy"].items():
        assert torch.equal(weights, ref_final["policy"][name]), name

    # No returns to report, rank or export: each says so.
    assert main(["report", str(run)]) == 2
    assert "trained without evaluation" in capsys.readouterr().err
    assert main(["report", str(run), "--marl-eval", str(tmp_path / "marl.json")]) == 2
    assert "trained without evaluation" in capsys.readouterr().err
    with pytest.raises(ValueError, match="inspo tune ranks trials by their evaluation returns"):
        tune(TrainConfig.from_dict({**metrics["config"], "out": None}), tmp_path / "tune")

    # Evaluated later, in the environment where it is installed: the reference run's last evaluation.
    assert main(["evaluate", str(run / "final.pt"), "--env", "bridge-alberdice", "--episode-limit", "20",
                 *EVALUATE]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["mean"] == ref["final_return"] == ref["curve"][-1]["return"]


def test_evaluate_defaults_to_the_datasets_environment_once_installed(
        bridge: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = recorded_elsewhere(bridge, tmp_path / "data", "my-game")
    assert main(["train", "--dataset", str(data), *ARGS, "--eval", "none", "--out", str(tmp_path / "run")]) == 0
    final = str(tmp_path / "run" / "final.pt")
    capsys.readouterr()
    assert main(["evaluate", final, *EVALUATE]) == 2
    err = capsys.readouterr().err
    assert "unknown environment 'my-game'" in err and "--env" in err and len(err.strip().splitlines()) == 1
    # Installed: "my-game" plays the bridge (registered for this test only), with the options final.pt recorded.
    monkeypatch.setitem(envs._ENVS, "my-game", lambda **options: envs.make("bridge-alberdice", **options))
    assert main(["evaluate", final, *EVALUATE]) == 0
    assert json.loads(capsys.readouterr().out)["mean"] == read_json(reference / "metrics.json")["final_return"]
    assert main(["evaluate", final, "--env", "xor", *EVALUATE]) == 2
    err = capsys.readouterr().err
    assert "does not fit environment 'xor': obs_dim: policy 8 vs environment 4; n_actions: policy 5" in err, err
