"""``inspo tune --population K``: SMAC3 proposes trials in rounds, and the trials of a round train as populations.

A round asks SMAC3 (its ask/tell interface) for ``K x W`` trials, W being the number of workers (1 in this
process); they are split into populations of at most K trials that can train together (alike in every field but the
:data:`~inspo.config.MEMBER_FIELDS`: a search over ``hidden``, ``batch_size``, ``order``, ... or over the iteration
budget of ``--fidelity iters`` groups its trials by those values), each population trained in one process
(:func:`inspo.population_training.train_members`, every trial's seeds as members), the populations of a round in
parallel on the workers. Every trial is then told its result in the order it was asked, so the search is reproducible
for a given K and W, whatever order the populations finish in. Member p of a population is exactly the run
it would be alone, so a trial's cost is the one it has when trained alone; a population that fails (a non-finite
loss) trains its trials again one by one, so that only the trials that fail alone are recorded as crashed.

The rounds change what the optimiser has seen when it proposes (it proposes K x W trials before any of their
results), so a search with ``--population K`` proposes other configurations than one without; a resumed search
reaches the uninterrupted one's incumbent with the same K and W.
"""
from __future__ import annotations

import json
import time
import traceback
from typing import Any

from inspo.config import MEMBER_FIELDS

__all__ = ["optimize_in_rounds", "train_trials"]

Trial = tuple[dict[str, Any], int]
"""A trial to train: its values (by flat field name) and its iteration budget."""


def train_trials(objective: Any, trials: list[Trial]) -> list[dict[str, Any]]:
    """Train ``trials`` as one population (in this process or as a task on a dask worker); for each, in order,
    ``{"cost", "info", "time"}`` or, for a trial that failed, ``{"error", "traceback", "time"}``. ``time`` is the
    trial's share of the population's time (its trials have the same budget and seeds), so that a search's trial
    times add up to the time it spent. ``objective``: the search's ``inspo.tune._Objective`` (its ``configs`` and
    ``score``, and ``trial`` for a trial alone)."""
    from inspo.population_training import train_members
    from inspo.training import TrainingInterrupted

    started = time.perf_counter()
    configs = [objective.configs(params, iters) for params, iters in trials]
    try:
        result = train_members([cfg for runs in configs for cfg in runs], clones=objective.clones)
    except TrainingInterrupted as exc:  # as a trial alone: the search stops, what was told is kept
        raise KeyboardInterrupt(str(exc)) from None
    except Exception:  # e.g. a member's non-finite loss stops every member: train the trials alone
        return [_alone(objective, params, iters) for params, iters in trials]
    share = (time.perf_counter() - started) / len(trials)
    outcomes, first = [], 0
    for (params, _), runs in zip(trials, configs):
        cost, info = objective.score(params, result.members[first:first + len(runs)])
        outcomes.append({"cost": cost, "info": info, "time": share})
        first += len(runs)
    return outcomes


def _alone(objective: Any, params: dict[str, Any], iters: int) -> dict[str, Any]:
    """A trial trained (or replayed) alone, its error recorded as SMAC3's runner records a crashed trial's."""
    started = time.perf_counter()
    try:
        cost, info = objective.trial(params, iters)
    except Exception as exc:
        return {"error": repr(exc), "traceback": traceback.format_exc(), "time": time.perf_counter() - started}
    return {"cost": cost, "info": info, "time": time.perf_counter() - started}


def _populations(trials: list[Trial], size: int) -> list[list[int]]:
    """The indices of ``trials`` in populations of at most ``size`` trials that can train together."""
    groups: dict[str, list[int]] = {}
    for k, (params, iters) in enumerate(trials):
        shared = {name: v for name, v in params.items() if name not in MEMBER_FIELDS}
        groups.setdefault(json.dumps({"params": shared, "iters": iters}, sort_keys=True), []).append(k)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def optimize_in_rounds(facade: Any, objective: Any, size: int, workers: int, client: Any | None) -> None:
    """Run the search of ``facade`` (a SMAC3 facade) to its trial budget in rounds of ``size x workers`` trials
    (module docstring); ``client``: a ``dask.distributed.Client`` to train the populations on, or None (here)."""
    from smac.runhistory import StatusType, TrialValue

    optimizer = facade.optimizer
    crash_cost = facade.scenario.crash_cost
    while optimizer.remaining_trials > 0 and not optimizer._stop:  # _stop: a callback asked to end the search
        infos = []
        for _ in range(min(size * workers, optimizer.remaining_trials)):
            try:
                infos.append(facade.ask())
            except StopIteration:  # the intensifier has nothing more to propose
                break
        if not infos:
            return
        trials = [(objective.values(info.config), objective.iters(info.budget)) for info in infos]
        outcomes: list[dict[str, Any]] = [{} for _ in infos]
        fresh = []
        for k, (params, iters) in enumerate(trials):
            if objective.recorded(infos[k].config, infos[k].budget) is not None:
                outcomes[k] = _alone(objective, params, iters)  # a resumed search's finished trial: no training
            else:
                fresh.append(k)
        groups = [[fresh[i] for i in group] for group in _populations([trials[k] for k in fresh], size)]
        for group, results in zip(groups, _run(client, objective, [[trials[k] for k in g] for g in groups])):
            for k, outcome in zip(group, results):
                outcomes[k] = outcome
        for info, outcome in zip(infos, outcomes):
            now = time.time()
            if "error" in outcome:
                value = TrialValue(cost=crash_cost, time=outcome["time"], status=StatusType.CRASHED, endtime=now,
                                   additional_info={"error": outcome["error"], "traceback": outcome["traceback"]})
            else:
                value = TrialValue(cost=outcome["cost"], time=outcome["time"], status=StatusType.SUCCESS,
                                   endtime=now, additional_info=outcome["info"])
            facade.tell(info, value)


def _run(client: Any | None, objective: Any, populations: list[list[Trial]]) -> list[list[dict[str, Any]]]:
    """Every population's outcomes (:func:`train_trials`), in order: here one after another, or as tasks of
    ``client`` in parallel."""
    if client is None:
        return [train_trials(objective, trials) for trials in populations]
    futures = [client.submit(train_trials, objective, trials, pure=False) for trials in populations]
    return client.gather(futures)
