"""``inspo reproduce`` and ``inspo tune`` on an existing dask cluster: a scheduler and two workers started here as
separate processes on 127.0.0.1 (``dask scheduler``, ``dask worker``); a reproduce suite whose worker is killed
mid-run still makes the table of a local run; a run that stopped part-way resumes from its checkpoint; the flags'
errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _nested import approx_nested
from inspo import checkpoint
from inspo.cli import main
from inspo.cluster import Cluster, connect
from inspo.data import generate_matrix, save_dataset
from inspo.reproduce import runner

DASK_MISSING = "dask.distributed is the optional extra 'cluster': pip install 'inspo[cluster]'"
# A baselines table of one dataset (five runs of a few seconds each) that a lost worker costs a run of.
SUITE = ["reproduce", "baselines", "--env", "xor", "--datasets", "xor-ab-ba", "--seeds", "1", "--iters", "150",
         "--bc-steps", "20", "--episodes", "50"]
# Waiting for processes to start or for a task to begin: a bound that only a broken setup reaches.
PATIENCE_S = 120


@dataclass
class DaskCluster:
    """The processes of a dask cluster started by the test, and a client of it for the test's own questions."""

    scheduler_file: Path
    address: str
    client: Any
    workers: dict[str, subprocess.Popen]  # by worker name
    logs: Path

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.logs.glob("*.log")))


def _start(args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    # A session of its own, so that killing it kills the worker the nanny started too.
    with log.open("w") as fh:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    pytest.importorskip("distributed", reason=DASK_MISSING)
    from dask.distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    procs: dict[str, subprocess.Popen] = {}
    client = None
    try:
        procs["scheduler"] = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                     "--scheduler-file", str(scheduler_file)], folder / "scheduler.log", folder)
        deadline = time.monotonic() + PATIENCE_S
        while not scheduler_file.exists():
            if procs["scheduler"].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dask scheduler did not start: {(folder / 'scheduler.log').read_text()}")
            time.sleep(0.1)
        for name in ("w0", "w1"):
            # The workers start in folders of their own: they must not depend on this process's folder.
            (folder / name).mkdir()
            procs[name] = _start(["worker", "--scheduler-file", str(scheduler_file), "--name", name, "--nthreads",
                                  "1", "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                 folder / f"{name}.log", folder / name)
        client = Client(scheduler_file=str(scheduler_file), set_as_default=False)
        client.wait_for_workers(2, timeout=PATIENCE_S)
        cluster = DaskCluster(scheduler_file, client.scheduler.address, client,
                              {n: p for n, p in procs.items() if n != "scheduler"}, folder)
        yield cluster
    finally:
        if client is not None:
            client.close()
        for proc in procs.values():
            _kill(proc)


@pytest.fixture(scope="module")
def xor_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "xor-aa-ab-ba"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0), path)
    return path


def _table(out: Path) -> dict[str, Any]:
    """The record of the baselines table in ``out`` (a folder name unlike any other text of the table) without what
    differs between two makings of it: its date, its wall and CPU times, the output folder and the number of CPUs."""
    record = json.loads((out / "baselines_xor.json").read_text().replace(out.name, "<out>"))
    for key in ("date", "wall_time_s", "cpu_count", "compute_cpu_hours"):
        record.pop(key)
    for row in record["rows"]:
        row.pop("wall_time_s")
        row.pop("cpu_time_s")
    return record


def _tune_on(dask_cluster: DaskCluster, xor_data: Path, out: Path, capsys: pytest.CaptureFixture[str],
             *flags: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A 4-trial ``inspo tune`` through ``dask_cluster`` with ``flags``: what it printed, and the tasks that ran."""
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    from distributed import get_task_stream

    with get_task_stream(dask_cluster.client) as stream:
        assert main(["tune", "--dataset", str(xor_data), "--trials", "4", "--params", "lr_policy", "--iters", "40",
                     "--bc-steps", "20", "--batch-size", "64", "--eval-every", "20", "--eval-episode-limit", "1",
                     *flags, "--dask-scheduler", dask_cluster.address, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["trials"] == 4 and printed["failed"] == 0
    return printed, [task for task in stream.data if task["status"] == "OK"]


def test_tune_on_an_existing_cluster(dask_cluster: DaskCluster, xor_data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "search"
    _, tasks = _tune_on(dask_cluster, xor_data, out, capsys)
    summary = json.loads((out / "tune.json").read_text())
    assert summary["workers"] == f"the dask workers of {dask_cluster.address}"
    assert all(t["status"] == "success" for t in summary["trials"])
    assert summary["incumbent"]["return"] == max(t["return"] for t in summary["trials"])
    # The trials ran on the cluster's workers (SMAC3's dask runner submits one task per trial).
    workers = {addr: info["name"] for addr, info in dask_cluster.client.scheduler_info()["workers"].items()}
    assert len(tasks) >= 4 and {workers.get(task["worker"]) for task in tasks} <= {"w0", "w1"}


def test_tune_populations_on_an_existing_cluster(dask_cluster: DaskCluster, xor_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _, tasks = _tune_on(dask_cluster, xor_data, tmp_path / "search", capsys, "--population", "2")
    # One round of 2 x 2 workers trials: two populations of two trials, one task each.
    assert len([task for task in tasks if str(task["key"]).startswith("train_trials")]) == 2


def test_reproduce_survives_a_lost_worker(dask_cluster: DaskCluster, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative --out: the workers, started in other folders, must be given absolute paths.
    monkeypatch.chdir(tmp_path)
    assert main([*SUITE, "--out", "table-local"]) == 0
    client = dask_cluster.client
    address = next(addr for addr, info in client.scheduler_info()["workers"].items() if info["name"] == "w0")
    lost: list[str] = []
    done = threading.Event()

    def kill_w0_once_it_trains() -> None:
        while not done.is_set():
            running = client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing],
                                 workers=[address])[address]
            if any(key.startswith("train_group") for key in running):
                _kill(dask_cluster.workers["w0"])
                lost.extend(running)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_w0_once_it_trains)
    killer.start()
    try:
        code = main([*SUITE, "--dask-scheduler-file", str(dask_cluster.scheduler_file), "--out", "table-dask"])
    finally:
        done.set()
        killer.join()
    assert code == 0, dask_cluster.log_text()
    assert lost, f"worker w0 never ran a training run: {dask_cluster.log_text()}"
    assert [info["name"] for info in client.scheduler_info()["workers"].values()] == ["w1"]
    assert _table(tmp_path / "table-dask") == _table(tmp_path / "table-local")
    capsys.readouterr()

    # The run cache is the record: the same command again trains nothing.
    runs = sorted((tmp_path / "table-dask").glob("cache/runs/**/metrics.json"))
    assert len(runs) == 5
    stamps = [p.stat().st_mtime_ns for p in runs]
    assert main([*SUITE, "--dask-scheduler-file", str(dask_cluster.scheduler_file), "--out", "table-dask"]) == 0
    assert "5 of 5 runs read from the run cache" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in runs] == stamps


def _killed_after(saves: int, monkeypatch: pytest.MonkeyPatch, work: Callable[[], Any]) -> None:
    """Run ``work`` until the ``saves``-th write of any checkpoint.pt, then stop as a killed worker would."""
    real, done = checkpoint.save, []

    def save_then_die(obj: Any, path: Any) -> None:
        real(obj, path)
        if Path(path).name == "checkpoint.pt":
            done.append(path)
            if len(done) == saves:
                raise SystemExit("killed")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save", save_then_die)
        with pytest.raises(SystemExit):
            work()


def _interrupted_run(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, after_saves: int) -> None:
    """Train ``config`` until its ``after_saves``-th write of checkpoint.pt, then stop as a killed worker would."""
    _killed_after(after_saves, monkeypatch, lambda: runner.train_one(config))
    assert (Path(config["out"]) / "checkpoint.pt").is_file() and not (Path(config["out"]) / "metrics.json").exists()


def test_an_interrupted_run_resumes_from_its_checkpoint(xor_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"dataset": str(xor_data), "algo": "inspo", "iters": 40, "bc_steps": 10, "batch_size": 64,
            "eval_every": 20, "eval_episode_limit": 1, "checkpoint_every": 7}
    expected = runner.train_one({**base, "out": str(tmp_path / "uninterrupted")})
    calls: list[dict[str, Any]] = []
    real_train = runner.train
    monkeypatch.setattr(runner, "train", lambda cfg, **kw: calls.append(kw) or real_train(cfg, **kw))

    config = {**base, "out": str(tmp_path / "run")}
    _interrupted_run(config, monkeypatch, after_saves=3)
    assert runner.cached(config) is None
    got = runner.train_one(config)
    assert calls[-1] == {"resume": True, "overwrite": False, "clones": None}
    same = ("final", "best", "behaviour", "optimum", "curve", "final_win_rate", "win_curve", "cached")
    assert {k: got[k] for k in same} == {k: expected[k] for k in same}

    # A checkpoint of other settings is replaced, not resumed: another budget, or one whose inspo version is unknown.
    other = {**base, "out": str(tmp_path / "other-budget")}
    _interrupted_run(other, monkeypatch, after_saves=1)
    runner.train_one({**other, "iters": 30})
    assert calls[-1] == {"resume": False, "overwrite": True, "clones": None}
    assert json.loads((Path(other["out"]) / "metrics.json").read_text())["config"]["iters"] == 30
    unknown = {**base, "out": str(tmp_path / "unknown-version")}
    _interrupted_run(unknown, monkeypatch, after_saves=1)
    state = Path(unknown["out"]) / "checkpoint.pt"
    checkpoint.save({k: v for k, v in checkpoint.load(state).items() if k != "version"}, state)
    runner.train_one(unknown)
    assert calls[-1] == {"resume": False, "overwrite": True, "clones": None}


@pytest.mark.parametrize("after_saves, together", [(4, True), (3, False)])
def test_an_interrupted_population_resumes_as_its_runs_would(xor_data: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, after_saves: int,
                                                             together: bool) -> None:
    """Two runs trained as one population, stopped after both members saved step 7 (4 saves: step 14 of both, a
    common step) or between the two writes of step 14 (3 saves): resumed together in the first case, one by one in
    the second, and in both ending as the runs trained alone."""
    base = {"dataset": str(xor_data), "algo": "inspo", "iters": 40, "bc_steps": 10, "batch_size": 64,
            "eval_every": 20, "eval_episode_limit": 1, "checkpoint_every": 7}
    expected = [runner.train_one({**base, "seed": s, "out": str(tmp_path / f"alone-{s}")}) for s in (0, 1)]
    configs = [{**base, "seed": s, "out": str(tmp_path / f"seed-{s}")} for s in (0, 1)]
    _killed_after(after_saves, monkeypatch, lambda: runner.train_group(configs))
    populations: list[dict[str, Any]] = []
    singles: list[dict[str, Any]] = []
    real_members, real_train = runner.train_members, runner.train
    monkeypatch.setattr(runner, "train_members", lambda cfgs, **kw: populations.append(kw) or real_members(cfgs, **kw))
    monkeypatch.setattr(runner, "train", lambda cfg, **kw: singles.append(kw) or real_train(cfg, **kw))
    got = runner.train_group(configs)
    resumed = {"resume": True, "overwrite": False, "clones": None}
    assert (populations, singles) == (([resumed], []) if together else ([], [resumed, resumed]))
    same = ("final", "best", "behaviour", "optimum", "curve", "final_win_rate", "win_curve", "cached")
    assert [{k: g[k] for k in same} for g in got] == approx_nested([{k: e[k] for k in same} for e in expected])
    assert not list(tmp_path.glob("seed-*/checkpoint.previous.pt"))  # the folders end as the single runs'


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads a process's environment from /proc")
def test_local_workers_start_without_dasks_malloc_trim_threshold(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # dask's nannies give their workers MALLOC_TRIM_THRESHOLD_=65536, under which a training step is 1.8x slower.
    pytest.importorskip("distributed", reason=DASK_MISSING)
    for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS"):  # what dask's nannies would take from here
        monkeypatch.delenv(name, raising=False)
    with connect(Cluster(workers=2)) as client:
        # The environment each worker process started with, which is what glibc read.
        started = client.run(lambda: open("/proc/self/environ", "rb").read().split(b"\0"))
    assert len(started) == 2
    for variables in started.values():
        assert b"OMP_NUM_THREADS=1" in variables  # the rest of dask's settings stay
        assert not [v for v in variables if v.startswith(b"MALLOC_TRIM_THRESHOLD_=")]
    assert "MALLOC_TRIM_THRESHOLD_" not in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads a process's environment from /proc")
def test_existing_workers_with_dasks_malloc_trim_threshold_are_named(dask_cluster: DaskCluster,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # `dask worker` starts its workers through nannies, with dask's default MALLOC_TRIM_THRESHOLD_=65536.
    with connect(Cluster(scheduler_file=str(dask_cluster.scheduler_file))):
        pass
    err = capsys.readouterr().err
    for address in dask_cluster.client.scheduler_info()["workers"]:
        assert f"{address} (65536)" in err
    assert "started with MALLOC_TRIM_THRESHOLD_ set" in err


@pytest.mark.parametrize("flags, message", [
    (["--jobs", "2", "--dask-scheduler", "tcp://127.0.0.1:8786"],
     "2 local workers and the existing dask cluster at tcp://127.0.0.1:8786"),
    (["--dask-scheduler-file", "no-such-scheduler.json"], "no dask scheduler file at no-such-scheduler.json"),
])
def test_cluster_flag_errors(flags: list[str], message: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed", reason=DASK_MISSING)
    assert main([*SUITE, *flags, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_both_scheduler_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*SUITE, "--dask-scheduler", "tcp://127.0.0.1:8786", "--dask-scheduler-file", "s.json"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_parallel_runs_without_dask_name_the_extra(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    assert main([*SUITE, "--jobs", "2", "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'inspo[cluster]'" in capsys.readouterr().err
