"""``inspo reproduce``: the known-answer tables, written to ``<out>/<suite>.md``, ``.json`` and ``.png``.

- ``matrix``: every row of the docs/design.md section 3 table (plus the rho-disabled ablation), from the exact tabular
solver
  (:func:`inspo.tabular.solve`) and from the neural trainer (:func:`inspo.train`) side by side, mean ± std over
  seeds. The neural runs train on one-step episodes sampled from the row's joint-action distribution (the data
  seed is the run seed, so the spread includes the sampling of the data) and report the exact expected payoff J
  of the final (and best) policy.
- ``bridge``: InSPO and behaviour cloning on the public AlberDICE Bridge buffers, imported into a cache under the
  output folder; final and best return over sampled evaluation episodes, next to the data's own return and the
  dynamic-programming optimum.
- ``smax``: InSPO and behaviour cloning on generated SMAX datasets (maps 2s3z, 3s_vs_5z, 5m_vs_6m, 6h_vs_8z by
  default; qualities from :data:`inspo.data.SMAX_QUALITIES`, the online ones played by the policies of
  ``data/smax_policies/<map>`` or ``--policies DIR/<map>``); final and best return and win rate next to the
  behaviour policy's own, and learning curves. ``--bc-steps auto`` clones each dataset for its held-out length
  (:mod:`inspo.bc_length`: measured once per dataset, cached, the same for every method and seed), reported in the
  table with its held-out NLL.
- ``baselines --env {xor,mne,bridge,smax,all}``: behaviour cloning, MA-ICQ, OMIGA, CFCQL and InSPO in one trainer
  on every dataset of the environment (XOR: three joint-action distributions; M-NE: imbalanced and balanced; Bridge:
  the mixed and the optimal AlberDICE buffers; SMAX: ``<map>-<quality>`` datasets), one table per environment,
  ``<out>/baselines_<env>.md``.
- ``study``: the SMAX study (:mod:`inspo.reproduce.study`): per map, SMAC3 tunes MA-ICQ, OMIGA, CFCQL and InSPO
  with the same budget, then BC and the four train on the map's datasets (5000 episodes each), 5 seeds, 40000
  iterations after each dataset's held-out cloning length: ``<out>/smax_study_table.md``, ``_tuning.md`` and
  ``_hyper.json``; ``--maps`` and ``--qualities`` choose a part of it.
- ``collapse``: InSPO on multi-policy SMAX data (``--datasets``, default 6h_vs_8z-medium-replay and
  2s3z-medium-replay) with the teammate ratio clipped at rho_max 100, 5 and 2 and switched off: return, win rate and
  the ratio's effective sample size against iterations, ``<out>/smax_collapse.png`` (see
  :mod:`inspo.reproduce.collapse`).

Datasets and per-run outputs (``metrics.json``, checkpoints) go to ``<out>/cache/``, which is not meant to be
committed; the tables and plots are. The cache is also a run cache: a run whose folder already holds the
``metrics.json`` of a finished run with the same configuration is read back, not trained again (delete the folder
to retrain it, e.g. after changing the code); a run that stopped part-way resumes from its checkpoint.

``--partial`` (baselines, study) trains nothing: it tabulates the runs the run cache holds and lists the missing
ones, for a table made in several sittings; ``--methods`` (baselines, study) makes a subset of the methods.

The runs of a table that differ only in their seed train together as one population (one process, one task):
the tables are the same as with ``--no-populations``, which trains every run alone.

``--jobs K`` trains K runs at a time on a local dask cluster; ``--dask-scheduler tcp://HOST:PORT`` (or
``--dask-scheduler-file PATH``) sends the runs to the workers of an existing dask cluster, which must reach the
datasets and ``--out`` on shared storage: the runs' outcomes are read back from the run cache there.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from inspo.cluster import INSTALL_HINT, add_cluster_flags, cluster_from_args
from inspo.data import SMAX_QUALITIES
from inspo.reproduce.baselines import BASELINE_METHODS, BASELINES, BaselinesSuite, reproduce_baselines
from inspo.reproduce.bridge import BRIDGE, reproduce_bridge
from inspo.reproduce.collapse import COLLAPSE, reproduce_collapse
from inspo.reproduce.matrix import MATRIX, reproduce_matrix
from inspo.reproduce.smax import SMAX, is_smax_name, reproduce_smax
from inspo.reproduce.study import STUDY, reproduce_study

__all__ = ["add_parser"]


def _seeds(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``4,7`` means exactly those."""
    if "," in text:
        return [int(s) for s in text.split(",")]
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"--seeds needs at least one seed, got {text}")
    return list(range(count))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _command(args: argparse.Namespace, iters: int, bc_steps: int, env: str | None = None) -> str:
    """The command line that makes one table (for ``baselines --env all``, the one of environment ``env``)."""
    seeds = ",".join(map(str, args.seeds)) if args.seeds != list(range(len(args.seeds))) else str(len(args.seeds))
    parts = ["inspo reproduce", args.suite] + (["--env", env] if env else [])
    parts += ["--seeds", seeds, "--iters", str(iters), "--bc-steps", str(bc_steps)]
    if args.suite == "matrix" or (env is not None and env != "bridge"):
        parts += ["--episodes", str(args.episodes)]
    if args.suite != "matrix" and env not in ("xor", "mne"):
        parts += ["--eval-episodes", str(args.eval_episodes)]
    if args.datasets is not None or args.suite == "bridge":
        parts += ["--datasets", *(args.datasets or BRIDGE.datasets)]
    return " ".join(parts) + _methods_flag(args) + f" --out {args.out}"


def _bc_steps(text: str) -> int | str:
    """A positive step count, or ``auto`` (smax: each dataset's held-out cloning length)."""
    if text == "auto":
        return text
    try:
        return _positive(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text}") from None


def _hyper_file(path: Path) -> Any:
    """The ``{dataset or map: {method: {field: value}}}`` of ``--hyper FILE``."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--hyper {path}: not valid JSON ({err})") from None


_T = TypeVar("_T")


def _or(value: _T | None, default: _T) -> _T:
    """A flag's value, or the suite's default where the flag was not given."""
    return default if value is None else value


def _suite(args: argparse.Namespace) -> BaselinesSuite:
    """The baselines' suite with the methods of ``--methods`` (in table order), or all of them."""
    if args.methods is None:
        return BASELINES
    return dataclasses.replace(BASELINES, methods=tuple(m for m in BASELINES.methods if m in args.methods))


def _methods_flag(args: argparse.Namespace) -> str:
    """``--methods ...`` as the table's command line records it (nothing without the flag)."""
    return "" if args.methods is None else " --methods " + " ".join(_suite(args).methods)


def _study(args: argparse.Namespace) -> None:
    args.seeds = _or(args.seeds, list(STUDY.seeds))
    maps, qualities = _or(args.maps, list(STUDY.maps)), _or(args.qualities, list(STUDY.qualities))
    command = (f"inspo reproduce study --maps {' '.join(maps)} --qualities {' '.join(qualities)} --seeds "
               f"{','.join(map(str, args.seeds))}" + _methods_flag(args) + f" --out {args.out}"
               + " --partial" * args.partial)
    reproduce_study(args.out, maps, qualities, args.seeds, args.cluster, args.partial, command,
                    populations=args.populations, suite=_suite(args))


def _smax(args: argparse.Namespace) -> None:
    args.seeds = _or(args.seeds, list(SMAX.seeds))
    args.maps, args.qualities = _or(args.maps, list(SMAX.maps)), _or(args.qualities, list(SMAX.qualities))
    iters, bc_steps = _or(args.iters, SMAX.iters), _or(args.bc_steps, SMAX.bc_steps)
    episodes, eval_episodes = _or(args.episodes, SMAX.episodes), _or(args.eval_episodes, SMAX.eval_episodes)
    command = (f"inspo reproduce smax --maps {' '.join(args.maps)} --qualities {' '.join(args.qualities)} "
               f"--seeds {','.join(map(str, args.seeds))} --iters {iters} --bc-steps {bc_steps} --episodes "
               f"{episodes} --eval-episodes {eval_episodes}"
               + (f" --policies {args.policies}" if args.policies else "") + f" --out {args.out}")
    reproduce_smax(args.maps, args.qualities, args.seeds, iters, bc_steps, episodes, eval_episodes, args.out,
                   args.policies, args.cluster, command=command, populations=args.populations)


def _collapse(args: argparse.Namespace) -> None:
    suite = dataclasses.replace(
        COLLAPSE, datasets=tuple(args.datasets or COLLAPSE.datasets), seeds=tuple(_or(args.seeds, COLLAPSE.seeds)),
        iters=_or(args.iters, COLLAPSE.iters), bc_steps=_or(args.bc_steps, COLLAPSE.bc_steps),
        episodes=_or(args.episodes, COLLAPSE.episodes), eval_episodes=_or(args.eval_episodes, COLLAPSE.eval_episodes))
    command = (f"inspo reproduce collapse --datasets {' '.join(suite.datasets)} --seeds "
               f"{','.join(map(str, suite.seeds))} --iters {suite.iters} --bc-steps {suite.bc_steps} --episodes "
               f"{suite.episodes} --eval-episodes {suite.eval_episodes}"
               + (f" --policies {args.policies}" if args.policies else "") + f" --out {args.out}")
    reproduce_collapse(args.out, suite, args.policies, command, args.cluster, args.populations)


def _baselines(args: argparse.Namespace) -> None:
    args.seeds = _or(args.seeds, list(BASELINES.seeds))
    args.eval_episodes = _or(args.eval_episodes, BASELINES.eval_episodes)
    envs = list(BASELINES.all_envs) if args.env == "all" else [args.env]
    if args.datasets is not None:  # with several environments, each takes its own datasets from the list
        known = {name for env in envs for name in BASELINES.envs[env].datasets}
        unknown = [name for name in args.datasets if name not in known and not ("smax" in envs and is_smax_name(name))]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a dataset of --env {args.env}; expected some of "
                             f"{', '.join(sorted(known))}" + (" or <map>-<quality>" if "smax" in envs else ""))
        envs = [env for env in envs if env == "smax" or set(BASELINES.envs[env].datasets) & set(args.datasets)]
    for env in envs:
        spec = BASELINES.envs[env]
        iters, bc_steps = _or(args.iters, spec.iters), _or(args.bc_steps, spec.bc_steps)
        datasets = None if args.datasets is None else [
            d for d in args.datasets if d in spec.datasets or (env == "smax" and is_smax_name(d))]
        episodes = _or(args.episodes, spec.episodes)
        given, args.episodes = args.episodes, episodes  # _command records the value used
        command = _command(args, iters, bc_steps, env)
        args.episodes = given
        reproduce_baselines(env, args.seeds, args.out, iters, bc_steps, datasets, episodes, args.eval_episodes,
                            args.data, args.cluster, command, suite=_suite(args), populations=args.populations,
                            hyper=None if args.hyper is None else _hyper_file(args.hyper), partial=args.partial)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    args.cluster = cluster_from_args(args, args.jobs)
    if args.bc_steps == "auto" and args.suite != "smax" and not (args.suite == "baselines" and args.env == "smax"):
        raise ValueError(f"--bc-steps auto (each dataset's held-out cloning length) is for SMAX (the smax suite, "
                         f"baselines --env smax); got suite {args.suite!r}: give a number of steps")
    if args.suite not in ("baselines", "study") and args.partial:
        raise ValueError(f"--partial is for the baselines and study suites, not {args.suite!r}")
    if args.suite not in ("baselines", "study") and args.methods is not None:
        raise ValueError(f"--methods is for the baselines and study suites, not {args.suite!r}")
    if args.suite != "baselines" and args.hyper is not None:
        raise ValueError(f"--hyper is for the baselines suite, not {args.suite!r}"
                         + " (the study tunes its own)" * (args.suite == "study"))
    if args.suite == "study" and (args.iters, args.bc_steps, args.episodes, args.eval_episodes) != (None,) * 4:
        raise ValueError("the study's budget, cloning, episodes and evaluation are its protocol "
                         "(inspo.reproduce.study.STUDY); --iters, --bc-steps, --episodes and --eval-episodes are not "
                         "taken")
    if (args.env is None) != (args.suite != "baselines"):
        raise ValueError(f"--env (one of {', '.join(BASELINES.all_envs)}, all) is required by the baselines suite "
                         f"and only by it (or --env smax, which all leaves out: it needs trained SMAX policies and "
                         f"far more CPU time); got suite {args.suite!r} with --env {args.env}")
    if args.suite == "smax":
        _smax(args)
    elif args.suite == "study":
        _study(args)
    elif args.suite == "collapse":
        _collapse(args)
    elif args.suite == "baselines":
        _baselines(args)
    elif args.suite == "matrix":
        args.seeds = _or(args.seeds, list(MATRIX.seeds))
        iters, bc_steps = _or(args.iters, MATRIX.iters), _or(args.bc_steps, MATRIX.bc_steps)
        args.episodes = _or(args.episodes, MATRIX.episodes)
        reproduce_matrix(args.seeds, iters, bc_steps, args.episodes, args.out, args.cluster,
                         _command(args, iters, bc_steps), populations=args.populations)
    else:
        args.seeds = _or(args.seeds, list(BRIDGE.seeds))
        args.eval_episodes = _or(args.eval_episodes, BRIDGE.eval_episodes)
        iters, bc_steps = _or(args.iters, BRIDGE.iters), _or(args.bc_steps, BRIDGE.bc_steps)
        reproduce_bridge(args.data, args.datasets or list(BRIDGE.datasets), args.seeds, iters, bc_steps,
                         args.eval_episodes, args.out, args.cluster, _command(args, iters, bc_steps),
                         populations=args.populations)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``inspo reproduce {matrix,bridge,baselines,smax,study,collapse}`` on the CLI's sub-command parser."""
    envs = BASELINES.envs
    p = sub.add_parser("reproduce", help="reproduce the known-answer tables (matrix games, Bridge, baselines, SMAX)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=["matrix", "bridge", "baselines", "smax", "study", "collapse"],
                   help="which table of the paper to reproduce")
    p.add_argument("--env", choices=[*envs, "all"], default=None,
                   help=f"baselines: the environment (all: {', '.join(BASELINES.all_envs[:-1])} and "
                        f"{BASELINES.all_envs[-1]} in turn, one table each)")
    p.add_argument("--seeds", type=_seeds, default=None, help="a count (3: seeds 0-2) or a list (4,7)")
    p.add_argument("--iters", type=_positive, default=None,
                   help=f"iterations per run (default: {MATRIX.iters} matrix, {BRIDGE.iters} bridge; baselines: "
                        f"{envs['xor'].iters} xor and mne, {envs['bridge'].iters} bridge)")
    p.add_argument("--bc-steps", type=_bc_steps, default=None,
                   help=f"behaviour-cloning steps per run (default: {MATRIX.bc_steps} matrix, {BRIDGE.bc_steps} "
                        f"bridge, {SMAX.bc_steps} smax; baselines: {envs['xor'].bc_steps} xor and mne, "
                        f"{envs['bridge'].bc_steps} bridge); smax and baselines --env smax also take auto: each "
                        f"dataset's behaviour cloning until its held-out NLL stops improving (inspo datasets "
                        f"bc-length; at most {SMAX.bc_length.max_steps} steps, measured once per dataset and cached), "
                        f"the same for every method and seed of the dataset")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder of the tables (default: results)")
    p.add_argument("--jobs", type=_positive, default=1,
                   help=f"training runs in parallel, in the processes of a local dask cluster ({INSTALL_HINT})")
    p.add_argument("--episodes", type=_positive, default=None,
                   help=f"matrix, baselines on xor and mne: one-step episodes per dataset (default "
                        f"{MATRIX.episodes}); smax, baselines on smax: episodes per generated dataset (default "
                        f"{SMAX.episodes})")
    p.add_argument("--maps", nargs="+", default=None, help="smax, study: SMAX maps (default: the paper's four)")
    p.add_argument("--qualities", nargs="+", default=None,
                   help=f"smax, study: data qualities (default: smax {' '.join(SMAX.qualities)}, study "
                        f"{' '.join(STUDY.qualities)}; any of {', '.join(SMAX_QUALITIES)})")
    p.add_argument("--hyper", type=Path, default=None,
                   help="baselines: a JSON file of hyper-parameters per dataset (or SMAX map) and method, "
                        "{name: {method: {field: value}}}, e.g. the study's smax_study_hyper.json")
    p.add_argument("--methods", nargs="+", choices=BASELINE_METHODS, default=None,
                   help=f"baselines, study: train, tune and tabulate only these (default: all, "
                        f"{' '.join(BASELINE_METHODS)})")
    p.add_argument("--partial", action="store_true",
                   help="baselines, study: train nothing; tabulate the runs the run cache holds and list the "
                        "missing ones")
    p.add_argument("--policies", type=Path, default=None,
                   help="smax: folder of <map>/ folders written by inspo online train (default: data/smax_policies)")
    p.add_argument("--data", type=Path, default=BRIDGE.data_root,
                   help=f"bridge: folder of the AlberDICE buffers not shipped in data/ (default: {BRIDGE.data_root})")
    p.add_argument("--datasets", nargs="+", default=None,
                   help=f"bridge: buffer names (default: {' '.join(BRIDGE.datasets)}); baselines: a subset of the "
                        "environment's datasets (default: all); collapse: <map>-<quality> SMAX datasets (default: "
                        f"{' '.join(COLLAPSE.datasets)})")
    p.add_argument("--eval-episodes", type=_positive, default=None,
                   help=f"bridge, smax, baselines on bridge and smax: sampled episodes per evaluation (default "
                        f"{BRIDGE.eval_episodes})")
    p.add_argument("--no-populations", dest="populations", action="store_false",
                   help="train every run alone (by default the runs that differ only in their seed train together "
                        "as one population; the tables are the same, the timings are not)")
    add_cluster_flags(p)
    p.set_defaults(func=_cmd_reproduce)
