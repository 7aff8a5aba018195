"""``inspo tune``: Bayesian optimisation of training hyper-parameters with SMAC3.

SMAC3 (PyPI package ``smac``, the optional extra ``tune``) searches the space of :data:`SPACE` (``alpha``, ``beta``,
the two learning rates and the clip values ``rho_max`` and ``z_max``; ``--params`` and ``--range`` change it) for
the configuration whose evaluation return is highest. Every other field comes from the base config (a ``--config``
file, a ``--preset`` and the usual ``inspo train`` flags), whose own values are the space's default: that
configuration is always one of the trials, so the incumbent is never worse than it on the search's own measure.

Each trial trains with the base config's seed (``--seeds K``: K consecutive seeds, averaged) and scores the final
return (``--objective best``: the best evaluation of the run). With ``--workers W`` > 1 the trials run in W
processes of a local dask cluster (SMAC3's dask integration); each trial still uses ``threads`` torch threads.

Output folder (``--out``)::

    tune.json            the search: space, base config, every trial (params, status, return), incumbent, default
    incumbent.json       the best configuration, ready for ``inspo train --config incumbent.json``
    trials/NNNN/         config.json (the trial's full config, also ready for ``inspo train --config``)
                         and result.json (status, return, per-seed results with learning curves, error if any)
    smac3/               SMAC3's own run history

``inspo report <out>`` renders the search (trial returns, returns against each parameter, the incumbent's curve).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspo import jsonio
from inspo.checkpoint import atomic_write
from inspo.config import TrainConfig, add_config_flags, config_from_args
from inspo.errors import InspoError
from inspo.flags import flatten

__all__ = ["DEFAULT_PARAMS", "SPACE", "Param", "TuneResult", "add_parser", "tune"]

INSTALL_HINT = "pip install 'inspo[tune]'"


@dataclass(frozen=True)
class Param:
    """A searched TrainConfig field: a float range, sampled on a log scale when ``log``."""

    lower: float
    upper: float
    log: bool = False


SPACE: dict[str, Param] = {
    "alpha": Param(1e-3, 10.0, log=True),
    "beta": Param(0.0, 2.0),
    "lr_policy": Param(1e-5, 1e-2, log=True),
    "lr_critic": Param(1e-5, 1e-2, log=True),
    "rho_max": Param(1.0, 1e3, log=True),
    "z_max": Param(1.0, 100.0, log=True),
    "cql_alpha": Param(1e-2, 10.0, log=True),
    "icq_critic_temp": Param(1.0, 1e4, log=True),
}
"""The default range of every field ``inspo tune`` knows; ``--range NAME=LO:HI[:log]`` overrides or adds one. A
method's own settings go by their flat names, as their flags do (``cql_alpha`` for ``TrainConfig.cfcql.cql_alpha``)."""

DEFAULT_PARAMS: dict[str, tuple[str, ...]] = {
    "inspo": ("alpha", "beta", "lr_policy", "lr_critic", "rho_max", "z_max"),
    "icq": ("alpha", "lr_policy", "lr_critic"),
    "omiga": ("alpha", "lr_policy", "lr_critic", "z_max"),
    "cfcql": ("lr_critic", "cql_alpha"),
    "bc": ("lr_policy",),
}
"""The fields searched for each ``algo`` when ``--params`` is not given (those the method reads)."""

OBJECTIVES = ("final", "best")
_SIGNIFICANT = 4  # trial values are rounded to this many significant digits, so the saved configs read well


def _require_smac() -> Any:
    try:
        import smac  # noqa: F401
        from ConfigSpace import ConfigurationSpace  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"inspo tune needs SMAC3 ({exc.name} is not installed): {INSTALL_HINT}") from exc
    return smac


def _require_dask() -> Any:
    try:
        import dask  # noqa: F401
        from dask.distributed import Client  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"inspo tune --workers > 1 needs dask.distributed ({exc.name} is not installed): "
                           f"{INSTALL_HINT}") from exc
    return dask


def _round(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda fh: fh.write((jsonio.dumps(obj, indent=2) + "\n").encode()))


def _flat(config: TrainConfig) -> dict[str, Any]:
    """Every field of ``config`` by the name that ``--params``, ``--range`` and the trials' values use."""
    return flatten(TrainConfig, config.to_dict())


def resolve_space(base: TrainConfig, params: list[str] | None = None,
                  ranges: dict[str, Param] | None = None) -> dict[str, Param]:
    """The searched fields and their ranges: ``params`` (default: :data:`DEFAULT_PARAMS` of the algo), each with
    its :data:`SPACE` range or the one in ``ranges``. A range that misses the base value is widened to hold it
    (the base config is the space's default); a log range cannot hold 0, which is an error."""
    ranges = dict(ranges or {})
    names = list(params) if params else list(DEFAULT_PARAMS[base.algo])
    names += [n for n in ranges if n not in names]
    values = _flat(base)
    fields = {f: type(v) for f, v in values.items()}
    space: dict[str, Param] = {}
    for name in names:
        if name not in fields:
            raise ValueError(f"cannot tune {name!r}: not a TrainConfig field")
        if fields[name] is not float:
            raise ValueError(f"cannot tune {name!r}: only float fields can be tuned, it is {fields[name].__name__}")
        if name not in ranges and name not in SPACE:
            raise ValueError(f"no default range for {name!r}; give one with --range {name}=LO:HI[:log]")
        p = ranges.get(name, SPACE.get(name))
        value = float(values[name])
        lower, upper = min(p.lower, value), max(p.upper, value)
        if not lower < upper:
            raise ValueError(f"empty range for {name}: [{lower}, {upper}]")
        if p.log and lower <= 0:
            raise ValueError(f"{name}: a log-scale range must be > 0, but it would have to hold the base value "
                             f"{value}; set {name} in the base config or give a linear --range")
        space[name] = Param(lower, upper, p.log)
    if not space:
        raise ValueError("nothing to tune: --params is empty")
    return space


def _configspace(space: dict[str, Param], base: TrainConfig, seed: int) -> Any:
    from ConfigSpace import ConfigurationSpace, Float

    cs = ConfigurationSpace(seed=seed)
    values = _flat(base)
    for name, p in space.items():
        cs.add(Float(name, (p.lower, p.upper), default=float(values[name]), log=p.log))
    return cs


class _Objective:
    """SMAC3's target function: train the base config (``base``: its fields by flat name) with a trial's values;
    cost = -return. Picklable, so dask workers can run it; it writes nothing (the main process records each trial
    when SMAC3 is told the result)."""

    def __init__(self, base: dict[str, Any], space: list[str], seeds: list[int], objective: str) -> None:
        self.base, self.space, self.seeds, self.objective = base, space, seeds, objective

    @property
    def __code__(self) -> Any:  # SMAC3 fingerprints its target function by the bytecode
        return type(self).__call__.__code__

    def values(self, config: Any) -> dict[str, float]:
        return trial_values(self.base, {name: config[name] for name in self.space})

    def __call__(self, config: Any, seed: int = 0) -> tuple[float, dict[str, Any]]:
        # SMAC3's ``seed`` is ignored: every trial trains with the same seeds, so that trials compare fairly.
        from inspo.training import TrainingInterrupted, train

        params = self.values(config)
        runs = []
        for s in self.seeds:
            cfg = TrainConfig.from_dict({**self.base, **params, "seed": s, "out": None})
            try:
                r = train(cfg)
            except TrainingInterrupted as exc:  # SMAC3 would record an Exception as a crashed trial and go on
                raise KeyboardInterrupt(str(exc)) from None
            runs.append({"seed": s, "final_return": r.final_return, "best_return": r.best_return,
                         "return_std": r.curve[-1].get("return_std", 0.0), "wall_time": r.wall_time,
                         "curve": r.curve})
        score = sum(run[f"{self.objective}_return"] for run in runs) / len(runs)
        info = {"params": params, "return": score, "final_return": _mean(runs, "final_return"),
                "best_return": _mean(runs, "best_return"), "runs": runs}
        return -score, info


def trial_values(base: dict[str, Any], proposed: dict[str, float]) -> dict[str, float]:
    """A trial's values as trained and saved: rounded to 4 significant digits (the base value stays exact)."""
    out = {}
    for name, value in proposed.items():
        value = _round(float(value))
        if math.isclose(value, base[name], rel_tol=10 ** (1 - _SIGNIFICANT)):
            value = base[name]
        out[name] = value
    return out


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


@dataclass
class TuneResult:
    """What a search found: the incumbent's values, config and return, the default's return, every trial."""

    incumbent: dict[str, float]
    incumbent_config: dict[str, Any]
    incumbent_return: float
    default_return: float | None
    trials: list[dict[str, Any]]
    out: str
    wall_time: float


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
        params = extra.get("params") or self.objective.values(info.config)
        config = TrainConfig.from_dict({**self.objective.base, **params, "out": None}).to_dict()
        ok = value.status == StatusType.SUCCESS
        ret = extra.get("return") if ok else None
        is_default = all(params[n] == self.objective.base[n] for n in params)
        record = {"trial": number, "status": value.status.name.lower(), "params": params, "return": ret,
                  "final_return": extra.get("final_return"), "best_return": extra.get("best_return"),
                  "default": is_default, "origin": getattr(info.config, "origin", None),
                  "time": round(float(value.time), 3)}
        trial_dir = self.out / "trials" / f"{number:04d}"
        _write_json(trial_dir / "config.json", config)
        _write_json(trial_dir / "result.json", {**record, "objective": self.objective.objective,
                                                "runs": extra.get("runs", []), "error": extra.get("error"),
                                                "traceback": extra.get("traceback")})
        self.summary["trials"].append(record)
        if ret is not None and ret > self.best:
            self.best = ret
        self.summary["incumbent"] = _best_trial(self.summary["trials"])
        _write_json(self.out / "tune.json", self.summary)
        note = f"return {ret:.4g}" if ret is not None else record["status"]
        self.bar.update(number + 1, f"{note}  best {self.best:.4g}")


def _best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [t for t in trials if t["return"] is not None]
    if not done:
        return None
    best = max(done, key=lambda t: (t["return"], t["default"]))  # ties go to the default, then the earliest
    return {"trial": best["trial"], "params": best["params"], "return": best["return"]}


def _prepare_out(out: Path, overwrite: bool) -> None:
    owned = ("tune.json", "incumbent.json", "trials", "smac3")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose another --out or pass --overwrite")
        for name in owned:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def tune(base: TrainConfig, out: str | Path, trials: int = 20, workers: int = 1,
         params: list[str] | None = None, ranges: dict[str, Param] | None = None, seeds: int = 1,
         objective: str = "final", smac_seed: int = 0, overwrite: bool = False, progress: bool = False,
         verbose: bool = False) -> TuneResult:
    """Search hyper-parameters of ``base`` with SMAC3 (``trials`` trainings, ``workers`` in parallel through dask),
    maximising the evaluation return; write the folder described in the module docstring to ``out``."""
    if trials < 2:
        raise ValueError(f"--trials must be >= 2 (the default config and at least one proposal), got {trials}")
    if workers < 1 or seeds < 1:
        raise ValueError(f"--workers and --seeds must be >= 1, got {workers} and {seeds}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    _require_smac()
    if workers > 1:
        _require_dask()
    from smac import HyperparameterOptimizationFacade, Scenario
    from smac.callback import Callback

    space = resolve_space(base, params, ranges)
    base_dict = {**base.to_dict(), "out": None}
    base_flat = {**_flat(base), "out": None}
    out = Path(out)
    _prepare_out(out, overwrite)
    started = time.perf_counter()
    fn = _Objective(base_flat, list(space), list(range(base.seed, base.seed + seeds)), objective)
    from importlib.metadata import version

    summary: dict[str, Any] = {
        "format": 1, "objective": objective, "seeds": fn.seeds, "n_trials": trials, "workers": workers,
        "smac": {"version": version("smac"), "seed": smac_seed, "facade": "HyperparameterOptimizationFacade"},
        "space": {n: {"lower": p.lower, "upper": p.upper, "log": p.log, "default": base_flat[n]}
                  for n, p in space.items()},
        "base_config": base_dict, "trials": [], "incumbent": None, "default": None, "wall_time": None,
    }
    _write_json(out / "tune.json", summary)
    recorder = _Recorder(out, summary, fn, trials, progress)
    recorder.bar.update(0, "starting" + (f" {workers} dask workers" if workers > 1 else ""))

    class _Tell(Callback):
        def on_tell_end(self, smbo: Any, info: Any, value: Any) -> bool | None:
            recorder(smbo, info, value)
            return None

    scenario = Scenario(_configspace(space, base, smac_seed), name="inspo-tune", output_directory=out / "smac3",
                        deterministic=True, n_trials=trials, seed=smac_seed, use_default_config=True)
    client = cluster = None
    dask_log = logging.getLogger("distributed")
    dask_log_level = dask_log.level
    try:
        if workers > 1:
            import dask
            from dask.distributed import Client, LocalCluster

            # Non-daemonic workers, as SMAC3 sets up its own; a cluster on loopback without a dashboard.
            dask.config.set({"distributed.worker.daemon": False})
            if not verbose:  # the nanny's notes on stopping workers are noise here
                dask_log.setLevel(logging.ERROR)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None)
            client = Client(cluster)
        facade = HyperparameterOptimizationFacade(
            scenario, fn, callbacks=[_Tell()], overwrite=True, dask_client=client,
            logging_level=20 if verbose else 40,
            initial_design=HyperparameterOptimizationFacade.get_initial_design(scenario, n_configs=max(1, trials // 4)))
        facade.optimize()
    finally:
        recorder.bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        dask_log.setLevel(dask_log_level)

    done = summary["trials"]
    best = _best_trial(done)
    if best is None:
        errors = [json.loads((out / "trials" / f"{t['trial']:04d}" / "result.json").read_text()).get("error")
                  for t in done]
        raise RuntimeError(f"every trial failed; first error: {next((e for e in errors if e), 'unknown')} "
                           f"(see {out / 'trials'})")
    default = next((t for t in done if t["default"] and t["return"] is not None), None)
    incumbent_config = TrainConfig.from_dict({**base_flat, **best["params"]}).to_dict()
    _write_json(out / "incumbent.json", incumbent_config)
    summary["incumbent"] = {**best, "config": str(out / "incumbent.json")}
    summary["default"] = None if default is None else {"trial": default["trial"], "return": default["return"]}
    summary["wall_time"] = round(time.perf_counter() - started, 2)
    _write_json(out / "tune.json", summary)
    return TuneResult(incumbent=best["params"], incumbent_config=incumbent_config, incumbent_return=best["return"],
                      default_return=None if default is None else default["return"], trials=done, out=str(out),
                      wall_time=summary["wall_time"])


# -- command line -------------------------------------------------------------------------------------------------


def _range(text: str) -> tuple[str, Param]:
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    try:
        if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
            raise ValueError
        return name.replace("-", "_"), Param(float(parts[0]), float(parts[1]), len(parts) == 3 and parts[2] == "log")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=LO:HI or NAME=LO:HI:log, got {text!r}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_tune(args: argparse.Namespace) -> int:
    from inspo.data import load_dataset

    if not args.dataset and not args.config:
        raise InspoError("--dataset DIR is required (or a --config file that sets it)")
    out = args.out or "runs/tune"
    args.out = None  # --out names the search's folder; the trials themselves write no run folder
    base = config_from_args(args)
    ds = load_dataset(base.dataset, verify=False)
    if args.env is not None and ds.manifest["env"]["id"] != args.env:
        raise ValueError(f"--env {args.env} does not match the dataset {base.dataset}, "
                         f"recorded on {ds.manifest['env']['id']}")
    params = [p.strip().replace("-", "_") for p in args.params.split(",") if p.strip()] if args.params else None
    try:
        result = tune(base, out, trials=args.trials, workers=args.workers, params=params,
                      ranges=dict(args.range or []), seeds=args.seeds, objective=args.objective,
                      smac_seed=args.smac_seed, overwrite=args.overwrite, progress=True, verbose=args.verbose)
    except KeyboardInterrupt:
        print(f"inspo tune: interrupted; the trials finished so far are in {out} (tune.json, trials/)",
              file=sys.stderr)
        return 130
    ok = [t for t in result.trials if t["return"] is not None]
    print(jsonio.dumps({
        "incumbent": result.incumbent, "incumbent_return": result.incumbent_return,
        "default_return": result.default_return, "trials": len(result.trials), "failed": len(result.trials) - len(ok),
        "config": str(Path(result.out) / "incumbent.json"), "out": result.out, "wall_time_s": result.wall_time,
        "train_with": f"inspo train --config {Path(result.out) / 'incumbent.json'} --out DIR",
    }, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``inspo tune`` on the CLI's sub-command parser."""
    p = sub.add_parser("tune", help="search hyper-parameters with SMAC3 (pip install 'inspo[tune]')",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=None, help="environment the dataset must have been recorded on (a check)")
    p.add_argument("--trials", type=_positive, default=20, help="trainings in the search (default 20)")
    p.add_argument("--workers", type=_positive, default=1, help="trials in parallel, via a local dask cluster")
    p.add_argument("--params", default=None,
                   help="comma-separated fields to search (default for inspo: " + ",".join(DEFAULT_PARAMS["inspo"])
                   + ")")
    p.add_argument("--range", action="append", type=_range, metavar="NAME=LO:HI[:log]",
                   help="search range of a float field (repeatable); adds NAME to the searched fields")
    p.add_argument("--seeds", type=_positive, default=1, help="training seeds per trial, averaged (default 1)")
    p.add_argument("--objective", choices=OBJECTIVES, default="final",
                   help="the return to maximise: of the final policy (default) or the run's best evaluation")
    p.add_argument("--smac-seed", type=int, default=0, help="seed of the optimiser itself")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier search in --out")
    p.add_argument("--verbose", action="store_true", help="show SMAC3's own log")
    add_config_flags(p)  # the base config: --preset, --config and the TrainConfig flags
    p.set_defaults(func=_cmd_tune)
    for action in p._actions:  # the config's --out becomes the search's folder
        if action.dest == "out":
            action.help = "folder of the search's results (default: runs/tune)"
            action.metavar = "DIR"
