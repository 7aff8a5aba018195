"""SMAX datasets, played in batched rollouts by a behaviour policy of a given quality (deterministic per seed).

Qualities (the paper's, plus two scripted ones):

- `random`: uniform over the available actions.
- `heuristic`: SMAX's scripted unit controller for every ally.
- `expert`: the last snapshot of an online MAPPO run (`inspo.online`, `inspo online train`).
- `medium`: the snapshot of that run whose evaluated win rate is closest to half the expert's (ties: the one whose
  return is closest to half the expert's, then the earliest), or the scripted heuristic if its win rate (evaluated
  the same way) is closer still; the manifest records which.
- `medium-replay`: episodes of every snapshot from the first one up to the medium one, in training order, split
  evenly (the earlier snapshots take the remainder); when the heuristic is the medium policy, the snapshots up to
  the last one whose win rate does not exceed the heuristic's.
- `mixed`: half medium episodes, then half expert episodes.

The trained policies come from a folder written by `inspo online train` (`policy=`; `--policy` on the command
line); without one, from `data/smax_policies/<map>/` of the repository when it ships one for the map. The manifest
records the behaviour policy's own mean return and win rate over the recorded episodes, and the snapshot files
(with their SHA-256, update and evaluated win rate) that played them.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from inspo import jsonio
from inspo.checkpoint import write_text
from inspo.data.format import SHIPPED_DATA, Dataset
from inspo.envs import make
from inspo.policy import SampledPolicy, load_policy, load_snapshots, snapshot_eval_seed
from inspo.provenance import portable_path

__all__ = ["ONLINE_QUALITIES", "SHIPPED_POLICIES", "SMAX_QUALITIES", "behaviour_choice", "export_policies",
           "generate_smax", "policy_folder"]

SMAX_QUALITIES: dict[str, str] = {
    "random": "uniform over the available actions",
    "heuristic": "SMAX's scripted heuristic for every ally",
    "medium": "the online snapshot (or the heuristic) whose win rate is closest to half the expert's",
    "expert": "the last snapshot of online MAPPO training",
    "medium-replay": "the online snapshots up to the medium one, in training order",
    "mixed": "half medium, half expert episodes",
}
"""Data qualities that `generate_smax` can produce -> description."""

ONLINE_QUALITIES = ("medium", "expert", "medium-replay", "mixed")
"""The qualities played by online-trained policies (the others are scripted)."""

SHIPPED_POLICIES = SHIPPED_DATA / "smax_policies"
"""Small online-trained policies per map, shipped with the repository."""


def policy_folder(env_name: str, policy: str | Path | None) -> Path:
    """The folder of online snapshots to use for `env_name`: `policy`, else the shipped one for the map."""
    if policy is not None:
        return Path(policy)
    shipped = SHIPPED_POLICIES / env_name.split(":", 1)[1]
    if (shipped / "snapshots.json").is_file():
        return shipped
    raise ValueError(
        f"this quality needs an online-trained policy for {env_name} and none is shipped in {shipped}; train one "
        f"with `inspo online train --env {env_name} --steps 2000000 --out DIR` and pass --policy DIR "
        f"(policy=DIR in Python)")


def _actor(folder: Path, snap: dict[str, Any]) -> Any:
    return load_policy(folder / snap["file"]).network


def behaviour_choice(meta: dict[str, Any], heuristic_win_rate: float, heuristic_return: float) -> dict[str, Any]:
    """Which snapshots play `medium` and `medium-replay` (see the module docstring), from the `snapshots.json` of
    an online run and the heuristic's evaluated win rate and return. Returns `expert` (a snapshot record),
    `medium` (a snapshot record or None for the heuristic), `replay` (snapshot records, training order)."""
    snaps = meta["snapshots"]
    expert = snaps[-1]
    half_win, half_return = expert["win_rate"] / 2, expert["return"] / 2

    def distance(win: float, ret: float) -> tuple[float, float]:
        return abs(win - half_win), abs(ret - half_return)

    best = min(range(len(snaps)), key=lambda k: (*distance(snaps[k]["win_rate"], snaps[k]["return"]), k))
    heuristic_closer = distance(heuristic_win_rate, heuristic_return) < distance(snaps[best]["win_rate"],
                                                                                 snaps[best]["return"])
    if heuristic_closer:
        below = [k for k, s in enumerate(snaps) if s["win_rate"] <= heuristic_win_rate]
        last = max(below) if below else 0
        return {"expert": expert, "medium": None, "replay": snaps[:last + 1]}
    return {"expert": expert, "medium": snaps[best], "replay": snaps[:best + 1]}


_HEURISTIC_EVALS: dict[tuple, tuple[float, float]] = {}
"""Evaluations of the heuristic already made in this process (each generation of an online quality needs one)."""


def _heuristic_eval(env: Any, meta: dict[str, Any]) -> tuple[float, float]:
    """The heuristic's win rate and return, evaluated as the snapshots were (same episodes, same count)."""
    from inspo.envs.smax import HeuristicPolicy

    cfg = meta["config"]
    key = (env.info.name, tuple(sorted(env.options.items())), cfg["eval_episodes"], cfg["seed"])
    if key not in _HEURISTIC_EVALS:
        played = env.rollout(HeuristicPolicy(env), cfg["eval_episodes"], seed=snapshot_eval_seed(cfg["seed"]))
        _HEURISTIC_EVALS[key] = played.win_rate, played.mean_return
    return _HEURISTIC_EVALS[key]


def _recorded_path(path: Path) -> str:
    """How a manifest names a policy file or folder: a shipped one by its path in the repository
    (``data/smax_policies/...``), whichever install read it (a checkout's ``data/``, a wheel's package data), so that
    the data's digest does not depend on the install; any other by its portable path."""
    try:
        relative = path.resolve().relative_to(SHIPPED_DATA.resolve())
    except ValueError:
        return portable_path(path)
    return f"data/{relative.as_posix()}"


def _snapshot_note(folder: Path, snap: dict[str, Any]) -> dict[str, Any]:
    return {"file": _recorded_path(folder / snap["file"]), "sha256": snap["sha256"], "index": snap["index"],
            "update": snap["update"], "env_steps": snap["env_steps"], "eval_return": snap["return"],
            "eval_win_rate": snap["win_rate"]}


def _split(total: int, parts: int) -> list[int]:
    """`total` episodes over `parts` sources, the earlier ones taking the remainder."""
    base, extra = divmod(total, parts)
    return [base + (k < extra) for k in range(parts)]


def generate_smax(env_name: str, quality: str, episodes: int, seed: int, *, episode_limit: int | None = None,
                  policy: str | Path | None = None) -> Dataset:
    """Play `episodes` episodes of `env_name` (`smax:<map>`) with the behaviour policy of `quality` and record them.

    `policy`: a folder written by `inspo online train`, for the qualities that need one (medium, expert,
    medium-replay, mixed); default: the one shipped for the map in `data/smax_policies/`. The same arguments give
    the same data. `episode_limit` defaults to SMAX's own (100 steps).
    """
    if not env_name.startswith("smax:"):
        raise ValueError(f"generate_smax needs an environment 'smax:<map>', got '{env_name}'")
    if quality not in SMAX_QUALITIES:
        raise ValueError(f"unknown quality '{quality}'; expected one of {', '.join(SMAX_QUALITIES)}")
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if quality in ONLINE_QUALITIES:
        folder = policy_folder(env_name, policy)  # before building the environment: a missing policy fails fast
    elif policy is not None:
        raise ValueError(f"quality '{quality}' is scripted and takes no policy folder (got {policy})")
    # jax is imported only when data are generated
    from inspo.envs.smax import HeuristicPolicy, UniformPolicy

    env = make(env_name, **({} if episode_limit is None else {"episode_limit": episode_limit}))
    behaviour: dict[str, Any] = {"quality": quality}
    if quality in ("random", "heuristic"):
        scripted = UniformPolicy(seed) if quality == "random" else HeuristicPolicy(env)
        sources: list[tuple[Any, int]] = [(scripted, episodes)]
        behaviour.update(kind="smax-scripted", policy=scripted.description)
    else:
        meta = load_snapshots(folder)
        if meta["env"] != env_name:
            raise ValueError(f"{folder} holds policies for {meta['env']}, not {env_name}")
        heuristic_win, heuristic_return = _heuristic_eval(env, meta)
        choice = behaviour_choice(meta, heuristic_win, heuristic_return)

        def player(snap: dict[str, Any] | None) -> Any:
            if snap is None:
                return HeuristicPolicy(env)
            return SampledPolicy(_actor(folder, snap), f"online snapshot {snap['file']}")

        if quality == "expert":
            plan = [choice["expert"]]
        elif quality == "medium":
            plan = [choice["medium"]]
        elif quality == "mixed":
            plan = [choice["medium"], choice["expert"]]
        else:
            plan = list(choice["replay"])[:episodes]  # never more sources than episodes
        sources = [(player(snap), count) for snap, count in zip(plan, _split(episodes, len(plan)))]
        medium = choice["medium"]
        behaviour.update(
            kind="smax-online", policy=SMAX_QUALITIES[quality], policy_folder=_recorded_path(folder),
            checkpoints=[None if snap is None else _snapshot_note(folder, snap) for snap in plan],
            medium={"source": "heuristic" if medium is None else "snapshot",
                    "snapshot": None if medium is None else _snapshot_note(folder, medium),
                    "heuristic_eval_win_rate": heuristic_win, "heuristic_eval_return": heuristic_return,
                    "expert_eval_win_rate": choice["expert"]["win_rate"],
                    "expert_eval_return": choice["expert"]["return"]},
            episodes_per_source=[count for _, count in sources])
    parts = []
    for k, (play, count) in enumerate(sources):
        # One seed per source, so a source's episodes do not depend on how many the others play.
        part_seed = seed if len(sources) == 1 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0] >> 1)
        parts.append(env.rollout(play, count, part_seed, record=True))
    returns = np.concatenate([p.returns for p in parts])
    won = np.concatenate([p.won for p in parts])
    lengths = np.concatenate([p.lengths for p in parts])
    transitions = {name: np.concatenate([p.transitions[name] for p in parts]) for name in parts[0].transitions}
    behaviour.update(mean_return=float(returns.mean()), win_rate=float(won.mean()),
                     mean_length=float(lengths.mean()))
    return Dataset.create(transitions, env, behaviour=behaviour, seed=seed,
                          source="generated by inspo.data.smax.generate_smax")


def export_policies(src: str | Path, dst: str | Path, env_name: str | None = None) -> dict[str, Any]:
    """Copy to `dst` the snapshots of the online run in `src` that the data qualities use (those up to the medium
    one, and the expert), with a `snapshots.json` listing only them: a small folder to ship (`data/smax_policies`)
    that selects the same behaviour policies as `src`. Returns the new index."""
    src, dst = Path(src), Path(dst)
    meta = load_snapshots(src)
    env = make(env_name or meta["env"])
    choice = behaviour_choice(meta, *_heuristic_eval(env, meta))
    keep = {s["index"] for s in choice["replay"]} | {choice["expert"]["index"]}
    if choice["medium"] is not None:
        keep.add(choice["medium"]["index"])
    kept = [s for s in meta["snapshots"] if s["index"] in keep]
    (dst / "snapshots").mkdir(parents=True, exist_ok=True)
    for snap in kept:
        shutil.copyfile(src / snap["file"], dst / snap["file"])
        assert hashlib.sha256((dst / snap["file"]).read_bytes()).hexdigest() == snap["sha256"]
    index = {k: v for k, v in meta.items() if k != "folder"}
    index["snapshots"] = kept
    index["exported_from"] = {"snapshots": len(meta["snapshots"]), "kept": sorted(keep)}
    text = jsonio.dumps(index, indent=2) + "\n"
    write_text(dst / "snapshots.json", text)
    return index
