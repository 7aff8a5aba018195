"""SMAX online training (MAPPO, `inspo.online`), the data qualities it feeds (medium, expert, medium-replay, mixed)
and `inspo reproduce smax`, at toy scale on 3m (the compiled SMAX functions are shared with tests/test_smax.py
through the module-level cache of `inspo.envs.smax`)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from inspo.config import TrainConfig
from inspo.data import load_dataset, save_dataset

MAP = "smax:3m"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("jaxmarl") is None,
                                reason="SMAX needs the optional extra: pip install 'inspo[smax]'")


def _tiny(seed: int = 0, **changes: object):
    from inspo.online import OnlineConfig

    # 8 parallel episodes (a batch size SMAXEnv.rollout compiles anyway), 4 updates of 8 steps, a snapshot every 2.
    values = dict(env=MAP, steps=8 * 8 * 4, seed=seed, num_envs=8, rollout=8, minibatches=2, epochs=2, hidden=16,
                  snapshot_every=2, eval_episodes=8)
    values.update(changes)
    return OnlineConfig(**values)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny online run on 3m: snapshots at updates 0, 2 and 4."""
    from inspo.online import train_online

    out = tmp_path_factory.mktemp("online") / "3m"
    train_online(_tiny(), out)
    return out


def _weights(path: Path) -> list[torch.Tensor]:
    from inspo.policy import load_policy

    policy = load_policy(path).network
    return [p.detach().clone() for p in policy.parameters()]


def test_online_training_runs_and_is_deterministic(policy_dir: Path, tmp_path: Path) -> None:
    from inspo.online import train_online
    from inspo.policy import load_snapshots

    meta = load_snapshots(policy_dir)
    snaps = meta["snapshots"]
    assert [s["update"] for s in snaps] == [0, 2, 4]
    for s in snaps[1:]:
        assert all(math.isfinite(s[k]) for k in ("policy_loss", "value_loss", "entropy", "approx_kl"))
        assert 0.0 <= s["win_rate"] <= 1.0 and s["eval_episodes"] == 8
    first, last = _weights(policy_dir / snaps[0]["file"]), _weights(policy_dir / snaps[-1]["file"])
    assert any(not torch.equal(a, b) for a, b in zip(first, last))  # the policy changed
    assert all(torch.equal(a, b) for a, b in zip(_weights(policy_dir / "policy.pt"), last))  # the expert
    # Same seed, same snapshots; another seed, other parameters.
    again = train_online(_tiny(), tmp_path / "again")
    drop = ("wall_time", "sha256")
    assert [{k: v for k, v in s.items() if k not in drop} for s in again.snapshots] == \
        [{k: v for k, v in s.items() if k not in drop} for s in snaps]
    assert all(torch.equal(a, b) for a, b in zip(_weights(tmp_path / "again" / "policy.pt"), last))
    other = train_online(_tiny(seed=1))
    assert other.out is None and other.snapshots[-1]["update"] == 4


def test_mappo_options_change_training_and_stay_deterministic(policy_dir: Path, tmp_path: Path) -> None:
    from inspo.online import train_online
    from inspo.policy import load_snapshots

    options = dict(agent_state=True, value_norm=True, anneal_lr=True)
    first = train_online(_tiny(**options), tmp_path / "a")
    again = train_online(_tiny(**options), tmp_path / "b")
    last = _weights(tmp_path / "a" / "policy.pt")
    assert all(torch.equal(x, y) for x, y in zip(last, _weights(tmp_path / "b" / "policy.pt")))
    assert [s["return"] for s in first.snapshots] == [s["return"] for s in again.snapshots]
    default = _weights(policy_dir / "policy.pt")
    assert any(not torch.equal(x, y) for x, y in zip(last, default))
    assert all(math.isfinite(s["value_loss"]) for s in first.snapshots[1:])
    assert load_snapshots(tmp_path / "a")["config"] | options == load_snapshots(tmp_path / "a")["config"]


def test_separate_clip_clips_actor_and_critic_apart(tmp_path: Path) -> None:
    # Under a bound no gradient reaches the two rules are one; under a bound every gradient exceeds they differ.
    from inspo.online import train_online

    def weights(name: str, **changes: object) -> list[torch.Tensor]:
        run = train_online(_tiny(**changes), tmp_path / name)
        assert all(s["actor_grad_norm"] > 0 and s["critic_grad_norm"] > 0 for s in run.snapshots[1:])
        return _weights(tmp_path / name / "policy.pt")

    loose = [weights(f"loose_{v}", max_grad_norm=1e9, separate_clip=v) for v in (False, True)]
    assert all(torch.equal(x, y) for x, y in zip(*loose))
    tight = [weights(f"tight_{v}", max_grad_norm=1e-3, separate_clip=v) for v in (False, True)]
    assert any(not torch.equal(x, y) for x, y in zip(*tight))


@pytest.mark.parametrize("recurrent", [False, True])
def test_orthogonal_init_gives_jaxmarls_starting_weights(recurrent: bool) -> None:
    from inspo.algos.networks import AgentPolicies, RecurrentPolicies
    from inspo.online import _orthogonal_init
    from inspo.online_critics import Critic, RecurrentCritic

    torch.manual_seed(0)
    n, obs_dim, n_actions, hidden = 3, 5, 4, 8
    actor = (RecurrentPolicies(n, obs_dim, n_actions, hidden) if recurrent
             else AgentPolicies(n, obs_dim, n_actions, hidden, shared=True))
    critic = (RecurrentCritic if recurrent else Critic)(n, obs_dim, 6, hidden, agent_state=True)
    _orthogonal_init(actor, critic)

    def gram(w: torch.Tensor) -> torch.Tensor:  # W W^T of a wide matrix, W^T W of a tall one
        w = w.reshape(-1, w.shape[-1])
        return w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w

    def eye(w: torch.Tensor) -> torch.Tensor:
        return torch.eye(min(w.reshape(-1, w.shape[-1]).shape))

    weights = dict(actor.named_parameters())
    actor_weights = [w for name, w in weights.items() if "weight" in name]
    assert torch.allclose(gram(actor_weights[-1]), 1e-4 * eye(actor_weights[-1]), atol=1e-9)  # gain 0.01
    assert torch.allclose(gram(actor_weights[0]), 2 * eye(actor_weights[0]), atol=1e-5)  # sqrt(2)
    if recurrent:
        assert torch.allclose(gram(weights["fc.weight"]), 4 * eye(weights["fc.weight"]), atol=1e-5)  # gain 2
        for gate in weights["gru.weight_hh"].view(3, hidden, hidden):
            assert torch.allclose(gate @ gate.T, torch.eye(hidden), atol=1e-5)
        std = float(weights["gru.weight_ih"].detach().std())
        assert 0.5 * hidden ** -0.5 < std < 1.5 * hidden ** -0.5  # LeCun: variance 1 / fan_in
    value_out = critic.out.weight if recurrent else critic.net[-1].weight
    assert torch.allclose(value_out.norm(), torch.tensor(1.0))  # gain 1
    if recurrent:  # the critic's layer after its GRU: gain 2, as the actor's
        assert torch.allclose(gram(critic.fc.weight), 4 * eye(critic.fc.weight), atol=1e-5)
    assert not any(p.detach().any() for net in (actor, critic)
               for name, p in net.named_parameters() if "bias" in name)


def test_clip_value_changes_the_critics_steps(tmp_path: Path) -> None:
    # With a tiny clip the clipped value stays at the rollout's, so the critic's loss, hence the weights, differ.
    from inspo.online import train_online

    runs = [train_online(_tiny(clip=1e-4, clip_value=v), tmp_path / str(v)) for v in (False, True)]
    assert all(math.isfinite(s["value_loss"]) for run in runs for s in run.snapshots[1:])
    plain, clipped = (_weights(tmp_path / str(v) / "policy.pt") for v in (False, True))
    assert any(not torch.equal(x, y) for x, y in zip(plain, clipped))


def test_annealed_learning_rate_starts_at_lr(tmp_path: Path) -> None:
    # One update runs at the full rate, so annealing changes nothing; over four, the later updates are smaller.
    from inspo.online import train_online

    one = dict(steps=8 * 8, snapshot_every=1)
    train_online(_tiny(**one), tmp_path / "plain1")
    train_online(_tiny(anneal_lr=True, **one), tmp_path / "anneal1")
    assert all(torch.equal(x, y) for x, y in zip(_weights(tmp_path / "plain1" / "policy.pt"),
                                                 _weights(tmp_path / "anneal1" / "policy.pt")))
    train_online(_tiny(), tmp_path / "plain4")
    train_online(_tiny(anneal_lr=True), tmp_path / "anneal4")
    assert any(not torch.equal(x, y) for x, y in zip(_weights(tmp_path / "plain4" / "policy.pt"),
                                                     _weights(tmp_path / "anneal4" / "policy.pt")))


@pytest.mark.parametrize("options", [{}, dict(recurrent=True),
                                     dict(recurrent=True, recurrent_critic=True, agent_state=True,
                                          minibatch_rows="agents"),
                                     dict(recurrent=True, recurrent_critic=True, agent_state=True,
                                          minibatch_rows="agents", actor_id=False, critic_obs=False)],
                         ids=["mlp", "gru", "gru-agent-rows", "gru-jaxmarl-inputs"])
def test_first_minibatch_sees_the_rollout_policy(options: dict) -> None:
    # One epoch of one minibatch: the policy is evaluated before any step, so its log-probabilities must be the
    # rollout's (for the recurrent actor: its rows replayed from their first memory, cleared where episodes ended;
    # by agent rows, each agent's row picked from the rollout's).
    from inspo.online import train_online

    # lr 0.02: the first update moves the policy from its near-uniform start, so that a replay that differed from
    # the rollout (a wrong memory, episode end or agent id) shows at the second update's first minibatch. The KL is
    # second order in the log-probabilities' difference: 1e-10 allows float rounding (1e-5), not one agent's id
    # given to another (4e-7 measured).
    result = train_online(_tiny(epochs=1, minibatches=1, steps=8 * 32 * 2, rollout=32, lr=0.02, **options))
    assert [s["update"] for s in result.snapshots] == [0, 2]
    assert abs(result.snapshots[-1]["approx_kl"]) < 1e-10


def test_jaxmarl_inputs_shape_the_networks_and_snapshots(tmp_path: Path) -> None:
    # An actor without the agent's id and a critic without the agent's observation (JaxMARL's MAPPO): their first
    # layers read only what they are given, and the snapshots load back as the same id-less policy.
    from inspo import checkpoint as ckpt_io
    from inspo.envs import make
    from inspo.online import CHECKPOINT, train_online
    from inspo.policy import load_policy

    options = dict(recurrent=True, recurrent_critic=True, agent_state=True, actor_id=False, critic_obs=False)
    result = train_online(_tiny(**options), tmp_path / "run")
    env = make(MAP)
    policy = load_policy(tmp_path / "run" / "policy.pt").network
    assert not policy.agent_id and policy.inp.in_features == env.info.obs_dim
    critic = ckpt_io.load(tmp_path / "run" / CHECKPOINT)["critic"]
    assert critic["inp.weight"].shape[1] == env.info.state_dim + env.info.n_agents
    train_online(_tiny(agent_state=True, critic_obs=False), tmp_path / "feed-forward")  # the feed-forward critic too
    critic = ckpt_io.load(tmp_path / "feed-forward" / CHECKPOINT)["critic"]
    assert critic["net.0.weight"].shape[1] == env.info.state_dim + env.info.n_agents
    with_id = train_online(_tiny(**{**options, "actor_id": True}))
    assert result.snapshots[-1]["value_loss"] != with_id.snapshots[-1]["value_loss"]


def test_agent_rows_train_otherwise_than_episode_rows(tmp_path: Path) -> None:
    # Minibatches drawn by agent rows (JaxMARL's MAPPO) rather than episode rows: another run, deterministic.
    from inspo.online import train_online

    options = dict(recurrent=True, recurrent_critic=True, agent_state=True)
    runs = {rows: train_online(_tiny(minibatch_rows=rows, **options), tmp_path / rows)
            for rows in ("episodes", "agents")}
    again = train_online(_tiny(minibatch_rows="agents", **options))
    assert [s["value_loss"] for s in runs["agents"].snapshots[1:]] == [s["value_loss"] for s in again.snapshots[1:]]
    assert runs["agents"].snapshots[-1]["value_loss"] != runs["episodes"].snapshots[-1]["value_loss"]
    assert any(not torch.equal(x, y) for x, y in zip(_weights(tmp_path / "agents" / "policy.pt"),
                                                     _weights(tmp_path / "episodes" / "policy.pt")))


def test_bf16_products_replay_the_rollout_within_their_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    # As above, with both networks recurrent and bfloat16 products: the first minibatch's policy is still the
    # rollout's (to bfloat16 rounding), and the critic's loss moves by that rounding only. On a CPU without bfloat16
    # instructions the bf16 run is warned.
    from inspo import precision
    from inspo.online import train_online

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    last = {}
    for p in ("fp32", "bf16"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            last[p] = train_online(_tiny(epochs=1, minibatches=1, recurrent=True, recurrent_critic=True, precision=p,
                                         steps=8 * 32 * 2, rollout=32)).snapshots[-1]
        warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert ["without bfloat16 instructions" in m for m in warned] == ([True] if p == "bf16" else [])
    assert all(abs(s["approx_kl"]) < 1e-6 for s in last.values())
    fp32, bf16 = last["fp32"]["value_loss"], last["bf16"]["value_loss"]
    assert fp32 != bf16 and abs(bf16 - fp32) < 0.05 * fp32, (fp32, bf16)


def test_recurrent_actor_trains_evaluates_and_generates_data(tmp_path: Path) -> None:
    from inspo.data.smax import generate_smax
    from inspo.evaluation import evaluate
    from inspo.online import train_online
    from inspo.policy import load_policy

    out = tmp_path / "3m"
    result = train_online(_tiny(recurrent=True), out)
    assert load_policy(out / "policy.pt").checkpoint["policy_kwargs"]["recurrent"] is True
    first, last = _weights(out / "snapshots" / "0000.pt"), _weights(out / "policy.pt")
    assert any(not torch.equal(a, b) for a, b in zip(first, last))
    # Played from the file (inspo evaluate, the data generator): each batch of episodes starts with a fresh
    # memory, so the same seed gives the same episodes.
    played = evaluate(out / "policy.pt", episodes=8, seed=0)
    assert played == evaluate(out / "policy.pt", episodes=8, seed=0) and 0.0 <= played["win_rate"] <= 1.0
    loaded = load_dataset(save_dataset(generate_smax(MAP, "expert", 8, seed=0, policy=out), tmp_path / "a"), env=MAP)
    again = load_dataset(save_dataset(generate_smax(MAP, "expert", 8, seed=0, policy=out), tmp_path / "b"), env=MAP)
    assert loaded.n_episodes == 8 and np.array_equal(loaded.actions, again.actions)
    assert loaded.manifest["behaviour"]["mean_return"] == pytest.approx(loaded.episode_returns().mean())
    with pytest.raises(ValueError, match=r"num_envs \(8\) must be divisible by minibatches \(3\)"):
        train_online(_tiny(recurrent=True, minibatches=3, rollout=3))
    assert result.snapshots[-1]["update"] == 4


@pytest.mark.parametrize("options", [{}, dict(recurrent=True, agent_state=True, value_norm=True, anneal_lr=True),
                                     dict(recurrent=True, recurrent_critic=True, agent_state=True, anneal_lr=True,
                                          orthogonal_init=True, clip_value=True, separate_clip=True,
                                          minibatch_rows="agents", actor_id=False, critic_obs=False)],
                         ids=["mlp", "gru-all-options", "gru-critic-jaxmarl"])
def test_killed_run_resumes_exactly(policy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture, options: dict) -> None:
    from inspo import checkpoint as ckpt_io
    from inspo.cli import main
    from inspo.online import CHECKPOINT, resumed_config, train_online
    from inspo.policy import load_snapshots

    whole = policy_dir if not options else train_online(_tiny(**options), tmp_path / "whole").out
    real_save = ckpt_io.save

    def save_then_die(obj: object, path: Path) -> None:  # the process dies right after the checkpoint of update 2
        real_save(obj, path)
        if Path(path).name == CHECKPOINT:
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_io, "save", save_then_die)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train_online(_tiny(**options), out)
    monkeypatch.setattr(ckpt_io, "save", real_save)
    assert [s["update"] for s in load_snapshots(out)["snapshots"]] == [0, 2]
    with pytest.raises(FileExistsError, match="already holds a run .*`inspo online train --resume"):
        train_online(_tiny(**options), out)  # a fresh start would overwrite it
    with pytest.raises(ValueError, match="holds a run of another config"):
        train_online(_tiny(**options, seed=3), out, resume=True)
    saved = ckpt_io.load(out / CHECKPOINT)  # as an earlier version wrote it, before the precision field existed
    del saved["config"]["precision"]
    ckpt_io.save(saved, out / CHECKPOINT)
    pruned = load_snapshots(out)["snapshots"][0]
    (out / pruned["file"]).unlink()  # resuming needs only the checkpoint and the index
    with pytest.raises(FileNotFoundError, match="0000.pt is missing: snapshots.json lists it"):
        load_snapshots(out)
    assert main(["online", "train", "--resume", str(out), "--max-minutes", "60"]) == 0
    capsys.readouterr()
    index = json.loads((out / "snapshots.json").read_text())
    assert index["config"] == asdict(_tiny(**options, max_minutes=60))  # the new sitting's limit

    drop = ("wall_time", "sha256", "file")
    expected, got = load_snapshots(Path(whole))["snapshots"], index["snapshots"]
    assert [{k: v for k, v in s.items() if k not in drop} for s in got] == \
        [{k: v for k, v in s.items() if k not in drop} for s in expected]
    assert got[0] == pruned  # the pruned file's record and digest kept
    for a, b in zip(expected[1:], got[1:]):
        assert all(torch.equal(x, y) for x, y in zip(_weights(Path(whole) / a["file"]), _weights(out / b["file"])))
    with pytest.raises(ValueError, match="finished at update 4: nothing to resume"):
        resumed_config(out)
    assert main(["online", "train", "--out", str(tmp_path / "x")]) == 2  # --env is needed for a new run
    assert "needs --env and --out (or --resume DIR)" in capsys.readouterr().err


def test_init_from_starts_with_another_runs_networks(policy_dir: Path, tmp_path: Path) -> None:
    from inspo import checkpoint as ckpt_io
    from inspo.online import CHECKPOINT, train_online
    from inspo.policy import load_snapshots

    out = tmp_path / "continued"
    result = train_online(_tiny(lr=1e-4, init_from=str(policy_dir)), out)
    # The first snapshot is the source's last networks, evaluated anew; the record names the checkpoint it read.
    assert all(torch.equal(x, y) for x, y in zip(_weights(out / result.snapshots[0]["file"]),
                                                 _weights(policy_dir / "policy.pt")))
    source = ckpt_io.load(policy_dir / CHECKPOINT)
    first = load_snapshots(out)["snapshots"][0]
    assert first["init_from"] == {"update": 4, "env_steps": 256, "sha256": hashlib.sha256(
        (policy_dir / CHECKPOINT).read_bytes()).hexdigest()} and source["update"] == 4
    assert result.snapshots[-1]["env_steps"] == 256  # its own count of steps and its own schedule
    assert any(not torch.equal(x, y) for x, y in zip(_weights(out / "policy.pt"), _weights(policy_dir / "policy.pt")))
    with pytest.raises(ValueError, match=r"has other networks: hidden 16 \(this run: 32\)"):
        train_online(_tiny(hidden=32, init_from=str(policy_dir)))
    with pytest.raises(FileNotFoundError, match="holds no online run"):
        train_online(_tiny(init_from=str(tmp_path / "nothing")))


def test_online_refuses_bad_config() -> None:
    from inspo.online import train_online

    with pytest.raises(ValueError, match=r"needs an environment 'smax:<map>', got 'xor'"):
        train_online(_tiny(env="xor"))
    with pytest.raises(ValueError, match=r"OnlineConfig.num_envs must be a positive integer, got 0"):
        train_online(_tiny(num_envs=0))
    with pytest.raises(ValueError, match=r"must be divisible by minibatches \(3\)"):
        train_online(_tiny(minibatches=3))
    with pytest.raises(ValueError, match=r"recurrent_critic needs recurrent=True"):
        train_online(_tiny(recurrent_critic=True))
    with pytest.raises(ValueError, match=r"minibatch_rows 'agents' needs recurrent_critic=True and agent_state=True"):
        train_online(_tiny(recurrent=True, recurrent_critic=True, minibatch_rows="agents"))
    with pytest.raises(ValueError, match=r"actor_id=False needs recurrent=True"):
        train_online(_tiny(actor_id=False))
    with pytest.raises(ValueError, match=r"critic_obs=False needs agent_state=True"):
        train_online(_tiny(critic_obs=False))
    with pytest.raises(ValueError, match=r"minibatch_rows must be one of \('episodes', 'agents'\), got 'steps'"):
        train_online(_tiny(minibatch_rows="steps"))
    with pytest.raises(ValueError, match=r"OnlineConfig.precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        train_online(_tiny(precision="fp16"))


def test_snapshot_checksums_are_verified(policy_dir: Path, tmp_path: Path) -> None:
    import shutil

    from inspo.policy import load_snapshots

    copy = tmp_path / "copy"
    shutil.copytree(policy_dir, copy)
    (copy / "snapshots" / "0002.pt").write_bytes(b"not the policy")
    with pytest.raises(ValueError, match=r"0002.pt: sha256 .* snapshots.json says"):
        load_snapshots(copy)


@pytest.mark.parametrize("quality", ["expert", "medium", "medium-replay", "mixed"])
def test_generate_online_qualities(policy_dir: Path, tmp_path: Path, quality: str) -> None:
    from inspo.data import generate_smax
    from inspo.policy import load_snapshots

    data = generate_smax(MAP, quality, 8, seed=3, policy=policy_dir)
    loaded = load_dataset(save_dataset(data, tmp_path / quality), env=MAP)
    behaviour = loaded.manifest["behaviour"]
    returns = loaded.episode_returns()
    assert loaded.n_episodes == 8 and behaviour["quality"] == quality and behaviour["kind"] == "smax-online"
    assert behaviour["mean_return"] == pytest.approx(returns.mean())
    assert behaviour["win_rate"] == pytest.approx(np.mean(returns > 1.5))
    assert sum(behaviour["episodes_per_source"]) == 8
    snaps = load_snapshots(policy_dir)["snapshots"]
    files = [c and Path(c["file"]).name for c in behaviour["checkpoints"]]
    medium = behaviour["medium"]
    medium_file = "heuristic" if medium["source"] == "heuristic" else Path(medium["snapshot"]["file"]).name
    if quality == "expert":
        assert files == [Path(snaps[-1]["file"]).name]
    elif quality == "mixed":
        assert len(files) == 2 and files[1] == Path(snaps[-1]["file"]).name
        assert behaviour["episodes_per_source"] == [4, 4]
    elif quality == "medium":
        assert (files[0] or "heuristic") == medium_file
    else:  # medium-replay: snapshots from the first, in training order
        assert files == [Path(s["file"]).name for s in snaps[:len(files)]]
    again = generate_smax(MAP, quality, 8, seed=3, policy=policy_dir)
    np.testing.assert_array_equal(again.actions, data.actions)  # deterministic per seed


def test_medium_choice_rule() -> None:
    from inspo.data.smax import behaviour_choice

    snaps = [{"index": k, "win_rate": w, "return": r} for k, (w, r) in
             enumerate([(0.0, 0.2), (0.3, 1.0), (0.5, 1.3), (0.45, 1.2), (0.9, 1.9)])]
    meta = {"snapshots": snaps}
    choice = behaviour_choice(meta, heuristic_win_rate=0.1, heuristic_return=0.8)
    # Half the expert's win rate is 0.45: snapshot 3 exactly (not 2, at distance 0.05).
    assert choice["medium"]["index"] == 3 and [s["index"] for s in choice["replay"]] == [0, 1, 2, 3]
    assert choice["expert"]["index"] == 4
    closer = behaviour_choice(meta, heuristic_win_rate=0.45, heuristic_return=0.95)
    assert closer["medium"] is None  # as close in win rate, closer in return: the heuristic
    # Replay: up to the last snapshot whose win rate does not exceed the heuristic's (3), in training order.
    assert [s["index"] for s in closer["replay"]] == [0, 1, 2, 3]


def test_export_keeps_the_same_choice(policy_dir: Path, tmp_path: Path) -> None:
    from inspo.data import generate_smax
    from inspo.data.smax import export_policies

    index = export_policies(policy_dir, tmp_path / "shipped")
    assert index["snapshots"][-1]["file"] == "snapshots/0002.pt"
    for quality in ("expert", "medium"):
        a = generate_smax(MAP, quality, 8, seed=0, policy=policy_dir)
        b = generate_smax(MAP, quality, 8, seed=0, policy=tmp_path / "shipped")
        np.testing.assert_array_equal(a.actions, b.actions)


def test_cli_online_train_and_generate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from inspo.cli import main

    out = tmp_path / "pol"
    assert main(["online", "train", "--env", MAP, "--steps", "128", "--num-envs", "8", "--hidden", "16",
                 "--snapshot-every", "1", "--eval-episodes", "8", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["snapshots"] == 2 and printed["env_steps"] == 256 and (out / "policy.pt").is_file()
    assert main(["datasets", "generate", "--env", MAP, "--quality", "expert", "--episodes", "8",
                 "--policy", str(out), "--out", str(tmp_path / "e")]) == 0
    assert load_dataset(tmp_path / "e").manifest["behaviour"]["checkpoints"][0]["file"].endswith("0001.pt")
    capsys.readouterr()
    assert main(["evaluate", str(out / "policy.pt"), "--episodes", "8"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["win_rate"] <= 1.0
    # A second run from the first one's networks, with bfloat16 products: the flags reach the config.
    assert main(["online", "train", "--env", MAP, "--steps", "64", "--num-envs", "8", "--hidden", "16",
                 "--snapshot-every", "1", "--eval-episodes", "8", "--precision", "bf16", "--init-from", str(out),
                 "--out", str(tmp_path / "next")]) == 0
    index = json.loads((tmp_path / "next" / "snapshots.json").read_text())
    assert index["config"]["precision"] == "bf16" and index["config"]["init_from"] == str(out)
    assert index["snapshots"][0]["init_from"]["env_steps"] == 256


def test_offline_training_beats_random_win_rate(tmp_path: Path) -> None:
    import inspo
    from inspo.data import Dataset
    from inspo.envs import make
    from inspo.envs.smax import HeuristicPolicy, UniformPolicy

    # 32 heuristic episodes as four rollouts of 8: a batch of 8 is compiled by the other tests already, a batch of
    # 32 would compile the batch of 128 (tens of seconds).
    env = make(MAP)
    parts = [env.rollout(HeuristicPolicy(env), 8, seed=s, record=True) for s in range(4)]
    rows = {name: np.concatenate([p.transitions[name] for p in parts]) for name in parts[0].transitions}
    path = save_dataset(Dataset.create(rows, env, behaviour={"quality": "heuristic"}, seed=0, source="test"),
                        tmp_path / "h32")
    cfg = TrainConfig(dataset=str(path), algo="bc", bc_steps=1000, iters=0, eval_every=1, eval_episodes=8, hidden=64,
                      batch_size=256, out=str(tmp_path / "run"))
    result = inspo.train(cfg)
    random_win = env.rollout(UniformPolicy(1), 8, seed=1).win_rate
    # Greedy: the heuristic it imitates is a deterministic script (sampled, 8 episodes win nothing yet).
    trained = inspo.evaluate(result.checkpoint, episodes=8, seed=1, greedy=True)
    assert random_win == 0.0 and trained["win_rate"] > random_win


def test_reproduce_smax_toy(policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from inspo.cli import main

    out = tmp_path / "res"
    argv = ["reproduce", "smax", "--maps", "3m", "--qualities", "random", "expert", "--seeds", "1", "--iters", "4",
            "--bc-steps", "2", "--episodes", "8", "--eval-episodes", "8", "--policies", str(policy_dir.parent),
            "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "smax.json").read_text())
    assert [(r["dataset"], r["method"]) for r in record["rows"]] == [
        ("3m-random", "bc"), ("3m-random", "inspo"), ("3m-expert", "bc"), ("3m-expert", "inspo")]
    for row in record["rows"]:
        assert 0.0 <= row["final_win"]["mean"] <= 1.0 and 0.0 <= row["data_win_rate"] <= 1.0
    text = (out / "smax.md").read_text()
    assert "| map | data | method | data return | data win rate | final return | final win rate |" in text
    assert "inspo reproduce smax --maps 3m --qualities random expert" in text
    capsys.readouterr()
    assert main(argv) == 0  # the second time every run comes from the run cache
    assert "4 of 4 runs read from the run cache" in (out / "smax.md").read_text()
    assert main(["reproduce", "smax", "--maps", "3m", "--qualities", "best", "--out", str(out)]) == 2
    assert "unknown SMAX quality 'best'" in capsys.readouterr().err


def test_reproduce_baselines_on_smax_toy(tmp_path: Path) -> None:
    from inspo.cli import main

    out = tmp_path / "res"
    assert main(["reproduce", "baselines", "--env", "smax", "--datasets", "3m-random", "--seeds", "1", "--iters", "2",
                 "--bc-steps", "2", "--episodes", "8", "--eval-episodes", "8", "--out", str(out)]) == 0
    record = json.loads((out / "baselines_smax.json").read_text())
    assert [r["method"] for r in record["rows"]] == ["bc", "icq", "omiga", "cfcql", "inspo"]
    assert all(0.0 <= r["final_win"]["mean"] <= 1.0 for r in record["rows"])
    text = (out / "baselines_smax.md").read_text()
    assert "inspo reproduce baselines --env smax --seeds 1 --iters 2 --bc-steps 2 --episodes 8 --eval-episodes 8" \
        " --datasets 3m-random" in text
    assert "| method | final return | final win rate | best return | best win rate |" in text
