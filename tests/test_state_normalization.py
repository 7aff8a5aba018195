"""``normalize_state``: the global state, which only the critics and mixers read, standardised per feature by the
dataset's own mean and std; training with it does not depend on the scale or offset of the state's features."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import inspo
from _nested import flat_tensors
from inspo import checkpoint
from inspo.config import TrainConfig
from inspo.data import load_dataset, save_dataset
from inspo.population_training import train_population
from inspo.training_data import to_device

pytestmark = pytest.mark.usefixtures("one_thread")

BRIDGE = Path(__file__).resolve().parent.parent / "data" / "bridge_mix"
# Bridge's state: the two agents' positions (small integers), and features that never change. Powers of two and
# integer shifts keep the moved float32 states exact, so that only the normalisation can tell the two apart.
SCALE = np.array([1024.0, 1 / 64, 1.0, 1.0, 256.0, 8.0, 1.0, 1.0], dtype=np.float32)
SHIFT = np.array([7.0, -3.0, 0.0, 0.0, 0.0, 40.0, 5.0, 0.0], dtype=np.float32)
SHORT = {"iters": 30, "bc_steps": 20, "batch_size": 64, "hidden": 16, "eval": "none", "checkpoint_every": 1000,
         "dtype": "float64"}


@pytest.fixture(scope="module")
def bridge() -> inspo.data.Dataset:
    if not BRIDGE.is_dir():
        pytest.skip(f"shipped Bridge dataset not found at {BRIDGE}")
    return load_dataset(BRIDGE)


@pytest.fixture(scope="module")
def rescaled(bridge, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bridge with every state feature (next_state too) multiplied by SCALE and shifted by SHIFT."""
    moved = dataclasses.replace(bridge, state=np.asarray(bridge.state) * SCALE + SHIFT,
                                next_state=np.asarray(bridge.next_state) * SCALE + SHIFT,
                                manifest={k: v for k, v in bridge.manifest.items() if k != "files"})
    return save_dataset(moved, tmp_path_factory.mktemp("rescaled") / "bridge_rescaled")


def test_state_and_next_state_are_standardised_by_the_states_statistics(bridge) -> None:
    raw, raw_next = np.asarray(bridge.state, np.float64), np.asarray(bridge.next_state, np.float64)
    data = to_device(bridge, torch.device("cpu"), torch.float64, normalize_state=True)
    state, next_state = data["state"].numpy(), data["next_state"].numpy()
    varying = raw.std(0) > 0
    assert varying.sum() == 4 and (~varying).sum() == 4
    np.testing.assert_allclose(state[:, varying].mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(state[:, varying].std(0), 1.0, rtol=1e-10)
    assert (state[:, ~varying] == 0).all()  # a constant feature becomes 0, not NaN
    mean, std = raw.mean(0), np.where(varying, raw.std(0), 1.0)
    np.testing.assert_allclose(next_state, (raw_next - mean) / std, rtol=1e-12, atol=1e-12)
    plain = to_device(bridge, torch.device("cpu"), torch.float64)
    assert np.array_equal(plain["state"].numpy(), raw) and np.array_equal(plain["next_state"].numpy(), raw_next)
    assert torch.equal(plain["obs"], data["obs"])  # what the policies read is never touched


def _learner(out: Path) -> list[torch.Tensor]:
    return flat_tensors(checkpoint.load(out / "checkpoint.pt")["learner"])


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=1e-7, atol=1e-9) for x, y in zip(a, b))


@pytest.mark.parametrize("algo", ["cfcql", "inspo", "omiga"])
def test_training_with_normalize_state_ignores_the_states_scale(bridge, rescaled: Path, tmp_path: Path,
                                                                algo: str) -> None:
    runs = {}
    for name, data in (("bridge", BRIDGE), ("rescaled", rescaled)):
        for normalize in (True, False):
            out = tmp_path / f"{name}-{normalize}"
            inspo.train(TrainConfig(dataset=str(data), algo=algo, normalize_state=normalize, out=str(out), **SHORT))
            runs[name, normalize] = _learner(out)
    assert _same(runs["bridge", True], runs["rescaled", True])
    assert not _same(runs["bridge", False], runs["rescaled", False])  # without it the critics see the new scale


def test_population_members_normalize_the_state_as_single_runs_do(rescaled: Path, tmp_path: Path) -> None:
    config = TrainConfig(dataset=str(rescaled), algo="cfcql", normalize_state=True, seeds=[0, 1],
                         out=str(tmp_path / "population"), **SHORT)
    train_population(config)
    single = tmp_path / "single"
    inspo.train(dataclasses.replace(config, seeds=None, seed=1, out=str(single)))
    assert _same(_learner(tmp_path / "population" / "seed_1"), _learner(single))


def test_normalize_state_flag() -> None:
    from inspo.cli import build_parser
    from inspo.config import config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--dataset", "d", "--normalize-state"])).normalize_state
    assert not config_from_args(parser.parse_args(["train", "--dataset", "d"])).normalize_state
