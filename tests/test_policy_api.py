"""A policy you can call (TrainResult.policy, inspo.load_policy) and checkpoints that plain torch.load reads."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import inspo
from inspo import checkpoint
from inspo.data import generate_matrix, save_dataset

SMAX_POLICIES = Path(__file__).resolve().parent.parent / "data" / "smax_policies"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> inspo.TrainResult:
    data = save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 200, seed=0), tmp_path_factory.mktemp("d") / "xor")
    return inspo.train(inspo.TrainConfig(dataset=str(data), bc_steps=20, iters=20, batch_size=32, hidden=16,
                                         eval_every=20, eval_episodes=2))  # out=None: nothing written


def test_a_policy_acts_from_the_train_result(result: inspo.TrainResult) -> None:
    policy = result.policy
    assert policy is not None and result.checkpoint is None and policy.env == "xor"
    obs = np.ones((2, policy.network.nets.in_features), dtype=np.float32)
    only_second = np.array([[False, True], [False, True]])
    actions = policy.act(obs, only_second)
    assert isinstance(actions, np.ndarray) and actions.shape == (2,) and (actions == 1).all()
    batch = torch.ones(5, 2, obs.shape[1])
    first = torch.tensor([[True, False]] * 2).expand(5, 2, 2)
    acted = policy.act(batch, first, greedy=True)
    assert isinstance(acted, torch.Tensor) and acted.shape == (5, 2) and (acted == 0).all()
    sampled = policy.act(batch)
    assert sampled.dtype == torch.int64 and set(sampled.flatten().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match=r"obs must have shape \[n_agents=2"):
        policy.act(np.ones((3, obs.shape[1])))


def test_load_policy_is_public_and_acts_like_the_result(result: inspo.TrainResult, tmp_path: Path) -> None:
    path = tmp_path / "final.pt"
    checkpoint.save(result.policy.checkpoint, path)
    loaded = inspo.load_policy(path)
    obs = np.zeros((7, 2, loaded.network.nets.in_features), dtype=np.float32)
    np.testing.assert_array_equal(loaded.act(obs, greedy=True), result.policy.act(obs, greedy=True))


def test_plain_torch_load_reads_a_checkpoint(result: inspo.TrainResult, tmp_path: Path) -> None:
    path = tmp_path / "final.pt"
    checkpoint.save(result.policy.checkpoint, path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "inspo-checkpoint" and raw["version"] == 2
    weights = raw["state"]["policy"]
    for name, tensor in result.policy.network.state_dict().items():
        torch.testing.assert_close(weights[name], tensor)
    # An altered value fails the digest.
    raw["state"]["policy"][name] = tensor + 1
    buf = io.BytesIO()
    torch.save(raw, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(checkpoint.CheckpointError, match="corrupted or truncated: the digest"):
        checkpoint.load(path)


def test_version_1_checkpoints_still_load(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, buf)
    path = tmp_path / "old.pt"
    path.write_bytes(b"inspo-checkpoint sha256=" + hashlib.sha256(buf.getvalue()).hexdigest().encode() + b"\n"
                     + buf.getvalue())
    torch.testing.assert_close(checkpoint.load(path)["w"], torch.arange(3.0))
    # The shipped SMAX snapshots are version 1 files whose digests snapshots.json records: never rewritten.
    for index in sorted(SMAX_POLICIES.glob("*/snapshots.json"))[:1]:
        snap = json.loads(index.read_text())["snapshots"][0]
        file = index.parent / snap["file"]
        assert file.read_bytes().startswith(b"inspo-checkpoint sha256=")
        assert hashlib.sha256(file.read_bytes()).hexdigest() == snap["sha256"]
        assert inspo.load_policy(file).env.startswith("smax:")
