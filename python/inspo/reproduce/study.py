"""``inspo reproduce study``: the SMAX study of issue 20 as one command. BC, MA-ICQ, OMIGA, CFCQL and InSPO on every
``<map>-<quality>`` dataset of the paper's maps, at the paper's scale and a budget in line with CFCQL's, through
:func:`~inspo.reproduce.baselines.reproduce_baselines` (``--env smax``) with the protocol's settings below.

The study takes many CPU hours: the run cache lets it be made in several sittings (the same command again trains only
what is missing), and ``--partial`` tabulates what the cache holds so far, listing the runs still missing.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspo.cluster import Cluster
from inspo.reproduce.baselines import reproduce_baselines

__all__ = ["STUDY", "StudyProtocol", "load_hyper", "reproduce_study"]


@dataclass(frozen=True)
class StudyProtocol:
    """The settings of the SMAX study (``docs/design.md``, the SMAX study)."""

    maps: tuple[str, ...] = ("2s3z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z")
    qualities: tuple[str, ...] = ("expert", "medium", "medium-replay", "mixed")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # reported seeds; tuning uses others (100 and up)
    episodes: int = 5000  # per dataset, as in the paper
    iters: int = 40000  # x 256 transitions: about the 10M transitions CFCQL's runs consume
    bc_steps: str = "auto"  # each dataset's held-out cloning length
    eval_episodes: int = 128
    evaluations: int = 20  # per run: every 2000 iterations
    # The tuned hyper-parameters ({map: {method: {field: value}}}), written by the tuning searches.
    hyper: str = "results/smax_study_hyper.json"
    name: str = "smax_study_table"  # <out>/<name>.md, .json, .png


STUDY = StudyProtocol()
"""The protocol of ``inspo reproduce study``."""


def load_hyper(path: str | Path) -> dict[str, Any]:
    """The ``{map or dataset: {method: {field: value}}}`` of a JSON file (a missing file: none tuned yet)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def reproduce_study(out: Path, maps: Sequence[str] = STUDY.maps, qualities: Sequence[str] = STUDY.qualities,
                    seeds: Sequence[int] = STUDY.seeds, hyper: dict[str, Any] | None = None,
                    jobs: int | Cluster = 1, partial: bool = False, command: str = "",
                    protocol: StudyProtocol = STUDY, populations: bool = True) -> dict[str, Any]:
    """Train (or, ``partial``, tabulate from the run cache) the study's runs on the datasets of ``maps`` x
    ``qualities``; write ``<out>/<protocol.name>.md``, ``.json`` and ``.png``; return the record."""
    return reproduce_baselines(
        "smax", seeds, out, iters=protocol.iters, bc_steps=protocol.bc_steps,
        datasets=[f"{m}-{q}" for m in maps for q in qualities], episodes=protocol.episodes,
        eval_episodes=protocol.eval_episodes, jobs=jobs, command=command, populations=populations,
        hyper=load_hyper(protocol.hyper) if hyper is None else hyper, evaluations=protocol.evaluations,
        partial=partial, name=protocol.name)
