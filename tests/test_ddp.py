"""Data-parallel training (``TrainConfig.ddp``): two gloo processes on CPU stay identical, follow the single-process
run with the same global batch, and only rank 0 writes files."""
from __future__ import annotations

import math
import re
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import inspo
from inspo import checkpoint as ckpt_io
from inspo.algos import LEARNERS
from inspo.algos.inspo import InSPO
from inspo.cli import build_parser
from inspo.config import TrainConfig, config_from_args
from inspo.data import generate_matrix, save_dataset

WORLD = 2
# Every learner, and both InSPO weightings (resampled rows, rho in the weights): a few dozen iterations each.
RUNS: dict[str, dict[str, Any]] = {
    "inspo": {},
    "inspo-weighted": {"weighting": "weighted", "local_critic_steps": 2},
    "icq": {"algo": "icq"},
    "omiga": {"algo": "omiga"},
    "cfcql": {"algo": "cfcql"},
}
SMALL = {"bc_steps": 10, "iters": 24, "batch_size": 64, "hidden": 16, "eval_every": 12, "dtype": "float64",
         "gamma": 0.9, "alpha": 1.0, "beta": 0.5, "seed": 11, "threads": 1}


def _config(dataset: str, name: str, out: Path, **change: Any) -> TrainConfig:
    return TrainConfig(dataset=dataset, out=str(out / name), **{**SMALL, **RUNS[name], **change})


def _capture_learners() -> list[Any]:
    """Make every learner that ``train`` builds land in the returned list (its parameters are not returned)."""
    built: list[Any] = []

    def spy(cls: type) -> Any:
        def make(*args: Any, **kwargs: Any) -> Any:
            built.append(cls(*args, **kwargs))
            return built[-1]
        return make

    LEARNERS.update({algo: spy(cls) for algo, cls in LEARNERS.items()})
    return built


def _worker(rank: int, port: int, dataset: str, out: str, results: str) -> None:
    """One rank: train every run of RUNS with ``ddp=True``, save what it ended with, try an indivisible batch."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    writes: list[str] = []
    real_write = ckpt_io.atomic_write
    ckpt_io.atomic_write = lambda path, write: (writes.append(str(path)), real_write(path, write))[1]
    built = _capture_learners()
    report: dict[str, Any] = {}
    for name in RUNS:
        result = inspo.train(_config(dataset, name, Path(out), ddp=True))
        report[name] = {"learner": built[-1].state_dict(), "curve": result.curve}
    try:
        inspo.train(_config(dataset, "inspo", Path(out), ddp=True, batch_size=63))
    except ValueError as exc:
        report["indivisible"] = str(exc)
    report["writes"] = list(writes)
    # A loss that is non-finite on rank 1 only: every rank must raise, none may wait for the others forever.
    real_losses = InSPO.critic_losses

    def nan_on_rank_1(self: InSPO, b: Any) -> Any:
        qbar, q_loss, v_loss = real_losses(self, b)
        return qbar, q_loss * math.nan if rank == 1 else q_loss, v_loss

    InSPO.critic_losses = nan_on_rank_1
    try:
        inspo.train(_config(dataset, "inspo", Path(out) / "nan", ddp=True))
    except FloatingPointError as exc:
        report["non_finite"] = str(exc)
    InSPO.critic_losses = real_losses
    torch.save(report, Path(results) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(args: tuple, timeout: float) -> None:
    """Run ``_worker`` on WORLD ranks; fail (and kill them) rather than hang past ``timeout`` seconds."""
    ctx = mp.start_processes(_worker, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"data-parallel workers did not finish within {timeout} s")


def _tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a nested state dict (networks and optimiser states), by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else ()
    return {k: v for key, value in items for k, v in _tensors(value, f"{prefix}/{key}").items()}


@pytest.fixture(scope="module")
def mne_two_rounds(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Imbalanced M-NE data played for 2 rounds, so that the TD targets bootstrap."""
    ds = generate_matrix("mne", "mne-imbalanced", 200, seed=3, episode_limit=2)
    return str(save_dataset(ds, tmp_path_factory.mktemp("data") / "mne2"))


def test_two_gloo_ranks_match_single_process(mne_two_rounds: str, tmp_path: Path) -> None:
    ddp_out, single_out, results = tmp_path / "ddp", tmp_path / "single", tmp_path / "results"
    results.mkdir()
    _spawn((_free_port(), mne_two_rounds, str(ddp_out), str(results)), timeout=120)
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

    saved = dict(LEARNERS)
    try:
        built = _capture_learners()
        single = {name: (inspo.train(_config(mne_two_rounds, name, single_out)), built[-1].state_dict())
                  for name in RUNS}
    finally:
        LEARNERS.update(saved)

    for name, (result, learner) in single.items():
        states = [_tensors(rank[name]["learner"]) for rank in ranks]
        reference = _tensors(learner)
        assert states[0].keys() == states[1].keys() == reference.keys()
        for key in reference:
            # (a) the ranks hold the same parameters and optimiser states, bit for bit;
            assert torch.equal(states[0][key], states[1][key]), f"{name}: ranks differ in {key}"
            # (b) and those of the single-process run with the same global batch, to float64 rounding.
            torch.testing.assert_close(states[0][key], reference[key], rtol=1e-9, atol=1e-12, msg=f"{name} {key}")
        assert ranks[0][name]["curve"] == ranks[1][name]["curve"]  # rank 0's evaluations, on every rank
        for ddp_rec, ref_rec in zip(ranks[0][name]["curve"], result.curve, strict=True):
            assert ddp_rec.keys() == ref_rec.keys()
            for key in ref_rec:
                assert ddp_rec[key] == pytest.approx(ref_rec[key], rel=1e-9, abs=1e-12), f"{name} {key}"

    # (c) only rank 0 wrote files: each run's metrics and checkpoints.
    assert ranks[1]["writes"] == []
    assert {Path(p).relative_to(ddp_out).as_posix() for p in ranks[0]["writes"]} == {
        f"{name}/{file}" for name in RUNS for file in ("metrics.json", "final.pt", "best.pt", "checkpoint.pt")}
    for rank in ranks:
        assert "batch_size=63" in rank["indivisible"] and "world size 2" in rank["indivisible"]
    # (d) a non-finite loss on one rank stops every rank, with the loss named.
    for r, rank in enumerate(ranks):
        value = "nan" if r == 1 else r"\d+\.\d+"
        assert re.match(rf"non-finite q_loss on some rank \(rank {r}: {value}\) at iteration 1;", rank["non_finite"])


def test_ddp_flag_and_missing_process_group(mne_two_rounds: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["train", "--ddp", "--dataset", mne_two_rounds])
    assert config_from_args(args).ddp is True
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        inspo.train(TrainConfig(dataset=mne_two_rounds, ddp=True, **{**SMALL, "iters": 1, "bc_steps": 1}))
