"""Where the runs of ``inspo reproduce`` and the trials of ``inspo tune`` execute: in this process, on a local dask
cluster of K worker processes, or on an existing dask cluster (a scheduler with its workers, e.g. on SLURM).

dask.distributed is the optional extra ``cluster`` (the extra ``tune`` includes it) and is imported only when a
run needs it. A task whose worker dies is given to another worker by the scheduler (up to its
``distributed.scheduler.allowed-failures``, 3 by default); what the task had written to shared storage stays, so a
task that resumes from its own files (a training run from its ``checkpoint.pt``) loses only the steps since.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from inspo.errors import InspoError, MissingExtra

__all__ = ["INSTALL_HINT", "Cluster", "add_cluster_flags", "cluster_from_args", "connect", "require_dask",
           "run_each"]

INSTALL_HINT = "pip install 'inspo[cluster]'"

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class Cluster:
    """Where to run: ``workers`` local processes (1: in this process), or the existing dask cluster whose scheduler
    listens at ``address`` (``tcp://HOST:PORT``) or wrote ``scheduler_file`` (``dask scheduler --scheduler-file``);
    that cluster's own workers decide how many tasks run at once."""

    workers: int = 1
    address: str | None = None
    scheduler_file: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise InspoError(f"the number of local workers must be >= 1, got {self.workers}")
        if self.address is not None and self.scheduler_file is not None:
            raise InspoError(f"give the dask scheduler's address ({self.address}) or its scheduler file "
                             f"({self.scheduler_file}), not both")
        if self.external and self.workers > 1:
            raise InspoError(f"{self.workers} local workers and the existing dask cluster at {self.where}: the "
                             f"cluster's own workers run the tasks; drop --jobs/--workers")

    @property
    def external(self) -> bool:
        """An existing cluster, not one this process starts."""
        return self.address is not None or self.scheduler_file is not None

    @property
    def parallel(self) -> bool:
        """Tasks run through dask (not one after the other in this process)."""
        return self.external or self.workers > 1

    @property
    def where(self) -> str:
        """The scheduler, for messages: its address or its scheduler file."""
        if self.address is not None:
            return self.address
        if self.scheduler_file is not None:
            return f"the scheduler of {self.scheduler_file}"
        return f"{self.workers} local processes" if self.workers > 1 else "this process"


def require_dask(what: str) -> None:
    """Raise :class:`~inspo.errors.MissingExtra`, naming ``what`` needs it, if dask.distributed is not installed."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(f"{what} needs dask.distributed ({exc.name} is not installed): {INSTALL_HINT}") from exc


def _package_version() -> str:
    """inspo's version on a worker (a task of its own, so that the worker imports nothing else)."""
    from inspo.provenance import package_version

    return package_version()


def _malloc_trim_threshold() -> str | None:
    """The ``MALLOC_TRIM_THRESHOLD_`` this worker process started with (what glibc read), None if it had none or
    the start environment cannot be read (no ``/proc``). ``os.environ`` is no witness: dask's nannies take the
    variable out of it once the worker has started."""
    try:
        with open("/proc/self/environ", "rb") as fh:
            variables = fh.read().split(b"\0")
    except OSError:
        return None
    prefix = b"MALLOC_TRIM_THRESHOLD_="
    return next((v[len(prefix):].decode() for v in variables if v.startswith(prefix)), None)


def _warn_if_workers_trim(client: Any, where: str) -> None:
    """Tell (on stderr) of the workers that started with ``MALLOC_TRIM_THRESHOLD_`` set, which makes training
    steps slower (see :func:`connect`); the runs' results are the same."""
    trimming = {addr: value for addr, value in client.run(_malloc_trim_threshold).items() if value is not None}
    if trimming:
        listed = ", ".join(f"{addr} ({value})" for addr, value in sorted(trimming.items()))
        print(f"inspo: the dask workers {listed} of {where} started with MALLOC_TRIM_THRESHOLD_ set, as dask's "
              f"nannies start them by default; under it training steps take about 1.5 times as long. Start the "
              f"workers with a dask config that sets it to null under distributed.nanny.pre-spawn-environ "
              f"(README, Experiments on a cluster)", file=sys.stderr)


@contextlib.contextmanager
def connect(cluster: Cluster, verbose: bool = False) -> Iterator[Any]:
    """A ``dask.distributed.Client`` on ``cluster`` (which must be :attr:`~Cluster.parallel`), closed on leaving:
    a local cluster of ``cluster.workers`` single-threaded processes on 127.0.0.1, started here and stopped on
    leaving, or the existing cluster, left running. An existing cluster is waited for until it has a worker, and
    its workers must run the same inspo version as this process (their runs must match the run cache's)."""
    if not cluster.parallel:
        raise InspoError("connect() needs more than one local worker or an existing cluster; "
                         "one worker runs its tasks in this process")
    require_dask("running tasks in parallel")
    import dask
    from dask.distributed import Client, LocalCluster

    log = logging.getLogger("distributed")
    level = log.level
    if not verbose:  # the nanny's notes on starting and stopping workers are noise here
        log.setLevel(logging.ERROR)
    try:
        # Non-daemonic workers, so that a task may start processes of its own (as SMAC3's own cluster has them).
        # Without dask's MALLOC_TRIM_THRESHOLD_=65536 for its workers: glibc would hand the memory of every freed
        # tensor back to the kernel and fault it in again on the next step, and a training step takes 1.8 times as
        # long (measured on OMIGA, 2s3z, a population of 5: 92 ms instead of 51 ms).
        settings = {"distributed.worker.daemon": False,
                    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        with dask.config.set(settings), contextlib.ExitStack() as stack:
            if cluster.external:
                client = stack.enter_context(_existing(cluster))
            else:
                # No memory limit and no dashboard: what the local worker processes of earlier versions had.
                local = stack.enter_context(LocalCluster(
                    n_workers=cluster.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, memory_limit=0))
                client = stack.enter_context(Client(local))
            _warn_if_workers_trim(client, cluster.where)
            yield client
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _existing(cluster: Cluster) -> Iterator[Any]:
    from dask.distributed import Client

    if cluster.scheduler_file is not None and not os.path.isfile(cluster.scheduler_file):
        # Client would wait for the file forever; a mistyped path should fail instead.
        raise InspoError(f"no dask scheduler file at {cluster.scheduler_file}; start the scheduler first, e.g. "
                         f"`dask scheduler --scheduler-file {cluster.scheduler_file}`")
    try:
        client = Client(cluster.address, scheduler_file=cluster.scheduler_file)
    except (OSError, TimeoutError) as exc:
        raise InspoError(f"no dask scheduler answered at {cluster.where}: {exc}") from exc
    with client:
        if not client.nthreads():
            print(f"inspo: waiting for a dask worker to join {cluster.where}", file=sys.stderr)
            client.wait_for_workers(1)
        ours = _package_version()
        try:
            versions = client.run(_package_version)
        except ImportError as exc:
            raise InspoError(f"the dask workers of {cluster.where} cannot import inspo ({exc}); install it on every "
                             f"worker, the same version as here ({ours})") from exc
        others = {addr: v for addr, v in versions.items() if v != ours}
        if others:
            raise InspoError(f"the dask workers {', '.join(f'{a} (inspo {v})' for a, v in others.items())} run "
                             f"another inspo version than this process ({ours}); install the same one everywhere")
        yield client


def run_each(fn: Callable[[_Item], _Result], items: Sequence[_Item], cluster: Cluster,
             ) -> Iterator[tuple[int, _Result]]:
    """``(index, fn(item))`` for every item, as each is done: in order in this process for one local worker, else
    as tasks on the ``cluster`` (``fn`` and the items are pickled; the workers must be able to import ``fn``). A
    task that raises ends the iteration with its error, as does one whose workers kept dying (dask's
    ``KilledWorker``)."""
    if not cluster.parallel:
        for k, item in enumerate(items):
            yield k, fn(item)
        return
    if not items:
        return
    from dask.distributed import KilledWorker, as_completed

    with connect(cluster) as client:
        futures = [client.submit(fn, item, pure=False) for item in items]
        index = {future.key: k for k, future in enumerate(futures)}
        for future in as_completed(futures):
            k = index[future.key]
            try:
                result = future.result()
            except KilledWorker as exc:
                raise RuntimeError(f"task {k} of {len(items)} was lost with its worker more often than the dask "
                                   f"scheduler allows (distributed.scheduler.allowed-failures): {exc}; what "
                                   f"finished is kept: run the command again to continue") from exc
            yield k, result


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """``--dask-scheduler`` and ``--dask-scheduler-file``: run on an existing dask cluster."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dask-scheduler", metavar="tcp://HOST:PORT", default=None,
                       help="run on the existing dask cluster with this scheduler (its workers must reach the "
                            "dataset and --out paths, e.g. on shared storage)")
    group.add_argument("--dask-scheduler-file", metavar="PATH", default=None,
                       help="like --dask-scheduler, with the scheduler file that `dask scheduler --scheduler-file "
                            "PATH` wrote")


def cluster_from_args(args: argparse.Namespace, workers: int) -> Cluster:
    """The :class:`Cluster` of the flags of :func:`add_cluster_flags`, with ``workers`` local processes; checked
    before anything is done: :class:`~inspo.errors.MissingExtra` if it needs dask.distributed and that is missing."""
    cluster = Cluster(workers=workers, address=args.dask_scheduler, scheduler_file=args.dask_scheduler_file)
    if cluster.parallel:
        require_dask("running on more than one worker or on a dask cluster")
    return cluster
