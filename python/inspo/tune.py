"""``inspo tune``: Bayesian optimisation of training hyper-parameters with SMAC3.

SMAC3 (PyPI package ``smac``, the optional extra ``tune``) searches a space of TrainConfig fields
(:mod:`inspo.tune_space`: by default ``alpha``, ``beta``, the two learning rates and the clip values ``rho_max`` and
``z_max``; ``--params`` and ``--range`` add integer fields such as ``hidden`` and categorical ones such as ``order``)
for the configuration whose evaluation return is highest. Every other field comes from the base config (a
``--config`` file, a ``--preset`` and the usual ``inspo train`` flags), whose own values are the space's default:
that configuration is always one of the trials, so the incumbent is never worse than it on the search's own measure.

Each trial trains with the base config's seed (``--seeds K``: K consecutive seeds, averaged) and scores the final
return (``--objective best``: the best evaluation of the run). With ``--workers W`` > 1 the trials run in W
processes of a local dask cluster (SMAC3's dask integration), with ``--dask-scheduler tcp://HOST:PORT`` (or
``--dask-scheduler-file PATH``) on the workers of an existing one (:mod:`inspo.cluster`; they must reach the
dataset's path); each trial still uses ``threads`` torch threads.

``--population K`` trains the trials as populations (:mod:`inspo.tune_population`): SMAC3 proposes K x W trials at
a time (W workers), trained as populations of K (their seeds as members) in one process each; every trial has the
cost it has when trained alone, but the optimiser proposes other configurations than one trial at a time.

``--fidelity iters`` makes the search multi-fidelity (SMAC3's MultiFidelityFacade: Bayesian optimisation with
Hyperband): most configurations train for fewer iterations, from ``--min-iters`` up to the base config's
``--iters``, and only the promising ones get the full budget. A trial is then one (configuration, budget) pair; the
incumbent is the best trial at the highest budget reached.

``--resume`` continues an interrupted search in ``--out`` without training its finished trials again
(:mod:`inspo.tune_resume`), and reaches the incumbent the uninterrupted search would have.

Output folder (``--out``)::

    tune.json            the search: space, base config, the dataset's manifest SHA-256, every trial (params,
                         iters, status, return), incumbent
    base_config.json     the base config (what --resume starts from when no --config or --dataset is given;
                         written again from tune.json where a kept search lacks it)
    incumbent.json       the best configuration, ready for ``inspo train --config incumbent.json``
    trials/NNNN/         config.json (the trial's full config, also ready for ``inspo train --config``)
                         and result.json (status, return, per-seed results with learning curves, error if any)
    smac3/               SMAC3's own run history

``inspo report <out>`` renders the search (trial returns, every trial's learning curve, returns against each
parameter, the incumbent's curve).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inspo import jsonio
from inspo.cluster import Cluster, add_cluster_flags, cluster_from_args, connect, require_dask
from inspo.config import TrainConfig, add_config_flags, config_from_args
from inspo.data import dataset_digest, load_dataset
from inspo.errors import InspoError
from inspo.flags import flatten
from inspo.provenance import package_info
from inspo.tune_population import optimize_in_rounds
from inspo.tune_resume import check_same_search, finished_trials, load_search, trial_key
from inspo.tune_space import (
    DEFAULT_PARAMS,
    Choice,
    Param,
    Space,
    configspace,
    parse_range,
    resolve_space,
    space_from_json,
    space_to_json,
    trial_values,
)

__all__ = ["FIDELITIES", "OBJECTIVES", "TuneResult", "add_parser", "tune"]

INSTALL_HINT = "pip install 'inspo[tune]'"
OBJECTIVES = ("final", "best")
FIDELITIES = ("iters",)
ETA = 3  # Hyperband keeps the best third of each rung for the next budget, three times larger (SMAC3's default)


def _require_smac() -> Any:
    try:
        import smac  # noqa: F401
        from ConfigSpace import ConfigurationSpace  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"inspo tune needs SMAC3 ({exc.name} is not installed): {INSTALL_HINT}") from exc
    return smac


def _spare_absl_stream() -> None:
    """SMAC3 sets its logging up with ``logging.config.dictConfig``, which closes every existing handler; absl's
    handler (loaded with jax, flashbax, ...) then closes its stream unless that is the current ``sys.stderr``. Point
    it there, so that tuning never closes a stream its caller still writes to."""
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.setStream(sys.stderr)


class _Objective:
    """SMAC3's target function: train the base config (``base``: its fields by flat name) with a trial's values
    (and, multi-fidelity, its iteration budget); cost = -return. A trial in ``replay`` (a resumed search's finished
    trials) is answered with its recorded result. Picklable, so dask workers can run it; it writes nothing (the
    main process records each trial when SMAC3 is told the result; ``clones``: the folder of behaviour clones the
    trials start from and keep, since every trial clones the same way)."""

    def __init__(self, base: dict[str, Any], space: Space, seeds: list[int], objective: str,
                 replay: dict[str, dict[str, Any]], clones: str) -> None:
        self.base, self.space, self.seeds, self.objective, self.replay = base, space, seeds, objective, replay
        self.clones = clones

    @property
    def __code__(self) -> Any:  # SMAC3 fingerprints its target function by the bytecode
        return type(self).__call__.__code__

    def values(self, config: Any) -> dict[str, Any]:
        return trial_values(self.base, {name: config[name] for name in self.space}, self.space)

    def iters(self, budget: float | None) -> int:
        return int(self.base["iters"]) if budget is None else int(round(budget))

    def recorded(self, config: Any, budget: float | None) -> dict[str, Any] | None:
        return self.replay.get(trial_key(self.values(config), self.iters(budget)))

    def __call__(self, config: Any, seed: int = 0, budget: float | None = None) -> tuple[float, dict[str, Any]]:
        # SMAC3's ``seed`` is ignored: every trial trains with the same seeds, so that trials compare fairly.
        return self.trial(self.values(config), self.iters(budget))

    def trial(self, params: dict[str, Any], iters: int) -> tuple[float, dict[str, Any]]:
        """The cost and record of the trial of ``params`` on ``iters`` iterations: its recorded result if it is in
        ``replay``, else its runs trained one after another."""
        from inspo.training import TrainingInterrupted, train

        old = self.replay.get(trial_key(params, iters))
        if old is not None:
            if old["return"] is None:  # a failed trial fails again without training; the recorder keeps its error
                raise RuntimeError(old.get("error") or old["status"])
            return -old["return"], {k: old[k] for k in ("params", "return", "final_return", "best_return", "runs")}
        results = []
        for cfg in self.configs(params, iters):
            try:
                results.append(train(cfg, clones=self.clones))
            except TrainingInterrupted as exc:  # SMAC3 would record an Exception as a crashed trial and go on
                raise KeyboardInterrupt(str(exc)) from None
        return self.score(params, results)

    def configs(self, params: dict[str, Any], iters: int) -> list[TrainConfig]:
        """The runs of a trial: the base config with its values and budget, one run per seed, no folder."""
        return [TrainConfig.from_dict({**self.base, **params, "iters": iters, "seed": s, "out": None})
                for s in self.seeds]

    def score(self, params: dict[str, Any], results: list[Any]) -> tuple[float, dict[str, Any]]:
        """The cost and record of a trial whose runs (one per seed) ended with the ``TrainResult`` s ``results``."""
        runs = [{"seed": s, "final_return": r.final_return, "best_return": r.best_return,
                 "return_std": r.curve[-1].get("return_std", 0.0), "wall_time": r.wall_time, "curve": r.curve}
                for s, r in zip(self.seeds, results)]
        score = sum(run[f"{self.objective}_return"] for run in runs) / len(runs)
        info = {"params": params, "return": score, "final_return": _mean(runs, "final_return"),
                "best_return": _mean(runs, "best_return"), "runs": runs}
        return -score, info


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


@dataclass
class TuneResult:
    """What a search found: the incumbent's values, config and return, the default's return, every trial."""

    incumbent: dict[str, Any]
    incumbent_config: dict[str, Any]
    incumbent_return: float
    default_return: float | None
    trials: list[dict[str, Any]]
    out: str
    wall_time: float
    replayed: int = 0


class _Recorder:
    """SMAC3 callback (main process): writes each finished trial, keeps tune.json current, draws progress."""

    def __init__(self, out: Path, summary: dict[str, Any], objective: _Objective, total: int, progress: bool):
        from inspo.progress import ProgressBar

        self.out, self.summary, self.objective = out, summary, objective
        self.bar = ProgressBar(total, "tune", enabled=progress)
        self.best: float = -math.inf

    def __call__(self, smbo: Any, info: Any, value: Any) -> None:  # on_tell_end
        from smac.runhistory import StatusType

        number = len(self.summary["trials"])
        extra = dict(value.additional_info or {})
        old = self.objective.recorded(info.config, info.budget)
        if old is not None:  # a resumed search's finished trial: keep what it recorded (its time, its error)
            extra = {**extra, **{k: old.get(k) for k in ("error", "traceback")}}
            self.summary["replayed"] += 1
        params = extra.get("params") or self.objective.values(info.config)
        iters = self.objective.iters(info.budget)
        config = TrainConfig.from_dict({**self.objective.base, **params, "iters": iters, "out": None}).to_dict()
        ok = value.status == StatusType.SUCCESS
        ret = extra.get("return") if ok else None
        is_default = all(params[n] == self.objective.base[n] for n in params)
        record = {"trial": number, "status": value.status.name.lower(), "params": params, "iters": iters,
                  "return": ret, "final_return": extra.get("final_return"), "best_return": extra.get("best_return"),
                  "default": is_default, "origin": getattr(info.config, "origin", None),
                  "time": old["time"] if old is not None else round(float(value.time), 3)}
        trial_dir = self.out / "trials" / f"{number:04d}"
        jsonio.write(trial_dir / "config.json", config)
        jsonio.write(trial_dir / "result.json", {**record, "objective": self.objective.objective,
                                                "runs": extra.get("runs", []), "error": extra.get("error"),
                                                "traceback": extra.get("traceback")})
        self.summary["trials"].append(record)
        if ret is not None and ret > self.best:
            self.best = ret
        self.summary["incumbent"] = _best_trial(self.summary["trials"])
        jsonio.write(self.out / "tune.json", self.summary)
        note = ("replayed " if old is not None else "") + (f"return {ret:.4g}" if ret is not None
                                                           else record["status"])
        self.bar.update(number + 1, f"{note}  best {self.best:.4g}")


def _best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best finished trial at the highest budget any finished trial reached (returns after fewer iterations
    do not compare with full-budget ones)."""
    done = [t for t in trials if t["return"] is not None]
    if not done:
        return None
    top = max(t["iters"] for t in done)
    best = max((t for t in done if t["iters"] == top),
               key=lambda t: (t["return"], t["default"]))  # ties go to the default, then the earliest
    return {"trial": best["trial"], "params": best["params"], "iters": best["iters"], "return": best["return"]}


def _prepare_out(out: Path, overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise ValueError("--overwrite and --resume contradict each other: --overwrite starts a new search in "
                         "--out, --resume continues the one there; pass one of them")
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose another --out, pass --overwrite to replace the "
                                  "search there, or --resume to continue it")
        for name in ("tune.json", "base_config.json", "incumbent.json", "trials", "smac3"):
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _fidelity(fidelity: str | None, min_iters: int | None, iters: int) -> dict[str, Any] | None:
    """The multi-fidelity settings tune.json records, checked: Hyperband needs two budgets at least."""
    if fidelity is None:
        if min_iters is not None:
            raise ValueError(f"--min-iters {min_iters} is only read with --fidelity iters")
        return None
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    low = max(1, iters // ETA ** 2) if min_iters is None else min_iters
    if not 1 <= low <= iters / ETA:
        raise ValueError(f"--min-iters must be in [1, --iters / {ETA}] = [1, {iters // ETA}] so that Hyperband has "
                         f"two budgets at least, got {low} (with --iters {iters})")
    return {"name": fidelity, "min": low, "max": iters, "eta": ETA}


def tune(base: TrainConfig, out: str | Path, trials: int = 20, workers: int | Cluster = 1,
         params: list[str] | None = None, ranges: Space | None = None, seeds: int = 1,
         objective: str = "final", smac_seed: int = 0, overwrite: bool = False, resume: bool = False,
         fidelity: str | None = None, min_iters: int | None = None, progress: bool = False,
         verbose: bool = False, population: int = 1, clones: str | Path | None = None) -> TuneResult:
    """Search hyper-parameters of ``base`` with SMAC3 (``trials`` trainings, ``workers`` local processes in parallel
    through dask, or on the :class:`~inspo.cluster.Cluster` given),
    maximising the evaluation return; write the folder described in the module docstring to ``out``.
    ``resume``: continue the search in ``out`` (same settings, see :mod:`inspo.tune_resume`); ``fidelity="iters"``:
    a multi-fidelity search over iteration budgets from ``min_iters`` (default ``iters / 9``) to ``base.iters``;
    ``population`` > 1: trials proposed in rounds and trained as populations of that many
    (:mod:`inspo.tune_population`). The trials clone the data's policy once and start from that clone
    (:mod:`inspo.clones`), kept in ``clones`` (default: ``<out>/clones``)."""
    if trials < 2:
        raise ValueError(f"--trials must be >= 2 (the default config and at least one proposal), got {trials}")
    if (isinstance(workers, int) and workers < 1) or seeds < 1 or population < 1:
        raise ValueError(f"--workers, --seeds and --population must be >= 1, got {workers}, {seeds} and "
                         f"{population}")
    cluster = workers if isinstance(workers, Cluster) else Cluster(workers=workers)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if base.eval == "none":
        raise ValueError("inspo tune ranks trials by their evaluation returns, so it needs --eval env (the "
                         "environment installed), not --eval none")
    fid = _fidelity(fidelity, min_iters, base.iters)
    _require_smac()
    if cluster.parallel:
        require_dask("inspo tune --workers > 1 or --dask-scheduler")
    from smac import HyperparameterOptimizationFacade, MultiFidelityFacade, Scenario
    from smac.callback import Callback

    if base.critic_alpha is None and "critic_alpha" in [*(params or ()), *(ranges or {})]:
        base = replace(base, critic_alpha=base.alpha)  # the same run: unset, it is alpha
    space = resolve_space(base, params, ranges)
    if fid is not None and "iters" in space:
        raise ValueError("cannot search 'iters' with --fidelity iters: the iteration budget is the fidelity")
    base_dict = {**base.to_dict(), "out": None}
    base_flat = {**flatten(TrainConfig, base.to_dict()), "out": None}
    out = Path(out)
    seed_list = list(range(base.seed, base.seed + seeds))
    from importlib.metadata import version

    Facade = HyperparameterOptimizationFacade if fid is None else MultiFidelityFacade
    summary: dict[str, Any] = {
        "format": 2, "objective": objective, "seeds": seed_list, "n_trials": trials,
        "workers": f"the dask workers of {cluster.where}" if cluster.external else cluster.workers,
        "smac_seed": smac_seed, "fidelity": fid, "population": population,
        "smac": {"version": version("smac"), "seed": smac_seed, "facade": Facade.__name__}, "package": package_info(),
        "space": space_to_json(space, base_flat), "base_config": base_dict,
        "dataset_sha256": dataset_digest(base.dataset),
        "trials": [], "replayed": 0,
        "incumbent": None, "default": None, "wall_time": None,
    }
    saved = load_search(out) if resume else None
    if saved is not None:
        check_same_search(saved, summary, out)
    # Random configurations before the optimiser's own proposals: a quarter of the trials, fixed when the search
    # starts, so that a search resumed to more trials proposes what it would have proposed uninterrupted.
    summary["initial_design"] = saved["initial_design"] if saved is not None else max(1, trials // 4)
    _prepare_out(out, overwrite, resume)
    replay = finished_trials(out) if resume else {}
    started = time.perf_counter()
    # Workers on other machines start in other folders: they get the dataset's absolute path.
    clones = Path(clones) if clones is not None else out / "clones"
    fn = _Objective({**base_flat, "dataset": str(Path(base.dataset).absolute())} if cluster.external else base_flat,
                    space, seed_list, objective, replay, str(clones.absolute() if cluster.external else clones))
    jsonio.write(out / "tune.json", summary)
    jsonio.write(out / "base_config.json", base_dict)
    recorder = _Recorder(out, summary, fn, trials, progress)
    recorder.bar.update(0, ("replaying finished trials" if replay else "starting")
                        + (f", the dask workers of {cluster.where}" if cluster.external
                           else f", {cluster.workers} dask workers" if cluster.parallel else ""))

    class _Tell(Callback):
        def on_tell_end(self, smbo: Any, info: Any, value: Any) -> bool | None:
            recorder(smbo, info, value)
            return None

    budgets = {} if fid is None else {"min_budget": fid["min"], "max_budget": fid["max"]}
    scenario = Scenario(configspace(space, base_flat, smac_seed), name="inspo-tune", output_directory=out / "smac3",
                        deterministic=True, n_trials=trials, seed=smac_seed, use_default_config=True, **budgets)
    extra: dict[str, Any] = {} if fid is None else {"intensifier": Facade.get_intensifier(scenario, eta=ETA)}
    try:
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(connect(cluster, verbose)) if cluster.parallel else None
            # overwrite=True even on --resume: the search replays its finished trials from the start
            # (inspo.tune_resume).
            _spare_absl_stream()
            initial = Facade.get_initial_design(scenario, n_configs=summary["initial_design"])
            # With populations the trials are dispatched here (inspo.tune_population), not by SMAC3's runner.
            facade = Facade(scenario, fn, callbacks=[_Tell()], overwrite=True,
                            dask_client=client if population == 1 else None,
                            logging_level=20 if verbose else 40, initial_design=initial, **extra)
            if population == 1:
                facade.optimize()
            else:
                parallel = len(client.nthreads()) if client is not None else 1
                optimize_in_rounds(facade, fn, population, parallel, client)
    finally:
        recorder.bar.close()
    return _finish(out, summary, base_flat, started)


def _finish(out: Path, summary: dict[str, Any], base_flat: dict[str, Any], started: float) -> TuneResult:
    """Write the incumbent and the final tune.json of a finished search."""
    done = summary["trials"]
    best = _best_trial(done)
    if best is None:
        errors = [json.loads((out / "trials" / f"{t['trial']:04d}" / "result.json").read_text()).get("error")
                  for t in done]
        raise RuntimeError(f"every trial failed; first error: {next((e for e in errors if e), 'unknown')} "
                           f"(see {out / 'trials'})")
    default = next((t for t in done if t["default"] and t["return"] is not None and t["iters"] == best["iters"]),
                   None)
    incumbent_config = TrainConfig.from_dict({**base_flat, **best["params"]}).to_dict()  # the full budget
    jsonio.write(out / "incumbent.json", incumbent_config)
    summary["incumbent"] = {**best, "config": str(out / "incumbent.json")}
    summary["default"] = None if default is None else {"trial": default["trial"], "return": default["return"]}
    summary["wall_time"] = round(time.perf_counter() - started, 2)
    jsonio.write(out / "tune.json", summary)
    return TuneResult(incumbent=best["params"], incumbent_config=incumbent_config, incumbent_return=best["return"],
                      default_return=None if default is None else default["return"], trials=done, out=str(out),
                      wall_time=summary["wall_time"], replayed=summary["replayed"])


# -- command line -------------------------------------------------------------------------------------------------


def _range(text: str) -> tuple[str, Param | Choice]:
    try:
        return parse_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _resumed_settings(args: argparse.Namespace, out: Path) -> None:
    """Fill what ``inspo tune --resume`` was not given from the search's tune.json, so that ``--resume --out DIR``
    alone continues it (what was given is checked against it by :func:`inspo.tune_resume.check_same_search`)."""
    saved = load_search(out)
    if not args.dataset and not args.config:
        path = out / "base_config.json"
        if not path.is_file():  # a search kept as its records alone (a repository's results/.gitignore)
            jsonio.write(path, saved["base_config"])
        args.config = str(path)
    if args.params is None and not args.range:
        args.params = ",".join(saved["space"])
        args.range = list(space_from_json(saved["space"]).items())
    fid = saved.get("fidelity")
    defaults = {"trials": saved["n_trials"], "objective": saved["objective"], "seeds": len(saved["seeds"]),
                "population": saved.get("population", 1),
                "smac_seed": saved.get("smac_seed", saved["smac"]["seed"]),
                "fidelity": fid and fid["name"], "min_iters": fid and fid["min"]}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _cmd_tune(args: argparse.Namespace) -> int:
    out = Path(args.out or "runs/tune")
    if args.resume:
        _resumed_settings(args, out)
    if not args.dataset and not args.config:
        raise InspoError("--dataset DIR is required (or a --config file that sets it)")
    args.out = None  # --out names the search's folder; the trials themselves write no run folder
    base = config_from_args(args)
    ds = load_dataset(base.dataset, verify=False)
    if args.env is not None and ds.manifest["env"]["id"] != args.env:
        raise ValueError(f"--env {args.env} does not match the dataset {base.dataset}, "
                         f"recorded on {ds.manifest['env']['id']}")
    params = [p.strip().replace("-", "_") for p in args.params.split(",") if p.strip()] if args.params else None
    try:
        result = tune(base, out, trials=args.trials or 20, workers=cluster_from_args(args, args.workers), params=params,
                      ranges=dict(args.range or []), seeds=args.seeds or 1, objective=args.objective or "final",
                      smac_seed=args.smac_seed or 0, overwrite=args.overwrite, resume=args.resume,
                      fidelity=args.fidelity, min_iters=args.min_iters, progress=True, verbose=args.verbose,
                      population=args.population or 1)
    except KeyboardInterrupt:
        print(f"inspo tune: interrupted; the trials finished so far are in {out} (tune.json, trials/); "
              f"continue with: inspo tune --resume --out {out}", file=sys.stderr)
        return 130
    ok = [t for t in result.trials if t["return"] is not None]
    print(jsonio.dumps({
        "incumbent": result.incumbent, "incumbent_return": result.incumbent_return,
        "default_return": result.default_return, "trials": len(result.trials), "failed": len(result.trials) - len(ok),
        "replayed": result.replayed, "config": str(Path(result.out) / "incumbent.json"), "out": result.out,
        "wall_time_s": result.wall_time,
        "train_with": f"inspo train --config {Path(result.out) / 'incumbent.json'} --out DIR",
    }, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``inspo tune`` on the CLI's sub-command parser."""
    p = sub.add_parser("tune", help="search hyper-parameters with SMAC3 (pip install 'inspo[tune]')",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=None, help="environment the dataset must have been recorded on (a check)")
    p.add_argument("--trials", type=_positive, default=None, help="trainings in the search (default 20)")
    p.add_argument("--workers", type=_positive, default=1, help="trials in parallel, via a local dask cluster")
    add_cluster_flags(p)
    p.add_argument("--params", default=None,
                   help="comma-separated fields to search (default for inspo: " + ",".join(DEFAULT_PARAMS["inspo"])
                   + "; also e.g. hidden, batch_size, local_critic_steps, order, weighting, use_rho)")
    p.add_argument("--range", action="append", type=_range, metavar="NAME=LO:HI[:log]|NAME=A,B",
                   help="range of a numeric field (integer for an int field) or values of a categorical one "
                        "(repeatable); adds NAME to the searched fields")
    p.add_argument("--seeds", type=_positive, default=None, help="training seeds per trial, averaged (default 1)")
    p.add_argument("--population", type=_positive, default=None, metavar="K",
                   help="SMAC3 proposes K x workers trials at a time, trained as populations of K trials (every "
                        "trial's cost as alone; other proposals than without; default 1: one trial at a time)")
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="the return to maximise: of the final policy (default) or the run's best evaluation")
    p.add_argument("--smac-seed", type=int, default=None, help="seed of the optimiser itself (default 0)")
    p.add_argument("--fidelity", choices=FIDELITIES, default=None,
                   help="multi-fidelity search (SMAC3's Hyperband) over the iteration budget, --min-iters to --iters")
    p.add_argument("--min-iters", type=_positive, default=None,
                   help=f"smallest budget of --fidelity iters (default --iters / {ETA ** 2})")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier search in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted search in --out (its settings unless given; finished trials are "
                        "not trained again)")
    p.add_argument("--verbose", action="store_true", help="show SMAC3's own log")
    add_config_flags(p)  # the base config: --preset, --config and the TrainConfig flags
    p.set_defaults(func=_cmd_tune)
    for action in p._actions:  # the config's --out becomes the search's folder
        if action.dest == "out":
            action.help = "folder of the search's results (default: runs/tune)"
            action.metavar = "DIR"
