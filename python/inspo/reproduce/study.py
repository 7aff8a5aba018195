"""``inspo reproduce study``: the SMAX study of issue 20 as one command. BC, MA-ICQ, OMIGA, CFCQL and InSPO on every
``<map>-<quality>`` dataset of the paper's maps, at the paper's scale and a budget in line with CFCQL's, each method
with the hyper-parameters that the same tuning budget found for it on the map (``docs/design.md`` section 10.3).

For each map the command, in order:

1. makes the datasets (5,000 episodes each) and measures each one's held-out cloning length (:mod:`inspo.bc_length`);
2. tunes every method but BC with SMAC3 (:func:`inspo.tune.tune`) on the map's ``tune_quality`` dataset, with a seed
   the table does not report, in ``<out>/cache/tune/<map>/<method>/`` (an interrupted search resumes, a finished one
   is read back);
3. trains the table's runs with the incumbents, through :func:`~inspo.reproduce.baselines.reproduce_baselines`
   (``--env smax``), whose run cache makes the study resumable in several sittings.

It writes ``<out>/smax_study_table.md`` (``.json``, ``.png``), ``<out>/smax_study_tuning.md`` (every search: the
default's and the incumbent's return, the incumbent's values) and ``<out>/smax_study_hyper.json`` (the incumbents,
``{map: {method: {field: value}}}``, as ``inspo reproduce baselines --hyper`` reads them). ``--partial`` makes and
trains nothing: it tabulates what the cache holds so far and lists the runs still missing.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inspo import jsonio
from inspo.cluster import Cluster
from inspo.config import TrainConfig
from inspo.data import dataset_digest
from inspo.reproduce.baselines import BASELINES, BaselinesSuite, reproduce_baselines
from inspo.reproduce.runner import METHOD_NAMES, markdown_table, pathless, write_text
from inspo.reproduce.smax import auto_bc_length, smax_dataset
from inspo.tune_space import Param

__all__ = ["STUDY", "StudyProtocol", "reproduce_study", "tune_map"]


def _tuned_fields() -> dict[str, tuple[str, ...]]:
    # Three of each method's own fields; the actor's learning rate is left out so every method starts from one clone.
    return {"icq": ("alpha", "lr_critic", "icq_critic_temp"), "omiga": ("alpha", "lr_critic", "z_max"),
            "cfcql": ("cql_alpha", "lr_critic", "cfcql_lambda_temp"), "inspo": ("alpha", "rho_max", "lr_critic")}


@dataclass(frozen=True)
class StudyProtocol:
    """The settings of the SMAX study (``docs/design.md`` section 10.3)."""

    maps: tuple[str, ...] = ("2s3z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z")
    qualities: tuple[str, ...] = ("expert", "medium", "medium-replay", "mixed")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # reported; the tuning uses tune_seed
    episodes: int = 5000  # per dataset, as in the paper
    iters: int = 40000  # x 256 transitions: about the 10M transitions CFCQL's runs consume
    eval_episodes: int = 128
    evaluations: int = 20  # per run: every 2000 iterations
    # Every method's critic reads SMAX's world state standardised by the dataset (positions and health in map units
    # made CFCQL's mixer diverge: docs/design.md section 10.3).
    normalize_state: bool = True
    # Tuning: the same budget for every method but BC (which has nothing left to tune once its length is set).
    tune_quality: str = "mixed"
    tune_seed: int = 100
    tune_trials: int = 10
    tune_iters: int = 10000
    tune_evaluations: int = 4
    tune_eval_episodes: int = 64
    tune_fields: dict[str, tuple[str, ...]] = field(default_factory=_tuned_fields)
    tune_ranges: dict[str, Param] = field(default_factory=lambda: {"cfcql_lambda_temp": Param(0.0, 5.0)})
    smac_seed: int = 0
    name: str = "smax_study"  # <out>/<name>_table.md, <name>_tuning.md, <name>_hyper.json


STUDY = StudyProtocol()
"""The protocol of ``inspo reproduce study``."""


def _search(folder: Path, base: TrainConfig | None, dataset_sha256: str | None) -> dict[str, Any] | None:
    """The ``tune.json`` of a finished search in ``folder`` (its incumbent set), else None; ValueError if it searched
    from another base config than ``base`` (None: not known yet, a partial table) or other data. The dataset is
    compared by content, not by path: a search made in another working folder or checkout is the same search."""
    try:
        found = json.loads((folder / "tune.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not (found.get("incumbent") and len(found["trials"]) >= found["n_trials"]):
        return None
    if base is not None and (pathless(found["base_config"]) != pathless(base.to_dict())
                             or found.get("dataset_sha256") != dataset_sha256):
        raise ValueError(f"{folder} holds a finished search from other settings than this study's (another dataset, "
                         f"cloning length or protocol); move it away to search again")
    return found


def _protocol_suite(suite: BaselinesSuite, protocol: StudyProtocol) -> BaselinesSuite:
    """``suite`` with the protocol's own settings added to its SMAX runs' (the searches' and the table's)."""
    smax = suite.envs["smax"]
    settings = {**smax.settings, "normalize_state": protocol.normalize_state}
    return replace(suite, envs={**suite.envs, "smax": replace(smax, settings=settings)})


def tune_map(map_name: str, cache: Path, protocol: StudyProtocol = STUDY, jobs: int | Cluster = 1,
             partial: bool = False, suite: BaselinesSuite = BASELINES) -> dict[str, dict[str, Any]]:
    """The finished search (``tune.json``) of every tuned method of ``suite.methods`` on ``map_name``, running the
    searches not finished yet (``partial``: leaving them out) in ``<cache>/tune/<map>/<method>/``."""
    from inspo.tune import tune

    searches: dict[str, dict[str, Any]] = {}
    suite = _protocol_suite(suite, protocol)
    data = smax_dataset(map_name, protocol.tune_quality, protocol.episodes, cache, None, build=not partial)
    settings = suite.envs["smax"].settings
    length = None if data is None else auto_bc_length(data, cache, settings, suite.bc_length, measure=not partial)
    digest = None if data is None else dataset_digest(data)
    for method, fields in protocol.tune_fields.items():
        if method not in suite.methods:
            continue
        folder = cache / "tune" / map_name / method
        base = None if length is None else TrainConfig.from_dict({
            **settings, "dataset": str(data), "algo": method, "seed": protocol.tune_seed,
            "iters": protocol.tune_iters, "bc_steps": length.steps, "eval_episodes": protocol.tune_eval_episodes,
            "eval_every": protocol.tune_iters // protocol.tune_evaluations})
        found = _search(folder, base, digest)
        if found is None and not partial and base is not None:
            ranges = {k: v for k, v in protocol.tune_ranges.items() if k in fields}
            tune(base, folder, trials=protocol.tune_trials, workers=jobs, params=list(fields), ranges=ranges,
                 smac_seed=protocol.smac_seed, resume=(folder / "tune.json").is_file(), progress=True,
                 clones=cache / "clones")
            found = _search(folder, base, digest)
        if found is not None:
            searches[method] = found
    return searches


def _tuning_markdown(searches: dict[str, dict[str, dict[str, Any]]], protocol: StudyProtocol, command: str) -> str:
    rows = []
    for map_name, methods in searches.items():
        for method, found in methods.items():
            best, default = found["incumbent"], found["default"]
            rows.append([map_name, METHOD_NAMES[method], ", ".join(found["space"]), str(len(found["trials"])),
                         "n/a" if default is None else f"{default['return']:.3f}", f"{best['return']:.3f}",
                         ", ".join(f"{k}={v}" for k, v in best["params"].items()),
                         f"{sum(t['time'] for t in found['trials']) / 60:.0f}"])
    return f"""# The SMAX study's tuning

Made by `{command}`. Per map and method, SMAC3 (seed {protocol.smac_seed}) on the map's `{protocol.tune_quality}` \
dataset with training seed {protocol.tune_seed} (not a reported seed): {protocol.tune_trials} trials of \
{protocol.tune_iters} iterations after the dataset's held-out cloning length, scored by the final return over \
{protocol.tune_eval_episodes} sampled episodes; the defaults are one of the trials. Searches: \
`<out>/cache/tune/<map>/<method>/tune.json`. CPU-minutes: the trials' times added up (each trial has a core), \
so a search resumed over several sittings counts them all.

{markdown_table(["map", "method", "searched", "trials", "default's return", "incumbent's return", "incumbent",
                 "CPU-minutes"], rows)}
"""


def reproduce_study(out: Path, maps: Sequence[str] = STUDY.maps, qualities: Sequence[str] = STUDY.qualities,
                    seeds: Sequence[int] = STUDY.seeds, jobs: int | Cluster = 1, partial: bool = False,
                    command: str = "", protocol: StudyProtocol = STUDY, populations: bool = True,
                    suite: BaselinesSuite = BASELINES) -> dict[str, Any]:
    """Tune, train (or, ``partial``, tabulate from the run cache) the study on the datasets of ``maps`` x
    ``qualities``; write the files of the module docstring to ``out``; return the table's record. ``suite``: the
    methods and how cloning lengths are measured (:data:`~inspo.reproduce.baselines.BASELINES`)."""
    cache = out / "cache"
    suite = _protocol_suite(suite, protocol)
    searches = {m: tune_map(m, cache, protocol, jobs, partial, suite) for m in maps}
    hyper = {m: {method: found["incumbent"]["params"] for method, found in methods.items()}
             for m, methods in searches.items() if methods}
    if hyper:
        path = out / f"{protocol.name}_hyper.json"
        try:  # the incumbents of maps and methods tuned in other sittings stay
            known = json.loads(path.read_text())
        except FileNotFoundError:
            known = {}
        jsonio.write(path, {**known, **{m: {**known.get(m, {}), **methods} for m, methods in hyper.items()}})
        write_text(out / f"{protocol.name}_tuning.md", _tuning_markdown(searches, protocol, command))
    return reproduce_baselines(
        "smax", seeds, out, iters=protocol.iters, bc_steps="auto",
        datasets=[f"{m}-{q}" for m in maps for q in qualities], episodes=protocol.episodes,
        eval_episodes=protocol.eval_episodes, jobs=jobs, command=command, populations=populations,
        hyper=hyper, evaluations=protocol.evaluations, partial=partial, name=f"{protocol.name}_table", suite=suite,
        title="The SMAX study: BC, MA-ICQ, OMIGA, CFCQL and InSPO, each tuned with the same budget")
