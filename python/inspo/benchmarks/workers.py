"""Training steps where they run: time per InSPO update in this process, in a worker of the local dask cluster that
``inspo reproduce --jobs`` and ``inspo tune --workers`` start (:func:`inspo.cluster.connect`), and in a worker that
dask starts with its own defaults. dask's nannies give their workers ``MALLOC_TRIM_THRESHOLD_=65536``, under which
glibc returns the memory of every freed tensor to the kernel and the next update faults it in again; inspo's local
cluster starts its workers without it.

Each place builds the same learner once (a case of :mod:`inspo.benchmarks.cases`; by default ``smax``: SMAX-sized
synthetic data, 5 agents, hidden 256, batch 256) and updates it for ``--repeat-seconds`` per repeat, batches drawn
as the trainer draws them; the places take turns repeat by repeat, so that the load of a shared machine hits them
alike, and each number is the median over repeats. Beside the time: the process's minor page faults per update and
the kernel's share of its CPU time during the updates.

    inspo bench workers                          # smax, 5 repeats
    inspo bench workers --cases bridge smax --repeats 9

Writes ``workers_cpu.json`` and ``.md`` (atomically) to ``--out`` (default as for ``inspo bench ops``). Needs the
extra ``cluster`` (dask.distributed). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inspo.benchmarks.cases import case_name, case_setup
from inspo.benchmarks.ops import RESULTS, close_report, new_report, publish
from inspo.benchmarks.population import Member
from inspo.cluster import Cluster, connect, require_dask

TRIM = "MALLOC_TRIM_THRESHOLD_"
DASK_DEFAULT_TRIM = 65536  # what distributed.nanny.pre-spawn-environ sets unless told otherwise
PLACES = ("this process", "inspo's local dask worker", "dask's default worker")

_LEARNERS: dict[tuple[str, int], Member] = {}  # per process: a place builds its learner at its first repeat


def time_updates(case: str, rows: int, warmup: int, seconds: float) -> dict[str, float]:
    """Update this process's learner of ``case`` for about ``seconds`` (built, and updated ``warmup`` times, on the
    first call): seconds and minor page faults per update, and the system share of the process's CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if (case, rows) not in _LEARNERS:
            device = torch.device("cpu")
            member = Member(0, *case_setup(case, rows, device), device)
            for _ in range(warmup):
                member.learner.update(member.batch())
            _LEARNERS[case, rows] = member
        member = _LEARNERS[case, rows]
        before, start, count = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
        while count == 0 or time.perf_counter() - start < seconds:
            member.learner.update(member.batch())
            count += 1
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        torch.set_num_threads(threads)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"s_per_update": elapsed / count, "faults_per_update": (after.ru_minflt - before.ru_minflt) / count,
            "system_share": system / max(user + system, 1e-9)}


def _on(client: Any) -> Callable[..., dict[str, float]]:
    """:func:`time_updates` on one worker of ``client``'s cluster (always the same one, which keeps its learner)."""
    worker = sorted(client.scheduler_info()["workers"])[0]
    return lambda *args: client.submit(time_updates, *args, workers=[worker], pure=False).result()


def _places(stack: contextlib.ExitStack) -> dict[str, Callable[..., dict[str, float]]]:
    import dask
    from dask.distributed import Client, LocalCluster

    ours = stack.enter_context(connect(Cluster(workers=2)))
    # A nanny writes its workers' variables into this process's environment too: put ours back, so that nothing
    # started from here later inherits dask's.
    previous = os.environ.get(TRIM)
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{TRIM}": DASK_DEFAULT_TRIM}):
        default = stack.enter_context(LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                   host="127.0.0.1", dashboard_address=None, memory_limit=0))
    if previous is None:
        os.environ.pop(TRIM, None)
    else:
        os.environ[TRIM] = previous
    return dict(zip(PLACES, (time_updates, _on(ours), _on(stack.enter_context(Client(default))))))


def measure(cases: list[str], rows: int, warmup: int, repeats: int, seconds: float) -> list[dict[str, Any]]:
    """Per case and place: the median (and min, max) seconds per update over ``repeats``, faults per update and
    system share (medians), and the ratio of the median to this process's."""
    require_dask("inspo bench workers")
    results = []
    with contextlib.ExitStack() as stack:
        places = _places(stack)
        for case in cases:
            samples: dict[str, list[dict[str, float]]] = {place: [] for place in places}
            for _ in range(repeats):
                for place, run in places.items():
                    samples[place].append(run(case, rows, warmup, seconds))
            row: dict[str, Any] = {"case": case, "places": {}}
            for place, got in samples.items():
                times = [g["s_per_update"] for g in got]
                row["places"][place] = {
                    "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                    "faults_per_update": statistics.median(g["faults_per_update"] for g in got),
                    "system_share": statistics.median(g["system_share"] for g in got)}
            here = row["places"][PLACES[0]]["median_s"]
            for timing in row["places"].values():
                timing["x_this_process"] = timing["median_s"] / here
            results.append(row)
    return results


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown page."""
    m = report["machine"]
    lines = ["# InSPO updates in this process and in dask workers (cpu)", "", f"`{report['command']}`", "",
             f"{m['cpu']}, torch {m['torch']}, {report['started']} ({report['wall_s']:.0f} s); load average at start "
             f"{m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}.", "",
             f"One update = `InSPO.update` on a batch drawn as the trainer draws it, one torch thread; median over "
             f"{report['args']['repeats']} repeats of {report['args']['repeat_seconds']} s, the places taking "
             f"turns. `x this process`: median time / this process's. Faults: minor page faults of the process per "
             f"update; system share: the kernel's part of the process's CPU time during the updates. dask's default "
             f"worker has `{TRIM}={DASK_DEFAULT_TRIM}` from its nanny; inspo's local workers start without it.", "",
             "| case | where | ms per update | x this process | faults per update | system share |",
             "|---|---|---:|---:|---:|---:|"]
    for row in report["results"]:
        for place, t in row["places"].items():
            lines.append(f"| {row['case']} | {place} | {1e3 * t['median_s']:.2f} ({1e3 * t['min_s']:.2f}-"
                         f"{1e3 * t['max_s']:.2f}) | {t['x_this_process']:.2f}x | {t['faults_per_update']:.0f} | "
                         f"{100 * t['system_share']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "inspo bench workers") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", type=case_name, default=["smax"],
                   help="bridge, smax or n<N> (inspo bench train's cases)")
    p.add_argument("--rows", type=int, default=20000, help="transitions of the synthetic datasets")
    p.add_argument("--warmup", type=int, default=5, help="updates of each place's learner before the first repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeat-seconds", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    started = time.time()
    report = new_report(prog, argv, args, torch.device("cpu"))
    report["results"] = measure(args.cases, args.rows, args.warmup, args.repeats, args.repeat_seconds)
    close_report(report, started)
    publish(args.out, "workers_cpu", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
