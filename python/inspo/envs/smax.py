"""SMAX (JaxMARL's StarCraft-like micromanagement benchmark) behind the project's environment interface, plus a
batched rollout that plays many episodes at once.

The allies are the agents; the enemies follow SMAX's scripted heuristic (`HeuristicEnemySMAX`, the benchmark's
standard opponent). Per step: obs = SMAX's unit-list observation of each ally, state = SMAX's world state,
avail = SMAX's action mask (5 movement actions, 4 = stop, then one attack action per enemy; a dead ally can only
stop), reward = SMAX's team reward (damage dealt, normalised, plus 1 for a win). `terminated`: one side is wiped
out; `truncated`: the step limit (SMAX's `max_steps`) was reached first; `info["won"]`: every enemy is dead and an
ally is alive.

jax and jaxmarl (the optional extra `smax`) are imported on first use, never when this module is imported.
"""
from __future__ import annotations

import functools
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
import torch

from inspo.envs.base import EnvInfo, MultiAgentEnv, Observation
from inspo.errors import MissingExtra

__all__ = ["DEFAULT_EPISODE_LIMIT", "STOP", "BatchPolicy", "HeuristicPolicy", "Rollout", "SMAXEnv", "SMAXVector",
           "UniformPolicy", "smax_maps"]

DEFAULT_EPISODE_LIMIT = 100
"""SMAX's own default `max_steps`."""

STOP = 4
"""The stop action: available to every ally, alive or dead, at every step."""

_BATCHES = (8, 128)
"""The only batch sizes ever compiled (each compilation takes tens of seconds on a CPU): a batch of episodes is
padded to the first that fits, more than the last run in chunks of it. A single `SMAXEnv` runs as row 0 of the
smallest, which costs nothing noticeable per step and saves a compilation."""


def _jax() -> SimpleNamespace:
    """jax, jax.numpy and jaxmarl's SMAX package, or an ImportError that says how to install them."""
    # Importing jaxmarl prints progress messages (they would corrupt JSON printed by the CLI), and its mabrax module
    # sets sys.stdout and sys.stderr to sys.__stdout__ and sys.__stderr__ whatever they were before (a caller's
    # redirection, pytest's capture): send everything to a sink for the import and put every stream back after.
    streams = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = io.StringIO()
    try:
        import jax
        import jax.numpy as jnp
        from jaxmarl.environments import smax
        from jaxmarl.environments.smax import heuristic_enemy
        from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO
    except ImportError as exc:
        raise MissingExtra(
            f"SMAX environments need jax and jaxmarl, which are not installed ({exc}); install the optional "
            "extra: pip install 'inspo[smax]'"
        ) from exc
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = streams
    return SimpleNamespace(jax=jax, jnp=jnp, smax=smax, heuristic=heuristic_enemy, scenarios=MAP_NAME_TO_SCENARIO)


def smax_maps() -> list[str]:
    """The names of the maps SMAX knows, sorted (MissingExtra without the ``smax`` extra)."""
    return sorted(_jax().scenarios)


class _Backend:
    """One map's jaxmarl environment and its compiled, batched reset and step.

    Shared by every `SMAXEnv` of the same map and step limit (see `_backend`): jax compiles per environment
    object, and a compilation takes tens of seconds on a CPU.
    """

    def __init__(self, map_name: str, episode_limit: int) -> None:
        m = _jax()
        if map_name not in m.scenarios:
            raise ValueError(f"unknown SMAX map '{map_name}'; known: {', '.join(smax_maps())}")
        jax, jnp = m.jax, m.jnp
        env = m.smax.HeuristicEnemySMAX(scenario=m.smax.map_name_to_scenario(map_name), max_steps=episode_limit)
        self.env, self.jax = env, jax
        inner = env._env  # the SMAX game under the enemy wrapper: sizes and the heuristic's constants live there
        self.n_allies, self.obs_dim, self.state_dim = inner.num_allies, inner.obs_size, inner.state_size
        self.n_actions = inner.num_ally_actions
        agents, n = env.agents, inner.num_allies

        def arrays(obs: dict, state: Any) -> tuple:
            avail = env.get_avail_actions(state)
            return (jnp.stack([obs[a] for a in agents]), obs["world_state"],
                    jnp.stack([avail[a] for a in agents]).astype(bool))

        def reset_one(key: Any) -> tuple:
            key, reset_key = jax.random.split(key)
            obs, state = env.reset(reset_key)
            # reset leaves a weakly typed field that step makes strong; without this, the step function would be
            # compiled twice (once for the state after reset, once for every later one).
            state = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), state)
            return (state, key, *arrays(obs, state))

        def step_one(key: Any, state: Any, actions: Any) -> tuple:
            key, step_key = jax.random.split(key)
            # step_env, not step: step would replace the final observation with the next episode's first one.
            obs, state, rewards, _, _ = env.step_env(step_key, state, {a: actions[i] for i, a in enumerate(agents)})
            alive = state.state.unit_alive
            allies_out, enemies_out = ~alive[:n].any(), ~alive[n:].any()
            return (state, key, *arrays(obs, state), rewards[agents[0]], allies_out | enemies_out,
                    enemies_out & ~allies_out)

        self.reset = jax.jit(jax.vmap(reset_one))
        """keys [B, 2] -> (states, keys, obs [B, N, obs_dim], world state [B, state_dim], avail [B, N, A])."""
        self.step = jax.jit(jax.vmap(step_one))
        """(keys, states, actions [B, N]) -> (states, keys, obs, world state, avail, reward [B], over [B], won [B])."""

        def select(mask: Any, index: Any, new: Any, old: Any) -> Any:
            def one(a: Any, b: Any) -> Any:
                return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a[index], b)
            return jax.tree.map(one, new, old)

        self.select = jax.jit(select)
        """(mask [B], index [B], new, old) -> per row r, `new[index[r]]` where mask else `old[r]` (pytrees of batched
        arrays): the auto-reset of `SMAXVector`, compiled once, instead of dozens of eager jax calls per step."""
        self._fold_in = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))
        """(key, indices [B]) -> keys [B]: compiled, as eager it costs an auto-reset more than the game's step."""

    @functools.cache  # noqa: B019 - one backend per map, kept for the process's life anyway
    def heuristic(self) -> Callable[..., Any]:
        """SMAX's scripted ally controller, compiled for `[episodes, allies]` batches: (keys, memory, obs) ->
        (actions, memory). Built once per map, like the environment's own functions."""
        jax = self.jax
        act = _jax().heuristic.create_heuristic_policy(self.env._env, 0, shoot=True, attack_mode="closest")
        # vmap over episodes, then over allies: every ally runs its own copy of the script.
        return jax.jit(jax.vmap(jax.vmap(act)))

    def keys(self, seed: int, first: int, count: int) -> Any:
        """PRNG keys of episodes `first .. first + count - 1` of a rollout seeded with `seed`: an episode's
        randomness depends only on the seed and its own index, not on how episodes are batched."""
        return self._fold_in(self.jax.random.PRNGKey(seed), np.arange(first, first + count, dtype=np.uint32))


@functools.cache
def _backend(map_name: str, episode_limit: int) -> _Backend:
    """The shared `_Backend` of a map and step limit."""
    return _Backend(map_name, episode_limit)


class BatchPolicy(Protocol):
    """Acts for a batch of episodes: `obs [B, N, obs_dim]` float32 and `avail [B, N, A]` bool -> actions `[B, N]`.

    A policy may also define `reset(batch: int, seed: int)`; `SMAXEnv.rollout` calls it before the first step of
    every batch of episodes (scripted policies keep per-episode memory, random ones reseed).
    """

    def __call__(self, obs: np.ndarray, avail: np.ndarray) -> np.ndarray: ...


class UniformPolicy:
    """Uniform over each agent's available actions (the `random` data quality)."""

    description = "uniform over the available actions"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def reset(self, batch: int, seed: int) -> None:
        """Reseed for a new batch of episodes."""
        self._rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray, avail: np.ndarray) -> np.ndarray:
        # The argmax of i.i.d. uniform scores over the available actions is a uniform draw among them.
        return np.argmax(self._rng.random(avail.shape) * avail, axis=-1)


class HeuristicPolicy:
    """SMAX's scripted unit controller (the one its enemies use) acting for every ally: attack the closest enemy in
    range and keep attacking it until it dies; otherwise walk towards a visible enemy or across the map."""

    description = "SMAX scripted heuristic for every ally (attack_mode=closest)"

    def __init__(self, env: SMAXEnv) -> None:
        m = _jax()
        self._jax, self._jnp = m.jax, m.jnp
        self._init = m.heuristic.get_heuristic_policy_initial_state
        self._act = env._backend.heuristic()
        self._state: Any = None
        self._key: Any = None

    def reset(self, batch: int, seed: int) -> None:
        """Forget the per-unit memory (target, last attacked enemy) and reseed for a new batch of episodes."""
        self._key = self._jax.random.PRNGKey(seed)
        self._state = None  # rebuilt for the batch's shape at its first step

    def __call__(self, obs: np.ndarray, avail: np.ndarray) -> np.ndarray:
        jax, jnp = self._jax, self._jnp
        batch, n_agents = avail.shape[:2]
        if self._key is None:
            raise RuntimeError("HeuristicPolicy: call reset(batch, seed) before the first step of a batch")
        if self._state is None:
            # Strongly typed copies, as the script returns them: otherwise its second step would compile again.
            self._state = jax.tree.map(
                lambda x: jnp.full((batch, n_agents, *jnp.shape(x)), x, dtype=jnp.asarray(x).dtype), self._init())
        self._key, step_key = jax.random.split(self._key)
        keys = jax.random.split(step_key, batch * n_agents).reshape(batch, n_agents, -1)
        actions, self._state = self._act(keys, self._state, jnp.asarray(obs))
        actions = np.asarray(actions).astype(np.int64)
        # The script judges range from the observation while the mask uses exact distances, so at the edge of the
        # range it can pick an attack that SMAX has just masked out; a dead ally's script also still "acts".
        # Both become the always-available stop.
        chosen = np.take_along_axis(avail, actions[..., None], axis=-1)[..., 0]
        return np.where(chosen, actions, STOP)


@dataclass(frozen=True)
class Rollout:
    """Outcome of `SMAXEnv.rollout`: per-episode totals, and with `record=True` the transitions.

    `transitions` holds one flat array per field of the dataset format (`inspo.data.FIELDS`: obs, state, avail,
    actions, reward, terminated, truncated, next_obs, next_state, next_avail, episode_start), episode after
    episode in episode order.
    """

    returns: np.ndarray
    won: np.ndarray
    lengths: np.ndarray
    transitions: dict[str, np.ndarray] | None = None

    @property
    def mean_return(self) -> float:
        """Mean undiscounted team return."""
        return float(self.returns.mean())

    @property
    def win_rate(self) -> float:
        """Fraction of episodes won."""
        return float(self.won.mean())


class SMAXEnv(MultiAgentEnv):
    """`smax:<map>`: the allies of a SMAX map against SMAX's heuristic enemies (see the module docstring)."""

    def __init__(self, map_name: str, episode_limit: int = DEFAULT_EPISODE_LIMIT) -> None:
        if isinstance(episode_limit, bool) or not isinstance(episode_limit, (int, np.integer)) or episode_limit < 1:
            raise ValueError(f"smax:{map_name}: episode_limit must be a positive integer, got {episode_limit!r}")
        self._backend = _backend(map_name, int(episode_limit))
        b = self._backend
        info = EnvInfo(f"smax:{map_name}", n_agents=b.n_allies, obs_dim=b.obs_dim, state_dim=b.state_dim,
                       n_actions=b.n_actions, episode_limit=int(episode_limit))
        super().__init__(info, {"episode_limit": int(episode_limit)})
        self._carry: tuple[Any, Any] | None = None  # (SMAX states, PRNG keys) of a batch whose row 0 is this env
        self._arrays: Observation | None = None
        self._won = False

    def _reset(self, rng: np.random.Generator) -> None:
        keys = self._backend.keys(int(rng.integers(2**31)), 0, _BATCHES[0])
        state, key, obs, world, avail = self._backend.reset(keys)
        self._carry = (state, key)
        self._arrays = (np.asarray(obs[0]), np.asarray(world[0]), np.asarray(avail[0]))
        self._won = False

    def _observe(self) -> Observation:
        assert self._arrays is not None  # the base class only observes after a reset
        return self._arrays

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        assert self._carry is not None
        state, key = self._carry
        batch_actions = np.broadcast_to(actions.astype(np.int32), (_BATCHES[0], len(actions)))
        state, key, obs, world, avail, reward, over, won = self._backend.step(key, state, batch_actions)
        self._carry = (state, key)
        self._arrays = (np.asarray(obs[0]), np.asarray(world[0]), np.asarray(avail[0]))
        self._won = bool(won[0])
        return float(reward[0]), bool(over[0])

    def _extra_info(self) -> dict[str, Any]:
        return {"won": self._won}

    def rollout(self, policy: BatchPolicy | Callable[[np.ndarray, np.ndarray], np.ndarray], episodes: int,
                seed: int = 0, *, record: bool = False) -> Rollout:
        """Play `episodes` episodes with `policy` in lockstep, up to 128 at a time in one compiled, vmapped step.

        Deterministic given `seed` (and a deterministic policy, or one reseeded by its `reset`). Batches are
        padded to one of two sizes so that only two are ever compiled; padded episodes are discarded. Does not
        disturb this environment's own episode.
        """
        if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
        parts = []
        for first in range(0, episodes, _BATCHES[-1]):
            count = min(_BATCHES[-1], episodes - first)
            chunk_seed = int(np.random.SeedSequence([seed, first]).generate_state(1)[0])
            parts.append(self._rollout_batch(policy, seed, first, count, chunk_seed, record))
        transitions = None
        if record:
            transitions = {name: np.concatenate([p.transitions[name] for p in parts]) for name in parts[0].transitions}
        return Rollout(returns=np.concatenate([p.returns for p in parts]), won=np.concatenate([p.won for p in parts]),
                       lengths=np.concatenate([p.lengths for p in parts]), transitions=transitions)

    def _rollout_batch(self, policy: Any, seed: int, first: int, count: int, policy_seed: int,
                       record: bool) -> Rollout:
        b, info = self._backend, self._info
        batch = next(size for size in _BATCHES if size >= count)
        state, keys, obs, world, avail = b.reset(b.keys(seed, first, batch))
        # Copies: numpy views of jax arrays are read-only, which torch warns about when a policy wraps them.
        obs, world, avail = np.array(obs), np.array(world), np.array(avail)
        reset = getattr(policy, "reset", None)
        if reset is not None:
            reset(batch, policy_seed)
        running = np.arange(batch) < count
        returns, lengths = np.zeros(batch), np.zeros(batch, dtype=np.int64)
        won = np.zeros(batch, dtype=bool)
        columns: dict[str, list[np.ndarray]] = {}
        for t in range(info.episode_limit):
            actions = self._checked_actions(policy(obs, avail), avail, running)
            state, keys, obs2, world2, avail2, reward, over, won_now = b.step(keys, state, actions.astype(np.int32))
            obs2, world2, avail2 = np.array(obs2), np.array(world2), np.array(avail2)
            reward, over, won_now = np.asarray(reward, dtype=np.float64), np.asarray(over), np.asarray(won_now)
            returns += np.where(running, reward, 0.0)
            lengths += running
            won |= running & won_now
            if record:
                last_step = t + 1 == info.episode_limit
                row = {"obs": obs, "state": world, "avail": avail, "actions": actions, "reward": reward,
                       "terminated": over, "truncated": ~over & last_step, "next_obs": obs2, "next_state": world2,
                       "next_avail": avail2, "valid": running.copy()}
                for name, value in row.items():
                    columns.setdefault(name, []).append(np.asarray(value)[:count])
            running &= ~over
            obs, world, avail = obs2, world2, avail2
            if not running.any():
                break
        transitions = _flatten(columns) if record else None
        return Rollout(returns=returns[:count], won=won[:count], lengths=lengths[:count], transitions=transitions)

    def _checked_actions(self, actions: Any, avail: np.ndarray, running: np.ndarray) -> np.ndarray:
        acts = np.asarray(actions)
        if acts.shape != avail.shape[:2] or not np.issubdtype(acts.dtype, np.integer):
            raise ValueError(f"{self._info.name}: the policy must return integer actions of shape "
                             f"{avail.shape[:2]} (episodes, agents), got {acts.dtype} {acts.shape}")
        acts = acts.astype(np.int64)
        if ((acts < 0) | (acts >= self._info.n_actions)).any():
            raise ValueError(f"{self._info.name}: the policy returned actions out of range [0, {self._info.n_actions})")
        bad = ~np.take_along_axis(avail, acts[..., None], axis=-1)[..., 0] & running[:, None]
        if bad.any():
            e, agent = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{self._info.name}: the policy chose unavailable action {acts[e, agent]} for agent "
                             f"{agent} in episode {e}; available: {np.flatnonzero(avail[e, agent]).tolist()}")
        # Finished episodes keep stepping in the batch; their actions are ignored, so any available one will do.
        return np.where(running[:, None], acts, STOP)


class SMAXVector:
    """A batch of `num_envs` SMAX episodes stepped together, each restarting as soon as it ends (auto-reset): the
    step-level API of online training (`inspo.online`). Uses the map's compiled `_Backend` functions, so a batch of
    8 or 128 (the sizes `SMAXEnv.rollout` compiles) costs no new compilation of the game's step.

    Episode k of the stream (counted over all rows, in the order they start) gets the PRNG key `fold_in(seed, k)`:
    the whole stream is deterministic given `seed` and the actions.
    """

    def __init__(self, env: SMAXEnv, num_envs: int, seed: int = 0) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.env, self.num_envs, self.seed = env, int(num_envs), int(seed)
        self._b = env._backend
        self._started = 0  # episodes started so far: the index of the next episode's key
        self._carry: tuple[Any, Any] | None = None
        self._time = np.zeros(self.num_envs, dtype=np.int64)

    def _fresh(self) -> tuple:
        """A reset of every row with the next `num_envs` episode keys (rows that do not restart discard theirs).
        Always the whole batch: XLA's vectorised float arithmetic may round a row differently in a batch of
        another size, so starting only the rows that ended would change the episodes."""
        return self._b.reset(self._b.keys(self.seed, self._started, self.num_envs))

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands: what `load_state_dict` needs to continue it exactly, as tensors and numbers (what a
        checkpoint read with `torch.load(weights_only=True)` holds); every game array is kept exactly, dtype and all."""
        if self._carry is None:
            raise RuntimeError("SMAXVector: call reset() before state_dict()")
        return {"started": self._started, "time": torch.from_numpy(self._time.copy()),
                "arrays": [torch.from_numpy(np.array(x)) for x in self._b.jax.tree.leaves(self._carry)]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue the stream that `state_dict` saved (from a vector of the same map and size)."""
        jax = self._b.jax
        if self._carry is None:
            self.reset()  # the layout of the game's state, which the saved arrays fill
        layout = jax.tree.structure(self._carry)
        arrays, time = [a.numpy() for a in saved["arrays"]], saved["time"].numpy()
        if len(arrays) != layout.num_leaves or time.shape != self._time.shape:
            raise ValueError(f"SMAXVector: the saved stream has {len(arrays)} arrays over {time.shape[0]} rows; "
                             f"this vector needs {layout.num_leaves} over {self.num_envs}")
        self._carry = jax.tree.unflatten(layout, [jax.numpy.asarray(a) for a in arrays])
        self._started, self._time = int(saved["started"]), time.copy()

    def reset(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start every row: (obs [B, N, obs_dim], world state [B, state_dim], avail [B, N, A])."""
        state, keys, obs, world, avail = self._fresh()
        self._started = self.num_envs
        self._carry = (state, keys)
        self._time[:] = 0
        return np.array(obs), np.array(world), np.array(avail)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step every row with `actions [B, N]` (unchecked: the caller samples from `avail`).

        Returns (obs, world state, avail, out): the observation after the step, or where the episode ended, the
        first one of the row's next episode. `out` holds per row `reward`, `terminated` (a side was wiped out),
        `truncated` (the step limit came first), `won`, and `final_state` and `final_obs`: the world state and
        observations the step reached (before any restart), which a learner needs to bootstrap a truncated episode.
        """
        if self._carry is None:
            raise RuntimeError("SMAXVector: call reset() before step()")
        b = self._b
        state, keys = self._carry
        state, keys, obs, world, avail, reward, over, won = b.step(keys, state, np.asarray(actions, dtype=np.int32))
        self._time += 1
        over = np.asarray(over)
        truncated = ~over & (self._time >= self.env.info.episode_limit)
        done = over | truncated
        final_state, final_obs = np.array(world), np.array(obs)
        if done.any():
            # Rows that ended take the next episode keys in row order; the others keep their game.
            f_state, f_keys, f_obs, f_world, f_avail = self._fresh()
            index = np.where(done, np.cumsum(done) - 1, 0)  # the k-th ended row starts episode `started + k`
            state, keys, obs, world, avail = b.select(done, index, (f_state, f_keys, f_obs, f_world, f_avail),
                                                      (state, keys, obs, world, avail))
            self._started += int(done.sum())
            self._time[done] = 0
        self._carry = (state, keys)
        out = {"reward": np.asarray(reward, dtype=np.float64), "terminated": over, "truncated": truncated,
               "won": np.asarray(won) & over, "final_state": final_state, "final_obs": final_obs}
        return np.array(obs), np.array(world), np.array(avail), out


def _flatten(columns: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-step lists of `[B, ...]` arrays (plus `valid`: the step belongs to the episode) -> flat transitions,
    episode after episode, with `episode_start`. Flattened per batch, so that padding never reaches memory."""
    valid = np.stack(columns["valid"]).T  # [B, T]
    flat = {name: np.swapaxes(np.stack(values), 0, 1)[valid] for name, values in columns.items() if name != "valid"}
    flat["episode_start"] = np.broadcast_to(np.arange(valid.shape[1]) == 0, valid.shape)[valid]
    return flat
