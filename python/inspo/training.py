"""The training API: ``inspo.train(config)`` (and ``inspo.evaluate(checkpoint, ...)``, from
:mod:`inspo.evaluation`)."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from inspo import checkpoint as ckpt_io
from inspo import jsonio, run_folder
from inspo.algos import LEARNERS
from inspo.algos.batch import Batch, behaviour_log_probs
from inspo.algos.bc import BehaviourCloning
from inspo.algos.graph import GraphedIteration
from inspo.algos.learner import Learner
from inspo.algos.networks import AgentPolicies
from inspo.algos.parallel import Shard
from inspo.config import TrainConfig
from inspo.data import load_dataset
from inspo.data.format import check_recorded_env
from inspo.envs import MultiAgentEnv, RecordedEnv, optimum
from inspo.evaluation import evaluate, policy_outcome, policy_return, run_environment
from inspo.loggers import RunLog
from inspo.policy import Policy, policy_checkpoint, policy_from_checkpoint
from inspo.progress import ProgressBar
from inspo.provenance import package_info

__all__ = ["TrainResult", "train", "evaluate", "policy_outcome", "policy_return"]


@dataclass
class TrainResult:
    """What a run produced; ``curve`` holds one record per evaluation (with its ``episode_returns``), ``policy``
    the trained policy (whether or not the run wrote files). A run with ``eval="none"`` has no returns: its curve
    holds the losses at the evaluation points, and ``final_return``, ``best_return`` and ``optimum`` are None."""

    final_return: float | None
    best_return: float | None
    behaviour_return: float | None
    optimum: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    metrics_path: str | None = None
    wall_time: float = 0.0
    updates_per_second: float = 0.0
    final_win_rate: float | None = None  # environments with a win condition (SMAX); None elsewhere
    policy: Policy | None = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        """Every field but ``policy``, for ``metrics.json``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "policy"}


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped a run after its current step; the message says where it can resume from."""


class _StopRequests:
    """SIGINT/SIGTERM (main thread only): until ``deferred`` is set they raise :class:`TrainingInterrupted` at once
    (before the training loop there is no state worth saving, and loading a dataset can take long); then they set a
    flag that the loop checks between steps, so that it can save the state of the step it finished."""

    def __init__(self, before: str) -> None:
        self.signal: int | None = None
        self.deferred = False
        self._before = before  # what an immediate stop leaves behind, for its message
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.deferred:
            raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} before training started; "
                                      f"{self._before}")
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _to_device(ds, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    # torch.tensor copies: the arrays are read-only memory maps.
    f = lambda x, dt=dtype: torch.tensor(np.asarray(x), device=device, dtype=dt)  # noqa: E731
    return {
        "obs": f(ds.obs), "state": f(ds.state), "avail": f(ds.avail, torch.bool),
        "actions": f(ds.actions, torch.int64), "reward": f(ds.reward), "terminated": f(ds.terminated),
        "next_state": f(ds.next_state), "next_obs": f(ds.next_obs), "next_avail": f(ds.next_avail, torch.bool),
        **{name: torch.tensor(x, device=device) for name, x in _next_actions(ds).items()},
    }


def _next_actions(ds) -> dict[str, np.ndarray]:
    """The data's own next joint action of every row (in-sample targets), and whether the episode goes on in the
    data (``has_next``: not terminated, not truncated); rows without one repeat their own action."""
    actions = np.asarray(ds.actions)
    has_next = ~(np.asarray(ds.terminated) | np.asarray(ds.truncated))
    has_next[-1] = False
    has_next[:-1] &= ~np.asarray(ds.episode_start)[1:]
    following = np.concatenate([actions[1:], actions[-1:]])
    return {"next_actions": np.where(has_next[:, None], following, actions), "has_next": has_next}


def _policy_checkpoint(policy: AgentPolicies, cfg: TrainConfig, env: MultiAgentEnv | RecordedEnv,
                       iteration: int) -> dict[str, Any]:
    return policy_checkpoint(policy, env, hidden=cfg.hidden, config=cfg.to_dict(), iteration=iteration)


def train(config: TrainConfig, progress: bool = False, resume: bool = False,
          overwrite: bool = False) -> TrainResult:
    """Train ``config.algo`` on ``config.dataset``; write metrics and checkpoints to ``config.out`` if set.

    A run with ``out`` saves its full state to ``out/checkpoint.pt`` every ``config.checkpoint_every`` steps and
    when SIGINT/SIGTERM stops it (then :class:`TrainingInterrupted` is raised); ``resume=True`` continues from
    that file and ends with exactly the parameters the uninterrupted run would have (on CPU). Resuming refuses a
    checkpoint made with another config (``out`` aside: the folder may be spelled differently or have moved) or on
    another dataset (its manifest SHA-256 is recorded). SIGINT/SIGTERM before the first step raise
    :class:`TrainingInterrupted` at once, and no file is written.

    The run holds ``out`` for itself (see :mod:`inspo.run_folder`): a second run on the same folder fails at once,
    and a folder that already holds a run is refused (``FileExistsError``) unless ``resume`` continues it or
    ``overwrite`` deletes it first. A zero-iteration run (``config.iters == 0``) is behaviour cloning alone: the
    cloned policy is evaluated and saved.

    With ``config.eval == "none"`` the dataset's environment is never built (it need not be known or installed
    here): the training is the same, the curve holds the losses at the evaluation points, ``final.pt`` records the
    environment as the dataset describes it, and no ``best.pt`` is written (there are no returns to rank by).

    With ``config.ddp`` every rank of the ``torch.distributed`` process group calls this with the same config (see
    :class:`~inspo.config.TrainConfig`); only rank 0 evaluates and writes files, and every rank returns its result.
    """
    config.validate()
    if resume and overwrite:
        raise ValueError("resume=True continues the run in config.out and overwrite=True deletes it; pass one")
    if config.out is None:
        before = "nothing was saved (no --out)"
    elif resume:
        before = f"{config.out} is unchanged; resume with: inspo train --resume {config.out}"
    else:
        before = f"no run was written to {config.out}"
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        with (_StopRequests(before) as stop, _data_parallel(config) as shard,
              _claim_run_folder(config, shard, resume, overwrite), contextlib.ExitStack() as closing):
            return _train(config, progress, resume, shard, stop, closing)
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _claim_run_folder(cfg: TrainConfig, shard: Shard, resume: bool, overwrite: bool) -> Iterator[None]:
    """Rank 0 (the rank that writes files) holds ``cfg.out`` for the run (:func:`inspo.run_folder.claim`); when it
    cannot, every rank raises."""
    with contextlib.ExitStack() as stack:
        refused: Exception | None = None
        if cfg.out is not None and shard.rank == 0:
            try:
                stack.enter_context(run_folder.claim(cfg.out, resume=resume, overwrite=overwrite))
            except (OSError, RuntimeError) as exc:  # busy, holds a run, or not a folder we can write
                refused = exc
        if shard.any(refused is not None):  # collective: no rank may go on to wait for rank 0 in the loop
            raise refused or RuntimeError(f"rank 0 could not claim the run folder {cfg.out}; see its error")
        yield


@contextlib.contextmanager
def _data_parallel(cfg: TrainConfig) -> Iterator[Shard]:
    """This process's :class:`Shard`: a single process unless ``cfg.ddp``; then its rank in the default process
    group, which is initialised from torchrun's environment (and destroyed afterwards) if nobody did it before."""
    device = torch.device(cfg.device)
    if not cfg.ddp:
        yield Shard(device=device)
        return
    created = not dist.is_initialized()
    if created:
        if "RANK" not in os.environ:
            raise RuntimeError("config.ddp=True needs a torch.distributed process group: launch with "
                               "`torchrun --nproc-per-node K -m inspo.cli train --ddp ...`, or call "
                               "torch.distributed.init_process_group() before inspo.train")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if device.type == "cuda" and device.index is None:
            # One GPU per process: torchrun's local rank picks it.
            local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
            device = torch.device("cuda", local % torch.cuda.device_count())
        if device.type == "cuda":
            torch.cuda.set_device(device)
        shard = Shard.of_process_group(device)
        if cfg.batch_size % shard.world:
            raise ValueError(f"config.batch_size={cfg.batch_size} is not divisible by the world size {shard.world}: "
                             f"each rank trains on an equal share of the global batch")
        yield shard
    finally:
        if created:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, progress: bool, resume: bool, shard: Shard, stop: _StopRequests,
           closing: contextlib.ExitStack) -> TrainResult:
    device = shard.device
    lead = shard.rank == 0  # the rank that evaluates, reports and writes files
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    evaluating = cfg.eval != "none"
    ds = load_dataset(cfg.dataset, recorded_env=False)
    dataset_sha256 = ds.manifest["manifest_sha256"]
    env_name = ds.manifest["env"]["id"]
    eval_env = run_environment(cfg, ds.manifest)  # with eval "none", its description only
    if evaluating:
        check_recorded_env(ds.manifest)
        ds.validate(eval_env)
    info = eval_env.info
    data = _to_device(ds, device, dtype)
    n_rows = data["obs"].shape[0]
    out = Path(cfg.out) if cfg.out else None
    state_path = out / "checkpoint.pt" if out else None

    bc = BehaviourCloning(cfg, info.n_agents, info.obs_dim, info.n_actions, device, shard)
    bc.policy.to(dtype)
    shard.broadcast_(bc.policy)
    learner: Learner | None = None  # LEARNERS[cfg.algo], built after behaviour cloning
    # Everything below, with the networks, optimisers and RNG states, is what a resumed run needs.
    run = {"step": 0, "curve": [], "best_return": -math.inf, "update_time": 0.0, "wall_time": 0.0,
           "bc_nll": float("nan")}
    saved = None
    if resume:
        if state_path is None or not state_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")
        saved = ckpt_io.load(state_path, map_location=device)
        # Read, so that flat (older) keys compare too; ``out`` is where the checkpoint was found, however spelled.
        if replace(TrainConfig.from_dict(saved["config"]), out=cfg.out) != cfg:
            raise ValueError(f"{state_path} was written by a run with another config; resume with the same one")
        _check_same_dataset(saved.get("dataset_sha256"), dataset_sha256, state_path, cfg.dataset)
        run = saved["run"]
        bc.load_state_dict(saved["bc"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])

    def start_learner() -> Learner:
        logmu_all = behaviour_log_probs(bc.policy, data["obs"], data["avail"])
        data["logmu_all"] = logmu_all
        data["logp_mu"] = logmu_all.gather(-1, data["actions"][..., None]).squeeze(-1).t().contiguous()  # [N, T]
        new = LEARNERS[cfg.algo](cfg, bc.policy, info.state_dim, device, gen, shard)
        for module in vars(new).values():
            if isinstance(module, torch.nn.Module):
                module.to(dtype)
                shard.broadcast_(module)
        return new

    def policy() -> AgentPolicies:
        return bc.policy if learner is None else learner.pi

    bc_steps = cfg.bc_steps
    total = bc_steps + (cfg.iters if cfg.algo in LEARNERS else 0)
    bar = ProgressBar(total, "train", enabled=progress and lead)
    closing.callback(bar.close)
    log = None
    if lead and out is not None and cfg.loggers():
        log = closing.enter_context(RunLog(cfg.loggers(), out, cfg.to_dict(), keep_rows=run.get("logged"),
                                           resume_step=run["step"] if saved is not None else None))

    def log_row(done: int, iteration: int, values: dict[str, Any]) -> None:
        """A row of the loggers after ``done`` steps (learner ``iteration``), with the updates/s so far."""
        if log is not None:
            speed = {"updates_per_second": iteration / run["update_time"]} if run["update_time"] else {}
            log.log(done, iteration, {**values, **speed})
            run["logged"] = log.rows

    def record(iteration: int, losses: dict[str, float]) -> None:
        if not lead:
            return
        if not evaluating:  # the losses alone, at the same points
            run["curve"].append({"iteration": iteration, **losses})
            log_row(bc_steps + iteration, iteration, run["curve"][-1])
            bar.update(bc_steps + iteration, f"iteration {iteration}")
            return
        outcome = policy_outcome(policy(), eval_env, cfg.eval_episodes, seed=cfg.seed, greedy=cfg.eval_greedy)
        mean, std = outcome["mean"], outcome["std"]
        won = {"win_rate": outcome["win_rate"]} if "win_rate" in outcome else {}
        run["curve"].append({"iteration": iteration, "return": mean, "return_std": std, **won, **losses,
                             "episode_returns": outcome["episode_returns"]})
        log_row(bc_steps + iteration, iteration, run["curve"][-1])
        bar.update(bc_steps + iteration, f"return {mean:.4f}")
        if mean > run["best_return"]:
            run["best_return"] = mean
            if out is not None:
                ckpt_io.save(_policy_checkpoint(policy(), cfg, eval_env, iteration), out / "best.pt")

    def save_state() -> None:
        ckpt_io.save({"config": cfg.to_dict(), "dataset_sha256": dataset_sha256, "run": run, "bc": bc.state_dict(),
                         "learner": None if learner is None else learner.state_dict(), "generator": gen.get_state(),
                         "torch_rng": torch.get_rng_state(), "version": package_info()["version"]}, state_path)

    if saved is not None and saved["learner"] is not None:
        learner = start_learner()
        learner.load_state_dict(saved["learner"])
    started = time.perf_counter() - run["wall_time"]
    checked = max(run["step"] - bc_steps, 0)  # the last iteration whose losses were checked finite
    stop.deferred = True  # from here on a stop waits for the end of the step, whose state is then saved
    graphed = None  # cfg.cuda_graph: the iteration as a CUDA graph, which draws its own batch
    for step in range(run["step"], total):
        if not (cfg.cuda_graph and step >= bc_steps):
            idx = torch.randint(n_rows, (cfg.batch_size,), generator=gen, device=device)
        if step < bc_steps:
            mine = idx[shard.rows(cfg.batch_size)]
            loss = bc.update(data["obs"][mine], data["avail"][mine], data["actions"][mine])
            try:
                shard.require_finite(bc_nll=loss)  # collective: every rank stops together
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} at behaviour-cloning step {step}; {_KEPT}") from None
            if step == bc_steps - 1:
                run["bc_nll"] = shard.reduce_stats({"bc_nll": loss})["bc_nll"]
            if step % 100 == 0:
                bar.update(step + 1, f"bc nll {float(loss):.4f}")
            if (step + 1) % cfg.log_every == 0 and log is not None:
                log_row(step + 1, 0, {"bc_nll": float(loss)})
        else:
            it = step - bc_steps + 1
            if learner is None:
                learner = start_learner()
                record(0, {"bc_nll": run["bc_nll"]})
            t0 = time.perf_counter()
            if cfg.cuda_graph and graphed is None:
                graphed = GraphedIteration(learner, data, _BATCH_FIELDS, cfg.batch_size, gen)
            try:
                if graphed is not None:
                    stats = graphed()
                else:
                    batch = Batch(**{name: data[name][idx] for name in _BATCH_FIELDS},
                                  logp_mu=data["logp_mu"][:, idx])
                    stats = learner.update(batch)
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} at iteration {it}; {_KEPT}") from None
            except Exception:
                checked = _check_finite(learner, checked, it)  # a NaN loss may be what broke the iteration
                raise
            run["update_time"] += time.perf_counter() - t0
            evaluate_now = it % cfg.eval_every == 0 or it == cfg.iters
            if evaluate_now or it % cfg.check_every == 0:
                checked = _check_finite(learner, checked, it)
            if evaluate_now:
                record(it, shard.reduce_stats(stats))
            elif it % cfg.log_every == 0:
                losses = shard.reduce_stats(stats)  # collective: every rank takes part, rank 0 logs
                log_row(bc_steps + it, it, losses)
                bar.update(bc_steps + it, f"iteration {it}")
        run["step"] = step + 1
        run["wall_time"] = time.perf_counter() - started
        stopping = shard.any(stop.signal is not None)  # every rank stops after the same step
        if lead and state_path is not None and (run["step"] % cfg.checkpoint_every == 0 or stopping):
            if learner is not None:  # a checkpoint holds a checked state only
                checked = _check_finite(learner, checked, run["step"] - bc_steps)
            save_state()
        if stopping:
            bar.close()
            where = f"; resume with: inspo train --resume {out}" if out else " (no --out, nothing saved)"
            by = signal.Signals(stop.signal).name if stop.signal is not None else "a signal to another rank"
            raise TrainingInterrupted(f"stopped by {by} after step {run['step']} of {total}{where}")
    if not run["curve"]:  # behaviour cloning alone (algo "bc", or iters == 0): evaluate the cloned policy
        record(0, {"bc_nll": run["bc_nll"]})
    bar.close()

    run["curve"], run["best_return"] = shard.from_rank0((run["curve"], run["best_return"]))  # rank 0 evaluated
    result = TrainResult(
        final_return=run["curve"][-1].get("return"), best_return=run["best_return"] if evaluating else None,
        behaviour_return=ds.manifest["returns"]["mean"], curve=run["curve"],
        optimum=optimum(eval_env) if evaluating else None,
        wall_time=run["wall_time"], final_win_rate=run["curve"][-1].get("win_rate"),
        updates_per_second=cfg.iters / run["update_time"] if learner is not None and run["update_time"] else 0.0,
        policy=_final_policy(policy(), cfg, eval_env, run))
    if out is not None:
        final_path = out / "final.pt"
        result.checkpoint = str(final_path)
        result.metrics_path = str(out / "metrics.json")
        if lead:
            ckpt_io.save(_policy_checkpoint(policy(), cfg, eval_env, run["curve"][-1]["iteration"]), final_path)
            save_state()
            jsonio.write(out / "metrics.json", {"config": cfg.to_dict(), "env": env_name, "evaluated": evaluating,
                                               **result.record(),
                                               "bc_nll": run["bc_nll"], "dataset_sha256": dataset_sha256,
                                               "package": package_info()})
        shard.barrier()  # the files exist on return, on every rank
    return result


def _final_policy(network: AgentPolicies, cfg: TrainConfig, env: MultiAgentEnv | RecordedEnv,
                  run: dict[str, Any]) -> Policy:
    """The run's final policy, on its own copy of the weights (what ``final.pt`` holds)."""
    ckpt = _policy_checkpoint(network, cfg, env, run["curve"][-1]["iteration"])
    return Policy(policy_from_checkpoint(ckpt, next(network.parameters()).device), ckpt, seed=cfg.seed)


def _check_same_dataset(recorded: str | None, current: str, state_path: Path, dataset: str) -> None:
    """Refuse to resume on data other than the run started on (compared by manifest SHA-256)."""
    if recorded is None:
        warnings.warn(f"{state_path} records no dataset digest (written by an older inspo): cannot check that "
                      f"{dataset} holds the data the run started on", stacklevel=3)
    elif recorded != current:
        raise ValueError(f"{state_path} was written by a run on another dataset: it started on manifest_sha256 "
                         f"{recorded}, {dataset} now has manifest_sha256 {current}; resume with the data it "
                         f"started on")


_KEPT = "the run stopped, and its last checkpoint (if any) holds the last good state"


def _check_finite(learner: Learner, checked: int, it: int) -> int:
    """``it`` after the learner's deferred check of iterations ``checked + 1 .. it`` passed; raises otherwise."""
    try:
        learner.check_finite()
    except FloatingPointError as exc:
        where = f"at iteration {it}" if it == checked + 1 else f"in iterations {checked + 1}..{it}"
        raise FloatingPointError(f"{exc} {where}; {_KEPT}") from None
    return it
_BATCH_FIELDS = ("obs", "state", "avail", "actions", "reward", "terminated", "next_state", "logmu_all", "next_obs",
                 "next_avail", "next_actions", "has_next")
