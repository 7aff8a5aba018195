"""The ``inspo`` command line: train, evaluate, datasets, bench, reproduce (and online, tune, report).

Every failure ends with one line on stderr and an exit code of :mod:`inspo.errors` (README, "Exit codes").
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from inspo import jsonio
from inspo.config import TrainConfig, add_config_flags, config_from_args
from inspo.errors import EXIT_INTERRUPTED, EXIT_NUMERICAL, EXIT_OK, EXIT_USAGE, InspoError
from inspo.flags import parse_key_values
from inspo.paths import check_out_dir

_TRAINING_STATE = ("config", "run", "bc", "learner", "generator", "torch_rng")
"""Sections of a run's ``checkpoint.pt`` that ``--resume`` reads."""


def _cmd_train(args: argparse.Namespace) -> int:
    from inspo import checkpoint
    from inspo.population_training import SUMMARY, read_summary, train_population
    from inspo.training import TrainingInterrupted, train

    if args.resume and not (Path(args.resume) / "checkpoint.pt").exists() and (Path(args.resume) / SUMMARY).exists():
        cfg = TrainConfig.from_dict({**read_summary(args.resume)["config"], "out": args.resume})
    elif args.resume:
        path = Path(args.resume) / "checkpoint.pt"
        saved = checkpoint.sections(checkpoint.load(path), path, _TRAINING_STATE, "a run's training state")
        if not isinstance(saved["config"], dict):
            raise checkpoint.CheckpointError(f"{path}: its 'config' is a {type(saved['config']).__name__}, "
                                             f"expected a mapping of TrainConfig fields")
        cfg = TrainConfig.from_dict({**saved["config"], "out": args.resume})
    else:
        cfg = config_from_args(args, population=True)
        if cfg.out is not None:
            check_out_dir(cfg.out)
    run = train_population if cfg.is_population() else train
    try:
        result = run(cfg, progress=True, resume=bool(args.resume), overwrite=args.overwrite, clones=args.clones)
    except TrainingInterrupted as exc:
        _fail("inspo train", str(exc))
        return EXIT_INTERRUPTED
    except FloatingPointError as exc:
        _fail("inspo train", str(exc))
        return EXIT_NUMERICAL
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun only rank 0 reports
    summary = _population_summary(result) if cfg.is_population() else _run_summary(result)
    print(jsonio.dumps(summary, indent=2))
    return EXIT_OK


def _population_summary(result: Any) -> dict[str, Any]:
    """What ``inspo train`` prints of a :class:`~inspo.population_training.PopulationResult`: the members' mean
    returns (and their std), then each member's summary as a single run's."""
    numbers = result.summary()
    return {"members": numbers["members"], "differences": numbers["differences"],
            "final_return": numbers["final_return"]["mean"], "final_return_std": numbers["final_return"]["std"],
            "best_return": numbers["best_return"]["mean"], "best_return_std": numbers["best_return"]["std"],
            "behaviour_return": numbers["behaviour_return"], "optimum": numbers["optimum"],
            "updates_per_second": round(result.updates_per_second, 1), "wall_time_s": round(result.wall_time, 1),
            "summary": result.summary_path,
            "per_member": [{"seed": c.seed, **_run_summary(r)} for c, r in zip(result.configs, result.members)]}


def _run_summary(result: Any) -> dict[str, Any]:
    """What ``inspo train`` prints of a run's :class:`~inspo.training.TrainResult`."""
    return {"final_return": result.final_return, "best_return": result.best_return,
            "behaviour_return": result.behaviour_return, "optimum": result.optimum,
            "updates_per_second": round(result.updates_per_second, 1),
            **({} if result.final_win_rate is None else {"final_win_rate": result.final_win_rate}),
            "wall_time_s": round(result.wall_time, 1), "cpu_time_s": round(result.cpu_time, 1),
            "checkpoint": result.checkpoint,
            "metrics": result.metrics_path}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from inspo.training import evaluate

    res = evaluate(args.checkpoint, env=args.env, episodes=args.episodes, seed=args.seed,
                   episode_limit=args.episode_limit, greedy=args.greedy)
    print(jsonio.dumps(res, indent=2))
    return EXIT_OK


def _summary(path: str, ds) -> dict[str, Any]:
    m = ds.manifest
    return {"path": path, "env": m["env"]["id"], "env_options": m["env"]["options"], "counts": m["counts"],
            "returns": m["returns"], "behaviour": m["behaviour"], "seed": m["seed"], "source": m["source"]}


def _generate(args: argparse.Namespace):
    """`datasets generate`: matrix games sample a --preset distribution, SMAX maps play a --quality policy."""
    from inspo import data

    if args.env.startswith("smax:"):
        if args.preset is not None or args.quality is None:
            raise ValueError(f"{args.env} needs --quality (one of {', '.join(data.SMAX_QUALITIES)}), not --preset")
        return data.generate_smax(args.env, args.quality, args.episodes, args.seed,
                                  episode_limit=args.episode_limit, policy=args.policy)
    if args.env not in ("xor", "mne"):
        if args.quality != "random" or args.preset is not None or args.policy is not None:
            raise ValueError(f"{args.env}: expected --quality random (the uniform policy, for any environment); "
                             f"--preset is for xor and mne, other qualities and --policy for smax:<map>")
        return data.generate_uniform(args.env, args.episodes, args.seed, episode_limit=args.episode_limit,
                                     **parse_key_values('--env-option', args.env_option))
    if args.policy is not None:
        raise ValueError(f"--policy is for SMAX data; {args.env} takes none")
    if args.preset is None or args.quality is not None:
        raise ValueError(f"{args.env} needs --preset (a joint-action distribution), not --quality")
    return data.generate_matrix(args.env, args.preset, args.episodes, args.seed,
                                episode_limit=1 if args.episode_limit is None else args.episode_limit)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from inspo import data

    if args.action == "list":
        return _list_datasets(Path(args.path))
    if args.action == "bc-length":
        return _bc_length(args)
    if args.action in ("generate", "import"):
        check_out_dir(args.out)
    if args.action == "generate":
        ds = _generate(args)
    elif args.action == "import" and args.format == "vault":
        ds = data.import_vault(args.src, args.env, uid=args.uid, reward=args.reward, episode_limit=args.episode_limit)
    elif args.action == "import":
        ds = data.import_pymarl(args.src, args.env, trusted=args.trusted)
    elif args.action == "export":
        folder = data.export_vault(data.load_dataset(args.path), args.out, uid=args.uid, overwrite=args.overwrite)
        print(jsonio.dumps({"vault": str(folder.parent), "uid": folder.name}, indent=2))
        return 0
    else:
        ds = data.load_dataset(args.path, env=args.env)  # the checks training makes (see load_dataset)
        print(jsonio.dumps({"ok": True, **_summary(args.path, ds)} if args.action == "verify"
                           else {**_summary(args.path, ds), "files": ds.manifest["files"]}, indent=2))
        return EXIT_OK
    out = data.save_dataset(ds, args.out, overwrite=args.overwrite)
    print(jsonio.dumps(_summary(str(out), ds), indent=2))
    return EXIT_OK


def _bc_length(args: argparse.Namespace) -> int:
    """`datasets bc-length`: the held-out behaviour-cloning length as JSON on stdout (and in --out)."""
    from inspo.bc_length import BCLengthSettings, heldout_bc_length

    settings = BCLengthSettings(**{name: getattr(args, name) for name in BCLengthSettings.__dataclass_fields__})
    found = {"path": args.path, **heldout_bc_length(args.path, settings).to_dict()}
    if args.out is not None:
        jsonio.write(args.out, found)
    print(jsonio.dumps(found, indent=2))
    return EXIT_OK


def _add_bc_length_parser(dsub: argparse._SubParsersAction) -> None:
    from inspo.bc_length import BCLengthSettings

    d = BCLengthSettings()
    q = dsub.add_parser("bc-length", help="behaviour-cloning steps until the held-out NLL stops improving (JSON)",
                        description="Clone the behaviour policy on the dataset's episodes but every --heldout-every-th "
                                    "(episodes k with k % H == H-1, storage order) and evaluate the mean NLL of the "
                                    "held-out ones every --every steps; the length is the step of the best held-out "
                                    "NLL (better: lower by more than --rel-tol of the best), training stops after "
                                    "--patience evaluations without improvement or at --max-steps.")
    q.add_argument("path", help="the dataset directory")
    q.add_argument("--hidden", type=_positive_int, default=d.hidden, help=f"policy width (default {d.hidden})")
    q.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    q.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help=f"rows per step (default "
                                                                                     f"{d.batch_size})")
    q.add_argument("--max-steps", type=_positive_int, default=d.max_steps,
                   help=f"cap on the cloning steps (default {d.max_steps})")
    q.add_argument("--every", type=_positive_int, default=d.every,
                   help=f"steps between two held-out evaluations (default {d.every})")
    q.add_argument("--patience", type=_positive_int, default=d.patience,
                   help=f"evaluations without improvement before stopping (default {d.patience})")
    q.add_argument("--rel-tol", type=float, default=d.rel_tol,
                   help=f"relative decrease of the best held-out NLL that counts as improvement (default {d.rel_tol})")
    q.add_argument("--heldout-every", type=int, default=d.heldout_every,
                   help=f"hold out every H-th episode (default {d.heldout_every})")
    q.add_argument("--seed", type=int, default=d.seed, help=f"seed of the network and the batches (default {d.seed})")
    q.add_argument("--out", default=None, help="also write the JSON to this file")


def _list_datasets(root: Path) -> int:
    """`datasets list`: one line per dataset under ``root`` (a bad one says why, and the listing goes on), then the
    generator presets; EXIT_USAGE if any was bad."""
    from inspo import data

    found = sorted(p.parent for p in root.glob("**/manifest.json")) if root.is_dir() else []
    bad = []
    for path in found:
        try:
            m = data.load_dataset(path, verify=False).manifest  # the manifest and file headers; not the content
        except (data.DatasetError, OSError) as exc:
            bad.append(path)
            print(f"{path}  INVALID: {_one_line(exc)}")
            continue
        mean = m["returns"]["mean"]
        print(f"{path}  env={m['env']['id']}  episodes={m['counts']['episodes']}  "
              f"return={'n/a' if mean is None else format(mean, '.4f')}")
    print("generator presets: " + ", ".join(sorted(data.MATRIX_PRESETS)))
    if bad:
        _fail("inspo datasets", f"{len(bad)} of {len(found)} datasets under {root} are invalid: "
                                f"{', '.join(map(str, bad))}")
        return EXIT_USAGE
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="inspo", description=__doc__)
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a method on an offline dataset")
    p.add_argument("--resume", metavar="DIR", help="continue the run whose --out was DIR (other flags ignored)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, a folder that holds a run is refused)")
    p.add_argument("--clones", metavar="DIR",
                   help="folder of behaviour clones: a run that clones the data's policy as one there did starts from "
                        "that clone (the same run, without the cloning time); a run that clones keeps its clone there")
    add_config_flags(p, population=True)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a saved policy")
    p.add_argument("checkpoint", help="a policy checkpoint: a run's final.pt or best.pt, or an online snapshot")
    p.add_argument("--env", default=None, help="environment (default: the one it was trained on)")
    p.add_argument("--episodes", type=_positive_int, default=100, help="episodes to play (>= 1; default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes and of the sampled actions")
    p.add_argument("--episode-limit", type=int, default=None,
                   help="steps per episode (default: the environment's own limit)")
    p.add_argument("--greedy", action="store_true", help="act by argmax instead of sampling")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("datasets", help="generate, import, verify and inspect datasets")
    dsub = p.add_subparsers(dest="action", required=True)
    q = dsub.add_parser("list", help="datasets under a directory, and the generator presets")
    q.add_argument("path", nargs="?", default="runs/data", help="directory searched for datasets")
    q = dsub.add_parser("generate", help="sample a matrix-game or SMAX dataset (deterministic per seed)")
    q.add_argument("--env", required=True, help="xor, mne, smax:<map> (e.g. smax:3m), or any environment with "
                                                "--quality random (e.g. pettingzoo:mpe2.simple_spread_v3)")
    q.add_argument("--env-option", action="append", metavar="KEY=VALUE",
                   help="option of an environment played with --quality random (e.g. max_cycles=10); repeatable")
    q.add_argument("--preset", help="matrix games: joint-action distribution, e.g. mne-imbalanced")
    q.add_argument("--quality", help="SMAX: behaviour policy: random, heuristic, medium, expert, medium-replay or "
                                     "mixed (the last four play online-trained policies, see --policy); other "
                                     "environments: random")
    q.add_argument("--policy", default=None, metavar="DIR",
                   help="SMAX medium/expert/medium-replay/mixed: a folder written by `inspo online train` "
                        "(default: data/smax_policies/<map> when the repository ships one)")
    q.add_argument("--episodes", type=int, default=5000, help="episodes to sample")
    q.add_argument("--episode-limit", type=int, default=None, help="steps per episode (default: 1 for matrix "
                                                                   "games, 100 for SMAX)")
    q.add_argument("--seed", type=int, default=0, help="seed of the sampled episodes")
    q = dsub.add_parser("import", help="import a PyMARL episode buffer (e.g. the shared AlberDICE data; replayed "
                                       "through the environment unless --trusted) or an OG-MARL / flashbax vault "
                                       "(always trusted: not replayed)")
    q.add_argument("src", help="the PyMARL buffer file or the vault folder to import")
    q.add_argument("--env", required=True, help="the environment the data was played in, e.g. smax:3m")
    q.add_argument("--format", choices=("pymarl", "vault"), default="pymarl", help="the format of SRC")
    q.add_argument("--trusted", action="store_true",
                   help="pymarl: do not replay the buffer through the environment (for stochastic environments, or "
                        "ones not installed here): episode ends come from its terminated and filled fields, and "
                        "shapes, flags, masks and episode boundaries are checked as for a vault; vault imports are "
                        "always trusted")
    q.add_argument("--uid", default=None, help="vault: which dataset of the vault (e.g. expert), if it has several")
    q.add_argument("--reward", choices=("shared", "sum", "mean"), default="shared",
                   help="vault: per-agent rewards to team reward (shared: all agents hold it)")
    q.add_argument("--episode-limit", type=int, default=None,
                   help="vault: the step limit, where the environment is not installed (default: longest episode)")
    q = dsub.add_parser("export", help="write a dataset as an OG-MARL / flashbax vault")
    q.add_argument("path", help="the dataset directory to export")
    q.add_argument("--format", choices=("vault",), required=True, help="the format to write")
    q.add_argument("--out", required=True, help="vault folder, e.g. vaults/mine.vlt")
    q.add_argument("--uid", default="dataset", help="name of the dataset inside the vault")
    q.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
    for q in dsub.choices["generate"], dsub.choices["import"]:
        q.add_argument("--out", required=True, help="dataset directory to write (atomically)")
        q.add_argument("--overwrite", action="store_true", help="replace the dataset already in --out")
    for action in ("verify", "info"):
        q = dsub.add_parser(action, help=f"{action} a dataset (checksums, shapes, content)")
        q.add_argument("path", help="the dataset directory")
        q.add_argument("--env", default=None, help="also check that the data fits this environment")
    _add_bc_length_parser(dsub)
    p.set_defaults(func=_cmd_datasets)

    from inspo import benchmarks, online_cli, report, reproduce, tune

    benchmarks.add_parser(sub)
    online_cli.add_parser(sub)
    reproduce.add_parser(sub)
    tune.add_parser(sub)
    report.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return its exit code (:mod:`inspo.errors`).

    Bad input of any kind (a project error, any other ValueError, a RuntimeError such as torch's for a bad device,
    an OSError on a user's path) is one line on stderr and EXIT_USAGE; Ctrl-C is one line and EXIT_INTERRUPTED.
    Anything else is a bug and keeps its traceback. Bad arguments exit through argparse (SystemExit, EXIT_USAGE).
    """
    command = "inspo"
    try:
        args = build_parser().parse_args(argv)
        command = f"inspo {args.command}"
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        _fail(command, "interrupted (SIGINT)")
        return EXIT_INTERRUPTED
    except FloatingPointError as exc:
        _fail(command, str(exc))
        return EXIT_NUMERICAL
    except OSError as exc:
        _fail(command, _os_error(exc))
        return EXIT_USAGE
    except (InspoError, ValueError, RuntimeError) as exc:  # InspoError covers DatasetError, CheckpointError, ...
        _fail(command, _one_line(exc))
        return EXIT_USAGE


def _single_line(text: str) -> str:
    """``text`` on one line: its lines (a torch message, a path holding a newline) joined by '; '."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, or its type's name when it has none."""
    return _single_line(str(exc)) or type(exc).__name__


def _os_error(exc: OSError) -> str:
    """An OSError as 'what: the path(s)', e.g. 'Permission denied: runs/x'."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if exc.strerror and paths:
        return f"{exc.strerror}: {' -> '.join(paths)}"
    return _one_line(exc)


def _fail(command: str, message: str) -> None:
    """The one line on stderr that ends a failed command."""
    print(f"{command}: error: {_single_line(message)}", file=sys.stderr)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default (unless its help already says it, or it has none to show), and
    descriptions as written (the module docstrings they come from are laid out by hand)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        shows = action.nargs != 0 and action.default not in (None, argparse.SUPPRESS) and not action.required
        if text and shows and "default" not in text:
            text += " (default: %(default)s)"
        return text


_RST_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def plain_text(text: str) -> str:
    """``text`` without reStructuredText markup: roles (``:class:`~a.B``` -> ``B``) and double backticks."""
    text = _RST_ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return text.replace("``", "")


class _Version(argparse.Action):
    """``--version``: the package version and, from a checkout, its commit (looked up only when asked)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version of inspo (and the git commit it runs from) and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from inspo.provenance import package_info

        info = package_info()
        print(f"inspo {info['version']}" + (f" (commit {info['commit']})" if info["commit"] else ""))
        parser.exit(EXIT_OK)


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its errors on one line, naming the --help that shows the usage; its help shows the
    defaults and no reStructuredText (:class:`_HelpFormatter`, :func:`plain_text`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["formatter_class"] = _HelpFormatter  # every command alike, whatever its module asked for
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        return plain_text(super().format_help())

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


if __name__ == "__main__":
    sys.exit(main())
