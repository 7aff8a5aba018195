"""StarCraft micromanagement: the SMAX adapter (needs the extra `smax`: jax, jaxmarl), batched rollouts, SMAX
datasets, training and evaluation on them, and the SMAC adapter (tested with a fake game: StarCraft II is not
installed here).

jax compiles SMAX's step once per batch size (tens of seconds on a CPU); the tests share those compilations
through the module-level cache in `inspo.envs.smax`, so they are cheap after the first one.
"""
from __future__ import annotations

import builtins
import importlib.machinery
import importlib.metadata
import importlib.util
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import inspo
from inspo.config import TrainConfig
from inspo.data import load_dataset, save_dataset
from inspo.envs import EnvInfo, make

MAP = "smax:3m"
N_ALLIES, N_ENEMIES, OBS_DIM, STATE_DIM, N_ACTIONS = 3, 3, 75, 72, 8
OWN_HEALTH = -10  # first of the 10 own features (health, x, y, cooldown, 6 unit-type bits) at the end of obs


@pytest.fixture(scope="module")
def smax() -> types.ModuleType:
    """`inspo.envs.smax`, when jax and jaxmarl are installed."""
    # Only look for the packages: importing jaxmarl here, outside `inspo.envs.smax`, would reset pytest's captured
    # streams (see test_importing_jaxmarl_keeps_the_callers_streams).
    if importlib.util.find_spec("jax") is None or importlib.util.find_spec("jaxmarl") is None:
        pytest.skip("SMAX needs the optional extra: pip install 'inspo[smax]'")
    from inspo.envs import smax as module

    return module


def test_importing_jaxmarl_keeps_the_callers_streams(smax: types.ModuleType) -> None:
    # jaxmarl's import sets sys.stdout/sys.stderr to the process's original streams and prints; in a fresh process
    # (where jaxmarl is not imported yet) a redirection around it must survive and nothing may reach the real stdout.
    script = ("import contextlib, io, sys\n"
              "from inspo.envs.smax import _jax\n"
              "buf = io.StringIO()\n"
              "with contextlib.redirect_stdout(buf):\n"
              "    _jax()\n"
              "    assert sys.stdout is buf, sys.stdout\n"
              "assert buf.getvalue() == '', buf.getvalue()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def _uniform(rng: np.random.Generator, avail: np.ndarray) -> np.ndarray:
    return np.array([rng.choice(np.flatnonzero(row)) for row in avail])


# ---------------------------------------------------------------- SMAX adapter


def test_smax_spec_reset_and_masks_match_smax(smax: types.ModuleType) -> None:
    env = make(MAP)
    assert env.info == EnvInfo(MAP, n_agents=N_ALLIES, obs_dim=OBS_DIM, state_dim=STATE_DIM, n_actions=N_ACTIONS,
                               episode_limit=100)
    assert make(MAP, episode_limit=30).info.episode_limit == 30
    obs, state, avail = env.reset(seed=3)
    assert (obs.shape, obs.dtype, state.shape, state.dtype) == ((3, OBS_DIM), np.float32, (STATE_DIM,), np.float32)
    assert avail.shape == (3, N_ACTIONS) and avail.dtype == bool
    # The teams start 16 apart, out of range (5): every ally can move or stop, none can attack yet.
    np.testing.assert_array_equal(avail, np.repeat([[1, 1, 1, 1, 1, 0, 0, 0]], 3, axis=0).astype(bool))
    # Same state, same observation and mask as SMAX itself computes.
    import jax

    game = env._backend.env
    states, _ = env._carry  # a batch whose row 0 is this environment
    row0 = jax.tree.map(lambda x: x[0], states)
    smax_obs = game.get_obs(row0)
    smax_avail = game.get_avail_actions(row0)
    for i, agent in enumerate(game.agents):
        np.testing.assert_array_equal(obs[i], np.asarray(smax_obs[agent]))
        np.testing.assert_array_equal(avail[i], np.asarray(smax_avail[agent]) != 0)
    np.testing.assert_array_equal(state, np.asarray(game.get_world_state(row0)))
    with pytest.raises(ValueError, match=r"action 5 of agent 0 is unavailable; available actions: \[0, 1, 2, 3, 4\]"):
        env.step(np.array([5, 4, 4]))


@pytest.mark.parametrize(("name", "spec"), [
    ("2s3z", (5, 127, 120, 10)), ("3s_vs_5z", (3, 101, 96, 10)), ("5m_vs_6m", (5, 140, 132, 11)),
    ("6h_vs_8z", (6, 179, 168, 13)),
])
def test_smax_paper_maps(smax: types.ModuleType, name: str, spec: tuple[int, int, int, int]) -> None:
    # Building an environment compiles nothing; only its first reset or step does.
    info = make(f"smax:{name}").info
    assert (info.n_agents, info.obs_dim, info.state_dim, info.n_actions) == spec


def test_smax_refuses_bad_options(smax: types.ModuleType) -> None:
    with pytest.raises(ValueError, match=r"unknown SMAX map '4m'; known: .*2s3z, 3m, "):
        make("smax:4m")
    with pytest.raises(ValueError, match=r"smax:3m: episode_limit must be a positive integer, got 0"):
        make(MAP, episode_limit=0)


def test_smax_episode_outcomes(smax: types.ModuleType) -> None:
    env = make(MAP)
    rng = np.random.default_rng(0)
    for episode in range(3):
        obs, state, avail = env.reset(seed=episode)
        total, steps = 0.0, 0
        while True:
            obs, state, avail, reward, terminated, truncated, info = env.step(_uniform(rng, avail))
            steps += 1
            total += reward
            assert isinstance(reward, float) and reward >= 0.0  # damage dealt plus the win bonus: never negative
            assert isinstance(info["won"], bool) and info["episode_step"] == steps
            dead = obs[:, OWN_HEALTH] == 0
            # A dead ally can only stop.
            assert (avail[dead] == (np.arange(N_ACTIONS) == smax.STOP)).all()
            if terminated or truncated:
                break
            assert not info["won"]
        assert terminated != truncated
        assert not truncated or steps == 100
        # Damage is normalised to 1 for the whole enemy team; a win adds 1.
        assert info["won"] == (total > 1.5)
        assert not info["won"] or terminated
        with pytest.raises(RuntimeError, match="after the episode ended"):
            env.step(np.full(3, smax.STOP))


def test_rollout_outcomes_and_determinism(smax: types.ModuleType) -> None:
    env = make(MAP)
    heuristic = env.rollout(smax.HeuristicPolicy(env), 8, seed=0)
    assert heuristic.returns.shape == heuristic.won.shape == heuristic.lengths.shape == (8,)
    # A won episode dealt all the damage (1) and got the bonus (1); a lost or drawn one gets at most the damage.
    np.testing.assert_allclose(heuristic.returns[heuristic.won], 2.0, atol=1e-4)
    assert (heuristic.returns[~heuristic.won] <= 1.0 + 1e-4).all()
    assert 0 < heuristic.lengths.min() and heuristic.lengths.max() <= 100
    again = env.rollout(smax.HeuristicPolicy(env), 8, seed=0)
    np.testing.assert_array_equal(heuristic.returns, again.returns)
    other = env.rollout(smax.HeuristicPolicy(env), 8, seed=1)
    assert not np.array_equal(heuristic.returns, other.returns)
    expected = r"unavailable action 5 for agent 0 in episode 0; available: \[0, 1, 2, 3, 4\]"
    with pytest.raises(ValueError, match=expected):
        env.rollout(lambda obs, avail: np.full(avail.shape[:2], 5), 2)
    with pytest.raises(ValueError, match=r"integer actions of shape \(8, 3\)"):
        env.rollout(lambda obs, avail: np.zeros(3, dtype=np.int64), 2)


def test_episode_keys_are_fold_ins_of_the_seed(smax: types.ModuleType) -> None:
    # The compiled keys are the documented ones (an episode's randomness is fixed by the seed and its index), so
    # that data and online runs made before they were compiled are made again.
    import jax

    backend = make(MAP)._backend
    for seed, first in ((0, 0), (7, 1000), (2**31 - 1, 123_456)):
        base = jax.random.PRNGKey(seed)
        expected = np.stack([np.asarray(jax.random.fold_in(base, i)) for i in range(first, first + 8)])
        np.testing.assert_array_equal(np.asarray(backend.keys(seed, first, 8)), expected)


# ---------------------------------------------------------------- datasets


def test_generate_heuristic_dataset_loads_and_records_behaviour(smax: types.ModuleType, tmp_path: Path) -> None:
    from inspo.data import generate_smax

    ds = generate_smax(MAP, "heuristic", 8, seed=0)
    path = save_dataset(ds, tmp_path / "h8")
    loaded = load_dataset(path, env=MAP)  # checksums, shapes, masks, episode boundaries, return statistics
    assert loaded.n_episodes == 8 and loaded.env_info == make(MAP).info
    returns = loaded.episode_returns()
    behaviour = loaded.manifest["behaviour"]
    assert behaviour["quality"] == "heuristic"
    assert behaviour["mean_return"] == pytest.approx(returns.mean())
    assert behaviour["win_rate"] == pytest.approx(np.mean(returns > 1.5))
    assert behaviour["mean_length"] == pytest.approx(len(loaded) / 8)
    # The last step of each episode: terminated (a side wiped out) unless the step limit came first.
    ends = np.flatnonzero(loaded.terminated | loaded.truncated)
    lengths = np.diff(np.append(np.flatnonzero(loaded.episode_start), len(loaded)))
    assert len(ends) == 8 and (lengths[loaded.truncated[ends]] == 100).all()


def test_generate_is_deterministic_per_seed(smax: types.ModuleType) -> None:
    from inspo.data import generate_smax

    first, again, other = (generate_smax(MAP, "random", 8, seed=s) for s in (4, 4, 5))
    for name, array in first.arrays().items():
        np.testing.assert_array_equal(array, again.arrays()[name], err_msg=name)
    assert not np.array_equal(first.actions[:20], other.actions[:20])
    assert first.manifest["behaviour"]["win_rate"] == 0.0  # random allies do not win 3m


def test_generate_refuses_bad_qualities_and_missing_policies(tmp_path: Path) -> None:
    from inspo.data import generate_smax

    # 3m ships no trained policy: the online qualities need one, and the error says how to make it.
    expected = r"needs an online-trained policy for smax:3m.*inspo online train --env smax:3m"
    with pytest.raises(ValueError, match=expected):
        generate_smax(MAP, "expert", 8, seed=0)
    with pytest.raises(FileNotFoundError, match=r"holds no online-trained SMAX policy.*inspo online train"):
        generate_smax(MAP, "medium", 8, seed=0, policy=tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"unknown quality 'good'; expected one of random, heuristic, medium, expert"):
        generate_smax(MAP, "good", 8, seed=0)
    with pytest.raises(ValueError, match=r"quality 'random' is scripted and takes no policy folder"):
        generate_smax(MAP, "random", 8, seed=0, policy=tmp_path)
    with pytest.raises(ValueError, match=r"needs an environment 'smax:<map>', got 'xor'"):
        generate_smax("xor", "random", 8, seed=0)


def test_cli_generates_smax_data(smax: types.ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from inspo.cli import main

    out = tmp_path / "r8"
    assert main(["datasets", "generate", "--env", MAP, "--quality", "random", "--episodes", "8", "--seed", "2",
                 "--out", str(out)]) == 0
    assert load_dataset(out, env=MAP).manifest["behaviour"]["quality"] == "random"
    assert main(["datasets", "generate", "--env", MAP, "--quality", "medium", "--out", str(tmp_path / "m")]) == 2
    assert "needs an online-trained policy for smax:3m" in capsys.readouterr().err
    assert main(["datasets", "generate", "--env", MAP, "--preset", "xor-ab", "--out", str(tmp_path / "p")]) == 2
    assert "needs --quality (one of random, heuristic, medium, expert, medium-replay, mixed)" in capsys.readouterr().err


# ---------------------------------------------------------------- training and evaluation


def _win_rate(checkpoint: str, episodes: int, seed: int) -> float:
    """Win rate of a saved policy, acting by sampling, in batched SMAX episodes."""
    from inspo.policy import load_policy

    policy = load_policy(checkpoint).network
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def act(obs: np.ndarray, avail: np.ndarray) -> np.ndarray:
        logits = policy.all_logits(torch.as_tensor(obs)).masked_fill(~torch.as_tensor(avail), -math.inf)
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs.flatten(0, 1), 1, generator=gen).view(probs.shape[:2]).numpy()

    return make(MAP).rollout(act, episodes, seed).win_rate


def test_train_and_evaluate_on_smax_data(smax: types.ModuleType, tmp_path: Path) -> None:
    from inspo.data import generate_smax

    path = save_dataset(generate_smax(MAP, "heuristic", 8, seed=0), tmp_path / "h8")
    cfg = TrainConfig(dataset=str(path), bc_steps=50, iters=20, eval_every=20, eval_episodes=8, hidden=32,
                      batch_size=64, out=str(tmp_path / "run"))
    result = inspo.train(cfg)
    assert [point["iteration"] for point in result.curve] == [0, 20]
    assert all(math.isfinite(point["return"]) for point in result.curve)
    assert all(0.0 <= point["win_rate"] <= 1.0 for point in result.curve)  # SMAX curves record the win rate
    assert result.final_win_rate == result.curve[-1]["win_rate"]
    evaluated = inspo.evaluate(result.checkpoint, episodes=8, seed=1)
    assert evaluated["episodes"] == 8 and 0.0 <= evaluated["mean"] <= 2.0 + 1e-4
    assert 0.0 <= evaluated["win_rate"] <= 1.0
    assert inspo.evaluate(result.checkpoint, episodes=8, seed=1) == evaluated  # same seed, same episodes


@pytest.mark.slow
def test_inspo_on_heuristic_3m_data(smax: types.ModuleType, tmp_path: Path) -> None:
    """200 heuristic episodes, a few hundred InSPO iterations with a small network: records the win rates of
    random play, the data and the trained policy (printed; run with -s to see them)."""
    from inspo.data import generate_smax

    data = generate_smax(MAP, "heuristic", 200, seed=0)
    path = save_dataset(data, tmp_path / "h200")
    cfg = TrainConfig(dataset=str(path), bc_steps=500, iters=300, eval_every=100, eval_episodes=100, hidden=64,
                      out=str(tmp_path / "run"))
    result = inspo.train(cfg)
    random_play = make(MAP).rollout(smax.UniformPolicy(), 100, seed=1)
    trained = _win_rate(result.checkpoint, 100, seed=1)
    print(f"\n3m: random return {random_play.mean_return:.3f} win {random_play.win_rate:.2f}; heuristic data return "
          f"{data.manifest['behaviour']['mean_return']:.3f} win {data.manifest['behaviour']['win_rate']:.2f}; "
          f"InSPO return {result.final_return:.3f} (best {result.best_return:.3f}) win {trained:.2f}")
    assert all(math.isfinite(point["return"]) for point in result.curve)
    assert result.final_return > random_play.mean_return


# ---------------------------------------------------------------- missing dependencies


def test_missing_jaxmarl_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspo.envs import smax as module

    real_import = builtins.__import__

    def no_jax(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("jax", "jaxmarl"):
            raise ModuleNotFoundError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    # Bypass the per-map cache: a map built by another test would not import anything.
    monkeypatch.setattr(module, "_backend", module._backend.__wrapped__)
    with pytest.raises(ImportError, match=r"need jax and jaxmarl.*pip install 'inspo\[smax\]'"):
        make(MAP)


# ---------------------------------------------------------------- SMAC adapter


class FakeSC2:
    """The methods of `smac.env.StarCraft2Env` that the adapter calls: 2 agents, 4 actions, a 3-step limit; the
    battle is won when both agents pick action 3 (attack) together."""

    def __init__(self) -> None:
        self.t, self.closed = 0, False

    def get_env_info(self) -> dict[str, int]:
        return {"state_shape": 7, "obs_shape": 5, "n_actions": 4, "n_agents": 2, "episode_limit": 3}

    def reset(self) -> None:
        self.t = 0

    def get_obs(self) -> list[np.ndarray]:
        return [np.full(5, self.t + i, dtype=np.float64) for i in range(2)]

    def get_state(self) -> np.ndarray:
        return np.arange(7.0) + self.t

    def get_avail_actions(self) -> list[list[int]]:
        return [[1, 1, 0, 1], [0, 1, 1, 1]]

    def step(self, actions: list[int]) -> tuple[float, bool, dict[str, bool]]:
        self.t += 1
        if actions == [3, 3]:
            return 20.0, True, {"battle_won": True}
        if self.t == 3:
            return 0.5, True, {"battle_won": False, "episode_limit": True}
        return 0.5, False, {}

    def close(self) -> None:
        self.closed = True


def test_smac_adapter_with_a_fake_game() -> None:
    from inspo.envs.smac import SMACEnv

    env = SMACEnv("3m", game=FakeSC2(), difficulty="7")
    assert env.info == EnvInfo("smac:3m", n_agents=2, obs_dim=5, state_dim=7, n_actions=4, episode_limit=3)
    assert env.options == {"difficulty": "7"}
    obs, state, avail = env.reset()
    assert (obs.shape, obs.dtype, state.shape, state.dtype) == ((2, 5), np.float32, (7,), np.float32)
    np.testing.assert_array_equal(avail, [[True, True, False, True], [False, True, True, True]])
    with pytest.raises(ValueError, match=r"action 2 of agent 0 is unavailable"):
        env.step(np.array([2, 1]))
    # SMAC flags its step limit with terminated=True plus info["episode_limit"]: that is a truncation.
    outcomes = [env.step(np.array([0, 1]))[3:] for _ in range(3)]
    assert [o[:3] for o in outcomes] == [(0.5, False, False)] * 2 + [(0.5, False, True)]
    assert outcomes[-1][3]["won"] is False
    env.reset()
    _, _, _, reward, terminated, truncated, info = env.step(np.array([3, 3]))
    assert (reward, terminated, truncated, info["won"]) == (20.0, True, False, True)
    env.close()
    assert env._game.closed


def test_smac_adapter_refuses_bad_env_info() -> None:
    from inspo.envs.smac import SMACEnv, env_info_from_smac

    with pytest.raises(ValueError, match=r"smac:x: get_env_info\(\) lacks \['obs_shape'\]"):
        env_info_from_smac("smac:x", {"state_shape": 7, "n_actions": 4, "n_agents": 2, "episode_limit": 3})

    class WrongObs(FakeSC2):
        def get_obs(self) -> list[np.ndarray]:
            return [np.zeros(6)] * 2

    with pytest.raises(RuntimeError, match=r"obs of shape \(2, 6\); its get_env_info\(\) promised \(2, 5\)"):
        SMACEnv("3m", game=WrongObs()).reset()


def _fake_smac_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `smac` a package without `smac.env`, as SMAC3 (the hyper-parameter optimiser) is."""
    package = types.ModuleType("smac")
    package.__path__ = []  # a package with no submodules
    package.__spec__ = importlib.machinery.ModuleSpec("smac", None, is_package=True)
    monkeypatch.setitem(sys.modules, "smac", package)
    monkeypatch.delitem(sys.modules, "smac.env", raising=False)


def test_smac_explains_that_smac3_is_another_project(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smac_package(monkeypatch)
    smac3 = types.SimpleNamespace(version="2.4.1", metadata={
        "Name": "smac",
        "Summary": "SMAC3, a Python implementation of 'Sequential Model-based Algorithm Configuration'."})
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: smac3)
    with pytest.raises(ImportError, match=r"'smac' 2\.4\.1 \(SMAC3.*not oxwhirl/smac.*git\+https://github.com/oxwhirl"):
        make("smac:3m")


def test_smac_missing_names_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smac", None)  # as if nothing named smac were installed
    with pytest.raises(ImportError, match=r"need oxwhirl/smac, which is not installed.*git\+https://github.com/oxwhirl"):
        make("smac:3m")


def _fake_smacv2(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Installs a module `smacv2` whose two game classes record how they were built."""
    built: dict[str, Any] = {}

    def game(kind: str) -> type:
        class Game(FakeSC2):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__()
                built.update(kind=kind, **kwargs)
        return Game

    env_mod, wrapper_mod = types.ModuleType("smacv2.env"), types.ModuleType("smacv2.env.starcraft2.wrapper")
    env_mod.StarCraft2Env = game("plain")
    wrapper_mod.StarCraftCapabilityEnvWrapper = game("capability")
    for name, mod in {"smacv2": types.ModuleType("smacv2"), "smacv2.env": env_mod,
                      "smacv2.env.starcraft2": types.ModuleType("smacv2.env.starcraft2"),
                      "smacv2.env.starcraft2.wrapper": wrapper_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return built


def test_smacv2_maps_go_through_smacv2(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspo.envs import make

    built = _fake_smacv2(monkeypatch)
    env = make("smacv2:3m", seed=3)
    assert env.info.name == "smacv2:3m" and built == {"kind": "plain", "map_name": "3m", "seed": 3}
    env.reset()
    assert env.step(np.array([0, 1]))[3:6] == (0.5, False, False)
    make("smacv2:10gen_protoss", capability_config={"n_units": 5})
    assert built["kind"] == "capability" and built["capability_config"] == {"n_units": 5}


def test_smacv2_missing_names_its_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspo.envs import make

    monkeypatch.setitem(sys.modules, "smacv2", None)  # import smacv2 raises ImportError
    with pytest.raises(ImportError, match=r"oxwhirl/smacv2, which is not installed.*pip install git\+https"):
        make("smacv2:3m")
