"""OG-MARL / flashbax vaults to and from the project's dataset format (`inspo datasets import|export --format vault`).

A vault (flashbax's `Vault`, the format of the OG-MARL dataset hub: `<name>.vlt/<uid>/`, one uid per dataset
such as `expert` or `medium`) holds one tree of arrays, `[B, T, ...]` (B streams of T steps, episodes back to back):

| key | shape | read as |
|---|---|---|
| observations | [B, T, N, *obs] | obs (flattened per agent) |
| actions | [B, T, N] | actions (integers; continuous actions are refused) |
| rewards | [B, T, N] or [B, T] | team reward (see `reward`) |
| terminals, truncations | [B, T, N] or [B, T] | episode ends (below) |
| infos.legals | [B, T, N, A] | avail (all actions available when absent) |
| infos.state | [B, T, S] | state (the agents' observations concatenated when absent) |

An episode ends at the step where every agent is terminal or truncated: a termination if any agent is terminal,
else a truncation. (OG-MARL's SMAC vaults mark the step limit as terminal too, as SMAC itself does; the import
keeps the vault's flags.)

The import is trusted: nothing is replayed through an environment. What is checked instead (`inspo.data.trusted`):
the shapes and dtypes of every key, flags and masks that hold only 0 and 1, at least one legal action per agent and
step, chosen actions that are legal, episodes no longer than the step limit, and the content checks of
`Dataset.validate`. The manifest's `behaviour` records `trusted: true` and the SHA-256 of the vault's files.

A vault stores no observation after an episode's last step: the `next_*` fields of that step are copies of the
step's own (harmless after a termination, which is not bootstrapped; after a truncation, the last observation
stands in for the next one). Vaults written by `export_vault` also hold `next_observations`, `infos.next_state`
and `infos.next_legals` (which OG-MARL's loaders ignore), so that an import gives the exported dataset back exactly,
and the dataset's manifest, in the vault's metadata under `inspo`.

flashbax is optional: `pip install 'inspo[vault]'`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inspo.data.format import Dataset, DatasetError
from inspo.data.trusted import binary, describe_env, integer_actions, require_legal_action, source_digest
from inspo.envs import EnvInfo
from inspo.provenance import portable_path

__all__ = ["REWARD_MODES", "export_vault", "find_vault", "import_vault"]

INSTALL_HINT = "pip install 'inspo[vault]' (flashbax)"
METADATA = "metadata.json"
REWARD_MODES = ("shared", "sum", "mean")
"""How per-agent rewards become the team reward: `shared` (every agent holds the team reward, as in OG-MARL's SMAC
vaults; refused when they differ), `sum` or `mean` over the agents."""


def _flashbax() -> tuple[type, type]:
    """flashbax's `Vault` and `TrajectoryBufferState`, or an ImportError that says what to install."""
    try:
        from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
        from flashbax.vault import Vault
    except ImportError as exc:
        raise ImportError(f"reading and writing vaults needs flashbax, which is not installed; {INSTALL_HINT}") from exc
    return Vault, TrajectoryBufferState


def find_vault(src: str | os.PathLike[str], uid: str | None = None) -> Path:
    """The folder of one dataset of a vault: `src` itself when it holds `metadata.json`, else its subfolder `uid`
    (which may be left out when there is only one)."""
    root = Path(src).resolve()
    if (root / METADATA).is_file():
        if uid is not None and uid != root.name:
            raise ValueError(f"{src} is the vault dataset '{root.name}', not '{uid}'")
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"vault {src} does not exist")
    uids = sorted(p.name for p in root.iterdir() if (p / METADATA).is_file())
    if uid is not None:
        if uid not in uids:
            raise ValueError(f"vault {src} has no dataset '{uid}'; it has {uids}")
        return root / uid
    if len(uids) != 1:
        raise ValueError(f"{src} is not a vault with one dataset: it holds {uids or 'none'} (folders with "
                         f"{METADATA}); name one with uid= (--uid)")
    return root / uids[0]


def _read(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The vault's arrays, keyed by path (`infos.legals`), and its metadata."""
    vault_cls, _ = _flashbax()
    with contextlib.redirect_stdout(io.StringIO()):  # flashbax prints where the vault is; the CLI prints JSON
        vault = vault_cls(vault_name=folder.parent.name, rel_dir=str(folder.parent.parent), vault_uid=folder.name)
        tree = vault.read().experience
    flat: dict[str, np.ndarray] = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                visit(f"{prefix}{key}.", value)
        else:
            flat[prefix[:-1]] = np.asarray(node)

    visit("", tree)
    return flat, json.loads((folder / METADATA).read_text())


def _per_step(name: str, array: np.ndarray, shape: tuple[int, int], *, agents: bool) -> np.ndarray:
    """`array` as [B, T, N] (`agents`) or [B, T]; a trailing axis of size 1 is dropped, [B, T] is broadcast."""
    if array.ndim == len(shape) + 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if agents and array.shape == shape[:2]:
        array = np.broadcast_to(array[..., None], shape)
    expected = shape if agents else shape[:2]
    if array.shape != expected:
        raise DatasetError(f"vault key '{name}' has shape {array.shape}, expected {expected} (B, T"
                           f"{', N' if agents else ''}) like 'actions'")
    return array


def _binary(name: str, array: np.ndarray) -> np.ndarray:
    return binary(f"vault key '{name}'", array)


def _actions(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return integer_actions("vault key 'actions'", _per_step("actions", array, shape, agents=True))


def _team_reward(array: np.ndarray, shape: tuple[int, int, int], reward: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise DatasetError(f"vault key 'rewards' has dtype {array.dtype}, expected numbers")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1 and array.shape[:2] == shape[:2]):
        return _per_step("rewards", array, shape, agents=False).astype(np.float64)
    array = _per_step("rewards", array, shape, agents=True).astype(np.float64)
    if reward == "sum":
        return array.sum(-1)
    if reward == "mean":
        return array.mean(-1)
    differs = np.any(array != array[..., :1], axis=-1)
    if differs.any():
        b, t = (int(i) for i in np.argwhere(differs)[0])
        raise DatasetError(f"the agents' rewards differ at stream {b}, step {t} ({array[b, t].tolist()}), so they "
                           f"are not one shared team reward; choose reward='sum' or 'mean' (--reward)")
    return array[..., 0]


def import_vault(src: str | os.PathLike[str], env: str, *, uid: str | None = None,
                 reward: Literal["shared", "sum", "mean"] = "shared", episode_limit: int | None = None) -> Dataset:
    """Convert one dataset of the vault `src` (see `find_vault`), recorded on environment `env`, to a `Dataset`.

    `env` is an id for `inspo.envs.make`; where the environment cannot be built here (its optional dependency, e.g.
    StarCraft II, is absent), the data's shapes describe it and `episode_limit` (default: the longest episode)
    its step limit. `reward`: see `REWARD_MODES`. Steps after the last complete episode of a stream are left out
    (the manifest counts them).
    """
    if reward not in REWARD_MODES:
        raise ValueError(f"unknown reward mode {reward!r}; expected one of {', '.join(REWARD_MODES)}")
    folder = find_vault(src, uid)
    digest = source_digest(folder)
    flat, metadata = _read(folder)
    missing = sorted({"observations", "actions", "rewards", "terminals"} - set(flat))
    if missing:
        raise DatasetError(f"vault {folder} lacks {missing}; it has {sorted(flat)}")
    if flat["actions"].ndim not in (3, 4) or flat["observations"].ndim < 4:
        raise DatasetError(f"vault {folder}: expected actions [B, T, N] and observations [B, T, N, ...], got "
                           f"{flat['actions'].shape} and {flat['observations'].shape}")
    b, t, n = flat["actions"].shape[:3]
    obs = flat["observations"]
    if obs.shape[:3] != (b, t, n) or obs.dtype.kind not in "biuf":
        raise DatasetError(f"vault key 'observations' is {obs.dtype} {obs.shape}, expected numbers "
                           f"[{b}, {t}, {n}, ...]")
    obs = obs.reshape(b, t, n, -1).astype(np.float32)
    actions = _actions(flat["actions"], (b, t, n))
    team = _team_reward(flat["rewards"], (b, t, n), reward)
    term = _binary("terminals", _per_step("terminals", flat["terminals"], (b, t, n), agents=True))
    trunc = (_binary("truncations", _per_step("truncations", flat["truncations"], (b, t, n), agents=True))
             if "truncations" in flat else np.zeros_like(term))
    if "infos.legals" in flat:
        legals = _binary("infos.legals", flat["infos.legals"])
        if legals.ndim != 4 or legals.shape[:3] != (b, t, n):
            raise DatasetError(f"vault key 'infos.legals' has shape {legals.shape}, expected ({b}, {t}, {n}, A)")
        require_legal_action("vault key 'infos.legals'", legals, "stream, step, agent")
    else:
        legals = np.ones((b, t, n, int(actions.max()) + 1), dtype=bool)
    if "infos.state" in flat:
        state = flat["infos.state"]
        if state.shape[:2] != (b, t) or state.dtype.kind not in "biuf":
            raise DatasetError(f"vault key 'infos.state' is {state.dtype} {state.shape}, expected numbers "
                               f"[{b}, {t}, S]")
        state = state.reshape(b, t, -1).astype(np.float32)
    else:
        state = obs.reshape(b, t, -1)
    end = np.all(term | trunc, axis=-1)
    terminated = end & np.any(term, axis=-1)
    arrays: dict[str, list[np.ndarray]] = {}
    dropped, lengths = 0, []
    exported = "next_observations" in flat
    if exported:
        flat["infos.next_legals"] = _binary("infos.next_legals", flat["infos.next_legals"])
    for row in range(b):
        ends = np.flatnonzero(end[row])
        keep = int(ends[-1]) + 1 if ends.size else 0
        dropped += t - keep
        starts = np.concatenate([[0], ends[:-1] + 1]) if ends.size else np.zeros(0, dtype=np.int64)
        lengths.extend((ends - starts + 1).tolist())
        episode_start = np.zeros(keep, dtype=bool)
        episode_start[starts] = True
        fields = {"obs": obs[row, :keep], "state": state[row, :keep], "avail": legals[row, :keep],
                  "actions": actions[row, :keep], "reward": team[row, :keep], "terminated": terminated[row, :keep],
                  "truncated": end[row, :keep] & ~terminated[row, :keep], "episode_start": episode_start}
        for name, key in (("obs", "next_observations"), ("state", "infos.next_state"), ("avail", "infos.next_legals")):
            if exported:
                following = flat[key][row, :keep].reshape(fields[name].shape)
            else:
                # The next step's values, except after an episode's last step, whose own stand in (see above).
                following = np.concatenate([fields[name][1:], fields[name][-1:]])
                following[ends] = fields[name][ends]
            fields[f"next_{name}"] = following
        for name, value in fields.items():
            arrays.setdefault(name, []).append(value)
    if not lengths:
        raise DatasetError(f"vault {folder} holds no complete episode (no step where every agent is terminal or "
                           f"truncated)")
    data = {name: np.concatenate(parts) for name, parts in arrays.items()}
    recorded = json.loads(metadata["inspo"]) if isinstance(metadata.get("inspo"), str) else None
    shapes = EnvInfo(env, n, obs.shape[-1], state.shape[-1], legals.shape[-1], max(lengths))
    described, origin = describe_env(env, shapes, "vault", episode_limit=episode_limit, recorded=recorded)
    behaviour = {
        "kind": "vault-import", "trusted": True, "vault": portable_path(folder), "uid": folder.name, "sha256": digest,
        "reward": reward, "env_from": origin, "dropped_incomplete_steps": dropped,
        "legals": "infos.legals" if "infos.legals" in flat else "all actions (the vault has no infos.legals)",
        "state": "infos.state" if "infos.state" in flat else "observations concatenated (the vault has no infos.state)",
        "final_next": "recorded" if exported else "copies of the last step (a vault stores no next observation)",
        **({"original": recorded["behaviour"]} if recorded else {}),
    }
    return Dataset.create(data, described, behaviour=behaviour, seed=recorded["seed"] if recorded else None,
                          source=f"imported from flashbax vault {portable_path(folder)} (sha256 {digest})")


def export_vault(ds: Dataset, out: str | os.PathLike[str], *, uid: str = "dataset", overwrite: bool = False) -> Path:
    """Write `ds` as dataset `uid` of the vault folder `out` (e.g. `vaults/mine.vlt`), in OG-MARL's layout (one
    stream; team reward and end flags repeated per agent; legals and terminals as float32 0/1, as OG-MARL's SMAC
    vaults hold them). Returns the dataset's folder, `out/uid`, written atomically."""
    vault_cls, state_cls = _flashbax()
    target = Path(out).resolve() / uid
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    n = ds.n_agents
    per_agent = lambda x: np.repeat(np.asarray(x)[:, None], n, axis=1)  # noqa: E731
    experience = {
        "observations": ds.obs, "actions": ds.actions.astype(np.int32),
        "rewards": per_agent(ds.reward).astype(np.float32),
        "terminals": per_agent(ds.terminated).astype(np.float32),
        "truncations": per_agent(ds.truncated).astype(np.float32),
        "infos": {"legals": ds.avail.astype(np.float32), "state": ds.state,
                  "next_state": ds.next_state, "next_legals": ds.next_avail.astype(np.float32)},
        "next_observations": ds.next_obs,
    }
    experience = _tree_map(lambda x: np.ascontiguousarray(x)[None], experience)
    manifest = {key: ds.manifest[key] for key in ("env", "behaviour", "seed", "source", "counts", "returns")}
    tmp_name = f".{uid}.tmp-{uuid.uuid4().hex}"
    tmp = target.parent / tmp_name
    import jax.numpy as jnp  # flashbax depends on jax

    state = state_cls(experience=experience, current_index=jnp.array(len(ds)), is_full=jnp.array(False))
    old = target.parent / f".{uid}.old-{uuid.uuid4().hex}"  # the previous dataset, kept until the new one is in place
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            vault = vault_cls(vault_name=target.parent.name, experience_structure=experience,
                              rel_dir=str(target.parent.parent), vault_uid=tmp_name,
                              metadata={"inspo": json.dumps(manifest)})
            written = vault.write(state)
        if written != len(ds):
            raise RuntimeError(f"flashbax wrote {written} steps of {len(ds)} to {tmp}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def _tree_map(fn: Any, tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _tree_map(fn, value) for key, value in tree.items()}
    return fn(tree)
