"""Training a population: the P member runs of a config with ``seeds`` or ``per_member``
(:meth:`~inspo.config.TrainConfig.members`) in one process, on one copy of the dataset.

Member p is the single run of ``members()[p]`` (``inspo train`` with that config), bit for bit where the members
update one after another and to rounding where they are stacked (InSPO's and behaviour cloning's members): its
networks are built under ``torch.manual_seed(seed_p)`` and from the global RNG state its single run would have at
that point (each member keeps its own, swapped in around what draws from it), its batches and its learner's draws
come from its own generator, and its folder ``<out>/seed_<s>`` (or ``<out>/member_<p>``) holds what the single run
writes there: ``checkpoint.pt``, ``best.pt``, ``final.pt``, ``metrics.json`` and its logs; ``inspo evaluate`` reads
them and ``inspo train --resume <member folder>`` continues that member alone. The members' iterations run through
:func:`~inspo.algos.population.make_population` (and behaviour cloning through
:func:`~inspo.algos.population.make_bc_population`).

:func:`train_members` trains a given list of single-run configs (each with its own ``out``, e.g. the run cache's
folders of ``inspo reproduce``) in the same way, without a population folder: each member's folder ends as its
single run's.

``<out>/population.json`` holds the population's config (so that ``inspo train --resume <out>`` continues it),
the members and where they differ, and, once done, each member's returns and their mean and std.

Every member is checkpointed at the same steps. Before a member's ``checkpoint.pt`` is replaced, it is kept as
``checkpoint.previous.pt``, so that a population killed between two members' writes resumes every member from
the last step that all of them saved.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspo import checkpoint as ckpt_io
from inspo import jsonio, precision, run_folder
from inspo.algos import LEARNERS
from inspo.algos.bc import BehaviourCloning
from inspo.algos.learner import Learner
from inspo.algos.parallel import Shard
from inspo.algos.population import LearnerPopulation, make_bc_population, make_population
from inspo.clones import Clones, clone_key, clone_state, start_from
from inspo.config import MEMBER_FIELDS, TrainConfig
from inspo.data import load_dataset
from inspo.data.format import check_recorded_env
from inspo.envs import optimum
from inspo.errors import InspoError
from inspo.evaluation import run_environment
from inspo.progress import ProgressBar
from inspo.provenance import package_info
from inspo.run_record import KEPT, RunRecord, TrainResult, check_finite, resumed_cpu_time
from inspo.stopping import StopRequests, TrainingInterrupted, left_behind
from inspo.training import build_learner, stopped_message
from inspo.training_data import batch, behaviour_columns, diagnostic_rows, to_device

__all__ = ["PREVIOUS", "SUMMARY", "PopulationResult", "check_members", "read_summary", "train_members",
           "train_population"]

SUMMARY = "population.json"
"""The population's file in its ``out`` folder."""
PREVIOUS = "checkpoint.previous.pt"
"""A member's training state one checkpoint before its ``checkpoint.pt``."""


@dataclass
class PopulationResult:
    """What a population produced: ``members[p]`` is member p's :class:`~inspo.training.TrainResult` (its
    ``wall_time`` and ``updates_per_second`` are the population's: the members train together; its ``cpu_time``
    its share of the population's), ``configs[p]``
    its config. ``updates_per_second`` counts every member's iterations (P per population iteration)."""

    members: list[TrainResult]
    configs: list[TrainConfig]
    summary_path: str | None = None
    wall_time: float = 0.0
    updates_per_second: float = 0.0
    differences: dict[str, list[Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The population in numbers: each member's returns, and their mean and std over members."""
        finals = [r.final_return for r in self.members]
        bests = [r.best_return for r in self.members]
        first = self.members[0]
        return {"members": len(self.members), "differences": self.differences,
                "final_return": _spread(finals), "best_return": _spread(bests),
                "behaviour_return": first.behaviour_return, "optimum": first.optimum,
                "updates_per_second": self.updates_per_second, "wall_time": self.wall_time,
                "per_member": [_member_summary(c, r) for c, r in zip(self.configs, self.members)]}


def train_population(config: TrainConfig, progress: bool = False, resume: bool = False,
                     overwrite: bool = False, clones: str | os.PathLike | None = None) -> PopulationResult:
    """Train the members of ``config`` (a config with ``seeds`` or ``per_member``) together; see the module
    docstring. ``resume`` and ``overwrite`` act as in :func:`inspo.training.train`, on the population's folder and
    every member's: a folder that holds a run is refused without one of them, and a busy one at once. ``clones``:
    a folder of behaviour clones that a fresh population starts from or saves to (:mod:`inspo.clones`)."""
    config.validate()
    precision.warn_if_emulated(config.precision, config.device)
    if not config.is_population():
        raise ValueError("train_population needs config.seeds or config.per_member; train a single run with "
                         "inspo.train")
    if resume and overwrite:
        raise ValueError("resume=True continues the population in config.out and overwrite=True deletes it; pass one")
    before = left_behind(config.out, resume)
    return _guarded(config.members(), config, progress, resume, overwrite, before, clones)


def train_members(members: Sequence[TrainConfig], progress: bool = False, resume: bool = False,
                  overwrite: bool = False, clones: str | os.PathLike | None = None) -> PopulationResult:
    """Train the single-run configs ``members`` as one population: member p is exactly ``inspo.train(members[p])``
    and its folder (its own ``out``, or none) ends as that run's (``checkpoint.pt``, ``best.pt``, ``final.pt``,
    ``metrics.json``, its logs); no ``population.json`` is written. ``resume``: every member continues from its own
    ``checkpoint.pt`` (or ``checkpoint.previous.pt``: the last step that every member saved); ``overwrite``: what
    the members' folders held is replaced; ``clones`` as in :func:`train_population`. The members must be able to
    train together (:func:`check_members`)."""
    members = list(members)
    check_members(members)
    if resume and overwrite:
        raise ValueError("resume=True continues the members' runs and overwrite=True deletes them; pass one")
    out = members[0].out
    before = ("nothing was saved (no out)" if out is None
              else f"the members' folders ({out}, ...) are unchanged" if resume
              else f"no run was written to the members' folders ({out}, ...)")
    return _guarded(members, None, progress, resume, overwrite, before, clones)


_MAY_DIFFER = ("seed", "out", *MEMBER_FIELDS)


def check_members(members: Sequence[TrainConfig]) -> None:
    """ValueError unless ``members`` can train as one population: at least one, each a single run (no ``seeds`` or
    ``per_member``, no ``ddp`` or ``cuda_graph``), alike in every field but the seed, ``out`` and the
    :data:`~inspo.config.MEMBER_FIELDS`, and each with a folder of its own (or none of them with one)."""
    if not members:
        raise ValueError("a population needs at least one member config, got none")
    for p, m in enumerate(members):
        m.validate()
        if m.is_population() or m.ddp or m.cuda_graph:
            raise ValueError(f"population member {p} must be a single run in one process (no seeds, per_member, "
                             f"ddp or cuda_graph), got seeds={m.seeds} per_member={m.per_member} ddp={m.ddp} "
                             f"cuda_graph={m.cuda_graph}")
    first = members[0].to_dict()
    for p, m in enumerate(members[1:], start=1):
        other = m.to_dict()
        for key in first:
            if key not in _MAY_DIFFER and other[key] != first[key]:
                raise ValueError(f"population members 0 and {p} differ in {key} ({first[key]!r} and {other[key]!r}); "
                                 f"the members of a population may differ only in {', '.join(_MAY_DIFFER)}")
    outs = [m.out for m in members]
    if None in outs and any(o is not None for o in outs):
        raise ValueError(f"either every population member has an out folder or none has, got {outs}")
    paths = [Path(o).resolve() for o in outs if o is not None]
    if len(set(paths)) < len(paths):
        raise ValueError(f"population members share an out folder: {outs}; each member writes a run of its own")


def _guarded(members: list[TrainConfig], population: TrainConfig | None, progress: bool, resume: bool,
             overwrite: bool, before: str, clones: str | os.PathLike | None) -> PopulationResult:
    """Train ``members`` with the threads of their config, stop requests deferred to the end of a step, and their
    folders (and ``population.out``, the population's own) claimed."""
    threads = torch.get_num_threads()
    if members[0].threads is not None:
        torch.set_num_threads(members[0].threads)
    try:
        with (StopRequests(before) as stop, _claim_folders(population, members, resume, overwrite),
              contextlib.ExitStack() as closing):
            return _train_population(members, population, progress, resume, stop, closing, clones)
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _claim_folders(population: TrainConfig | None, members: list[TrainConfig], resume: bool, overwrite: bool
                   ) -> Iterator[None]:
    """Hold the population's folder (if any) and every member's (:func:`inspo.run_folder.claim`)."""
    with contextlib.ExitStack() as stack:
        if population is not None and population.out is not None:
            stack.enter_context(run_folder.claim(population.out, resume=resume, overwrite=overwrite,
                                                 files=(SUMMARY,)))
        for member in members:
            if member.out is not None:
                stack.enter_context(run_folder.claim(member.out, resume=resume, overwrite=overwrite))
        yield


def _train_population(members: list[TrainConfig], population: TrainConfig | None, progress: bool, resume: bool,
                      stop: StopRequests, closing: contextlib.ExitStack,
                      clones: str | os.PathLike | None) -> PopulationResult:
    """Train ``members`` together; ``population``: the config they are the members of, whose folder gets
    ``population.json`` (None for :func:`train_members`)."""
    config = members[0]  # what every member shares (check_members; TrainConfig.members)
    device = torch.device(config.device)
    shard = Shard(device=device)
    dtype = getattr(torch, config.dtype)
    ds = load_dataset(config.dataset, recorded_env=False)
    sha256 = ds.manifest["manifest_sha256"]
    env_name = ds.manifest["env"]["id"]
    env = run_environment(config, ds.manifest)  # one for all: evaluations reset it by seed
    if config.eval != "none":
        check_recorded_env(ds.manifest)
        ds.validate(env)
    info = env.info
    data = to_device(ds, device, dtype, config.normalize_state)
    n_rows = data["obs"].shape[0]
    bc_steps = config.bc_steps
    total = bc_steps + (config.iters if config.algo in LEARNERS else 0)
    size = len(members)
    bar = ProgressBar(total, f"train x{size}", enabled=progress)
    closing.callback(bar.close)
    out = Path(population.out) if population is not None and population.out else None
    saving = config.out is not None
    books = [RunRecord(m, env, sha256) for m in members]

    # Member p's global RNG state (what its single run's torch.get_rng_state() would be), swapped in around every
    # draw from the global RNG: building its networks (the learner's, and the final policy's copy).
    rng: list[torch.Tensor] = []

    @contextlib.contextmanager
    def member_rng(p: int) -> Iterator[None]:
        torch.set_rng_state(rng[p])
        yield
        rng[p] = torch.get_rng_state()

    gens: list[torch.Generator] = []
    bcs: list[BehaviourCloning] = []
    for m in members:
        torch.manual_seed(m.seed)
        gens.append(torch.Generator(device=device).manual_seed(m.seed))
        bc = BehaviourCloning(m, info.n_agents, info.obs_dim, info.n_actions, device, shard)
        bc.policy.to(dtype)
        bcs.append(bc)
        rng.append(torch.get_rng_state())
    saved: list[dict[str, Any]] | None = None
    if resume:
        saved = _resume_states(population, books, device)
        for p, state in enumerate(saved):
            bcs[p].load_state_dict(state["bc"])
            gens[p].set_state(state["generator"])
            rng[p] = state["torch_rng"]
    bc_pop = make_bc_population(bcs)
    behaviour: list[dict[str, torch.Tensor]] = []
    pop: LearnerPopulation | None = None

    def start_learners() -> list[Learner]:
        bc_pop.sync()
        learners = []
        for p, m in enumerate(members):
            behaviour.append(behaviour_columns(bcs[p].policy, data))
            with member_rng(p):
                learners.append(build_learner(m, bcs[p].policy, info.state_dim, device, gens[p], shard))
        return learners

    def policies() -> list[Any]:
        if pop is None:
            bc_pop.sync()
            return [bc.policy for bc in bcs]
        pop.sync()
        return [learner.pi for learner in pop.learners]

    probes = [diagnostic_rows(n_rows, m.batch_size, device) for m in members]

    def diagnostics() -> list[dict[str, float]]:
        """Every member's :meth:`~inspo.algos.learner.Learner.diagnostics` (after :func:`policies`: synced)."""
        return [learner.diagnostics(batch(data, rows, b))
                for learner, rows, b in zip(pop.learners, probes, behaviour)]

    def save_states() -> None:
        bc_pop.sync()
        if pop is not None:
            pop.sync()
        _write_summary(out, population, members, status="running")
        for p, book in enumerate(books):
            _keep_previous(book.state_path)
            book.save_state(bcs[p], None if pop is None else pop.learners[p], gens[p], rng[p])

    for book in books:
        book.open_log(closing, resumed=saved is not None)
    if saved is not None and saved[0]["learner"] is not None:
        learners = start_learners()
        for learner, state in zip(learners, saved):
            learner.load_state_dict(state["learner"])
        pop = make_population(learners)
    runs = [book.run for book in books]
    # As in a single run (inspo.training): only a population that starts afresh reuses or keeps its clone.
    cache = Clones(clones) if clones is not None and bc_steps > 0 and runs[0]["step"] == 0 else None
    key = clone_key(members, sha256) if cache is not None else None
    bc_rows: list[list[tuple[int, float]]] = [[] for _ in members]
    found = cache.load(key) if cache is not None else None
    if found is not None:
        rng[:] = [start_from(clone, bc, g, book) for clone, bc, g, book in zip(found, bcs, gens, books)]
        bc_pop.reload()
        cache = None
    started = time.perf_counter() - runs[0]["wall_time"]
    cpu_started = time.process_time() - resumed_cpu_time(runs[0], len(runs))
    checked = max(runs[0]["step"] - bc_steps, 0)  # the last iteration whose losses were checked finite
    stop.deferred = True  # from here on a stop waits for the end of the step, whose state is then saved
    for step in range(runs[0]["step"], total):
        idx = [torch.randint(n_rows, (m.batch_size,), generator=g, device=device) for m, g in zip(members, gens)]
        if step < bc_steps:
            losses = bc_pop.update([(data["obs"][i], data["avail"][i], data["actions"][i]) for i in idx])
            values = losses.tolist()
            bad = [p for p, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"population member {bad[0]} (seed {members[bad[0]].seed}): non-finite "
                                         f"bc_nll ({values[bad[0]]}) at behaviour-cloning step {step}; {KEPT}")
            if (step + 1) % config.log_every == 0:
                for book, rows, value in zip(books, bc_rows, values):
                    book.log_row(step + 1, 0, {"bc_nll": value})
                    rows.append((step + 1, value))
            if step % 100 == 0:
                bar.update(step + 1, f"bc nll {np.mean(values):.4f}")
            if step == bc_steps - 1:
                for run, value in zip(runs, values):
                    run["bc_nll"] = value
                if cache is not None:
                    bc_pop.sync()
                    cache.save(key, [clone_state(bc, g, state, value, rows)
                                     for bc, g, state, value, rows in zip(bcs, gens, rng, values, bc_rows)])
        else:
            it = step - bc_steps + 1
            if pop is None:
                pop = make_population(start_learners())
                current = policies()
                for book, policy, extra in zip(books, current, diagnostics()):
                    book.record(0, {"bc_nll": book.run["bc_nll"], **extra}, policy)
            t0 = time.perf_counter()
            try:
                stats = pop.update([batch(data, i, b) for i, b in zip(idx, behaviour)])
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} at iteration {it}; {KEPT}") from None
            except Exception:
                checked = check_finite(pop, checked, it)  # a NaN loss may be what broke the iteration
                raise
            spent = time.perf_counter() - t0
            for run in runs:
                run["update_time"] += spent
            evaluate_now = it % config.eval_every == 0 or it == config.iters
            if evaluate_now or it % config.check_every == 0:
                checked = check_finite(pop, checked, it)
            if evaluate_now:
                current = policies()
                for book, policy, member_stats, extra in zip(books, current, stats, diagnostics()):
                    book.record(it, {**shard.reduce_stats(member_stats), **extra}, policy)
                returns = [r["curve"][-1].get("return") for r in runs]  # none with eval="none"
                bar.update(bc_steps + it, f"iteration {it}" if None in returns else f"return {np.mean(returns):.4f}")
            elif it % config.log_every == 0:
                for book, member_stats in zip(books, stats):
                    book.log_row(bc_steps + it, it, shard.reduce_stats(member_stats))
                bar.update(bc_steps + it, f"iteration {it}")
        cpu_share = (time.process_time() - cpu_started) / len(runs)
        for run in runs:
            run["step"] = step + 1
            run["wall_time"] = time.perf_counter() - started
            run["cpu_time"] = cpu_share
        stopping = stop.signal is not None
        if saving and ((step + 1) % config.checkpoint_every == 0 or stopping):
            if pop is not None:  # a checkpoint holds a checked state only
                checked = check_finite(pop, checked, step + 1 - bc_steps)
            save_states()
        if stopping:
            bar.close()
            raise TrainingInterrupted(_stopped(stop, step + 1, total, population, members))
    if not runs[0]["curve"]:  # behaviour cloning alone (algo "bc", or iters == 0): evaluate the cloned policies
        for book, policy in zip(books, policies()):
            book.record(0, {"bc_nll": book.run["bc_nll"]}, policy)
    bar.close()

    final = policies()
    results = []
    for p, (book, policy) in enumerate(zip(books, final)):
        with member_rng(p):
            results.append(book.result(policy, ds.manifest["returns"]["mean"],
                                       optimum(env) if config.eval != "none" else None, learned=pop is not None))
    update_time = runs[0]["update_time"]
    outcome = PopulationResult(
        members=results, configs=members, wall_time=runs[0]["wall_time"], differences=_differences(members),
        updates_per_second=size * config.iters / update_time if pop is not None and update_time else 0.0)
    if saving:
        for p, (book, policy) in enumerate(zip(books, final)):
            book.save_final(policy)
            _keep_previous(book.state_path)
            book.save_state(bcs[p], None if pop is None else pop.learners[p], gens[p], rng[p])
            book.save_metrics(results[p], env_name)
        for book in books:  # every member is done: its folder ends as its single run's
            (book.out / PREVIOUS).unlink(missing_ok=True)
    if out is not None and population is not None:
        outcome.summary_path = str(out / SUMMARY)
        _write_summary(out, population, members, status="done", result=outcome)
    return outcome


def _stopped(stop: StopRequests, step: int, total: int, population: TrainConfig | None,
             members: list[TrainConfig]) -> str:
    """What a population stopped by a signal says: how to resume it."""
    if population is not None or members[0].out is None:
        return stopped_message(stop, step, total, None if population is None or population.out is None
                               else Path(population.out))
    by = signal.Signals(stop.signal).name if stop.signal is not None else "a signal"
    return (f"stopped by {by} after step {step} of {total}; every member's folder holds its checkpoint.pt: train "
            f"the same members with resume=True to continue")


def _resume_states(population: TrainConfig | None, books: list[RunRecord], device: torch.device
                   ) -> list[dict[str, Any]]:
    """Every member's training state at the last step that all of them saved (a member's ``checkpoint.pt`` or,
    when the population stopped between two members' writes, its ``checkpoint.previous.pt``); the population's
    ``population.json`` must hold its config."""
    if population is not None:
        if population.out is None:
            raise FileNotFoundError("nothing to resume: the population has no out folder")
        recorded = read_summary(population.out)
        if replace(TrainConfig.from_dict(recorded["config"]), out=population.out) != population:
            raise ValueError(f"{Path(population.out) / SUMMARY} was written by a population with another config; "
                             f"resume with the same one")
    elif books[0].out is None:
        raise FileNotFoundError("nothing to resume: the members have no out folder")
    where = population.out if population is not None else "the members' folders"
    found: list[dict[int, tuple[dict[str, Any], Path]]] = []
    for book in books:
        states: dict[int, tuple[dict[str, Any], Path]] = {}
        for path in (book.out / PREVIOUS, book.state_path):  # the current file wins a tie
            if path.is_file():
                state = ckpt_io.load(path, map_location=device)
                states[state["run"]["step"]] = (state, path)
        if not states:
            raise FileNotFoundError(f"nothing to resume: {book.state_path} does not exist")
        found.append(states)
    step = min(max(states) for states in found)
    chosen = []
    for p, (book, states) in enumerate(zip(books, found)):
        if step not in states:
            raise ValueError(f"cannot resume the population in {where}: member {p} ({book.out}) holds the "
                             f"state of step(s) {sorted(states)}, not step {step} that every other member has")
        state, path = states[step]
        book.adopt(state, path)
        chosen.append(state)
    return chosen


def read_summary(out: str | os.PathLike) -> dict[str, Any]:
    """The ``population.json`` of the population in ``out``; FileNotFoundError if there is none, InspoError if it
    is not one."""
    path = Path(out) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    try:
        recorded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InspoError(f"{path} is not valid JSON: {exc}") from None
    if not (isinstance(recorded, dict) and isinstance(recorded.get("config"), dict)):
        raise InspoError(f"{path} holds no population config (a JSON object with a 'config' object)")
    return recorded


def _keep_previous(path: Path) -> None:
    """Keep ``path`` (a member's ``checkpoint.pt``) as ``checkpoint.previous.pt`` before it is replaced: linked
    (or copied) to a temporary first, so that either file is whole at every moment."""
    if not path.is_file():
        return
    tmp = path.with_name(f".{PREVIOUS}.{os.getpid()}")  # a name run_folder.claim cleans up if this is killed
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(path, tmp)
    os.replace(tmp, path.with_name(PREVIOUS))


def _differences(members: list[TrainConfig]) -> dict[str, list[Any]]:
    """The config fields in which the members differ (``out`` aside), with each member's value."""
    dicts = [m.to_dict() for m in members]
    return {k: [d[k] for d in dicts] for k in dicts[0] if k != "out" and any(d[k] != dicts[0][k] for d in dicts)}


def _spread(values: list[float | None]) -> dict[str, float | None]:
    if any(v is None for v in values):  # eval="none": no returns to summarise
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _member_summary(cfg: TrainConfig, result: TrainResult) -> dict[str, Any]:
    won = {} if result.final_win_rate is None else {"final_win_rate": result.final_win_rate}
    return {"seed": cfg.seed, "out": cfg.out, "final_return": result.final_return,
            "best_return": result.best_return, **won, "checkpoint": result.checkpoint,
            "metrics": result.metrics_path}


def _write_summary(out: Path | None, config: TrainConfig | None, members: list[TrainConfig], status: str,
                   result: PopulationResult | None = None) -> None:
    """``<out>/population.json``: the config (what ``--resume`` reads), the members, and once ``done`` the result."""
    if out is None or config is None:
        return
    record: dict[str, Any] = {"status": status, "config": config.to_dict(),
                              "members": [{"index": p, "seed": m.seed, "out": m.out} for p, m in enumerate(members)],
                              "differences": _differences(members), "package": package_info()}
    if result is not None:
        record.update(result.summary())
    jsonio.write(out / SUMMARY, record)
