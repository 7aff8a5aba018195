"""The training API: ``inspo.train(config)`` and ``inspo.evaluate(checkpoint, ...)``."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from inspo import checkpoint as ckpt_io
from inspo import precision, run_folder
from inspo.algos import LEARNERS
from inspo.algos.bc import BehaviourCloning
from inspo.algos.graph import GraphedIteration
from inspo.algos.learner import Learner
from inspo.algos.networks import AgentPolicies
from inspo.algos.parallel import Shard
from inspo.clones import Clones, clone_key, clone_state, start_from
from inspo.config import TrainConfig
from inspo.data import load_dataset
from inspo.data.format import check_recorded_env
from inspo.envs import optimum
from inspo.evaluation import evaluate, policy_outcome, policy_return, run_environment
from inspo.progress import ProgressBar
from inspo.run_record import KEPT, RunRecord, TrainResult, check_finite, resumed_cpu_time
from inspo.stopping import StopRequests, TrainingInterrupted, left_behind
from inspo.training_data import BATCH_FIELDS as _BATCH_FIELDS
from inspo.training_data import batch, behaviour_columns, diagnostic_rows
from inspo.training_data import to_device as _to_device

# TrainingInterrupted, evaluate, policy_outcome and policy_return live in their own modules; imported from here too.
__all__ = ["TrainResult", "TrainingInterrupted", "evaluate", "policy_outcome", "policy_return", "train"]


def train(config: TrainConfig, progress: bool = False, resume: bool = False,
          overwrite: bool = False, clones: str | os.PathLike | None = None) -> TrainResult:
    """Train ``config.algo`` on ``config.dataset``; write metrics and checkpoints to ``config.out`` if set.

    A run with ``out`` saves its full state to ``out/checkpoint.pt`` every ``config.checkpoint_every`` steps and
    when SIGINT/SIGTERM stops it (then :class:`TrainingInterrupted` is raised); ``resume=True`` continues from
    that file and ends with exactly the parameters the uninterrupted run would have (on CPU). Resuming refuses a
    checkpoint made with another config (``out`` aside: the folder may be spelled differently or have moved) or on
    another dataset (its manifest SHA-256 is recorded). SIGINT/SIGTERM before the first step raise
    :class:`TrainingInterrupted` at once, and no file is written.

    ``clones``: a folder of behaviour clones (:mod:`inspo.clones`). A fresh run whose clone is there starts from it
    instead of cloning (and ends exactly as if it had cloned); one that clones from its first step saves its clone
    there. Not with ``config.ddp``.

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
    precision.warn_if_emulated(config.precision, config.device)
    if resume and overwrite:
        raise ValueError("resume=True continues the run in config.out and overwrite=True deletes it; pass one")
    before = left_behind(config.out, resume)
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        with (StopRequests(before) as stop, _data_parallel(config) as shard,
              _claim_run_folder(config, shard, resume, overwrite), contextlib.ExitStack() as closing):
            return _train(config, progress, resume, shard, stop, closing, clones)
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


def _train(cfg: TrainConfig, progress: bool, resume: bool, shard: Shard, stop: StopRequests,
           closing: contextlib.ExitStack, clones: str | os.PathLike | None) -> TrainResult:
    device = shard.device
    lead = shard.rank == 0  # the rank that evaluates, reports and writes files
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    ds = load_dataset(cfg.dataset, recorded_env=False)
    env_name = ds.manifest["env"]["id"]
    env = run_environment(cfg, ds.manifest)  # with eval "none", its description only
    if cfg.eval != "none":
        check_recorded_env(ds.manifest)
        ds.validate(env)
    info = env.info
    data = _to_device(ds, device, dtype, cfg.normalize_state)
    n_rows = data["obs"].shape[0]
    bc_steps = cfg.bc_steps
    total = bc_steps + (cfg.iters if cfg.algo in LEARNERS else 0)
    bar = ProgressBar(total, "train", enabled=progress and lead)
    closing.callback(bar.close)
    book = RunRecord(cfg, env, ds.manifest["manifest_sha256"], lead, bar)
    run = book.run  # the run's progress; with the networks, optimisers and RNG states, what a resumed run needs

    bc = BehaviourCloning(cfg, info.n_agents, info.obs_dim, info.n_actions, device, shard)
    bc.policy.to(dtype)
    shard.broadcast_(bc.policy)
    learner: Learner | None = None  # LEARNERS[cfg.algo], built after behaviour cloning
    saved = None
    if resume:
        if book.state_path is None or not book.state_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {book.state_path} does not exist")
        saved = ckpt_io.load(book.state_path, map_location=device)
        book.adopt(saved, book.state_path)
        run = book.run
        bc.load_state_dict(saved["bc"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])

    def start_learner() -> Learner:
        data.update(behaviour_columns(bc.policy, data))
        return build_learner(cfg, bc.policy, info.state_dim, device, gen, shard)

    def policy() -> AgentPolicies:
        return bc.policy if learner is None else learner.pi

    probe = diagnostic_rows(n_rows, cfg.batch_size, device)

    def diagnostics() -> dict[str, float]:  # rank 0 alone records them
        return learner.diagnostics(batch(data, probe)) if lead and learner is not None else {}

    book.open_log(closing, resumed=saved is not None)
    if saved is not None and saved["learner"] is not None:
        learner = start_learner()
        learner.load_state_dict(saved["learner"])
    # A clone is reused or kept only by a run that starts afresh: a resumed one has logged part of its rows before.
    cache = Clones(clones) if clones is not None and bc_steps > 0 and not cfg.ddp and run["step"] == 0 else None
    key = clone_key([cfg], ds.manifest["manifest_sha256"]) if cache is not None else None
    bc_rows: list[tuple[int, float]] = []
    found = cache.load(key) if cache is not None else None
    if found is not None:
        torch.set_rng_state(start_from(found[0], bc, gen, book))
        cache = None
    started = time.perf_counter() - run["wall_time"]
    cpu_started = time.process_time() - resumed_cpu_time(run)
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
                raise FloatingPointError(f"{exc} at behaviour-cloning step {step}; {KEPT}") from None
            if (step + 1) % cfg.log_every == 0:
                book.log_row(step + 1, 0, {"bc_nll": float(loss)})
                bc_rows.append((step + 1, float(loss)))
            if step % 100 == 0:
                bar.update(step + 1, f"bc nll {float(loss):.4f}")
            if step == bc_steps - 1:
                run["bc_nll"] = shard.reduce_stats({"bc_nll": loss})["bc_nll"]
                if cache is not None:
                    cache.save(key, [clone_state(bc, gen, torch.get_rng_state(), run["bc_nll"], bc_rows)])
        else:
            it = step - bc_steps + 1
            if learner is None:
                learner = start_learner()
                book.record(0, {"bc_nll": run["bc_nll"], **diagnostics()}, learner.pi)
            t0 = time.perf_counter()
            if cfg.cuda_graph and graphed is None:
                graphed = GraphedIteration(learner, data, _BATCH_FIELDS, cfg.batch_size, gen)
            try:
                stats = graphed() if graphed is not None else learner.update(batch(data, idx))
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} at iteration {it}; {KEPT}") from None
            except Exception:
                checked = check_finite(learner, checked, it)  # a NaN loss may be what broke the iteration
                raise
            run["update_time"] += time.perf_counter() - t0
            evaluate_now = it % cfg.eval_every == 0 or it == cfg.iters
            if evaluate_now or it % cfg.check_every == 0:
                checked = check_finite(learner, checked, it)
            if evaluate_now:
                book.record(it, {**shard.reduce_stats(stats), **diagnostics()}, learner.pi)
            elif it % cfg.log_every == 0:
                losses = shard.reduce_stats(stats)  # collective: every rank takes part, rank 0 logs
                book.log_row(bc_steps + it, it, losses)
                bar.update(bc_steps + it, f"iteration {it}")
        run["step"] = step + 1
        run["wall_time"] = time.perf_counter() - started
        run["cpu_time"] = time.process_time() - cpu_started
        stopping = shard.any(stop.signal is not None)  # every rank stops after the same step
        if lead and book.state_path is not None and (run["step"] % cfg.checkpoint_every == 0 or stopping):
            if learner is not None:  # a checkpoint holds a checked state only
                checked = check_finite(learner, checked, run["step"] - bc_steps)
            book.save_state(bc, learner, gen)
        if stopping:
            bar.close()
            raise TrainingInterrupted(stopped_message(stop, run["step"], total, book.out))
    if not run["curve"]:  # behaviour cloning alone (algo "bc", or iters == 0): evaluate the cloned policy
        book.record(0, {"bc_nll": run["bc_nll"]}, policy())
    bar.close()

    run["curve"], run["best_return"] = shard.from_rank0((run["curve"], run["best_return"]))  # rank 0 evaluated
    result = book.result(policy(), ds.manifest["returns"]["mean"], optimum(env) if book.evaluating else None,
                         learned=learner is not None)
    if book.out is not None:
        if lead:
            book.save_final(policy())
            book.save_state(bc, learner, gen)
            book.save_metrics(result, env_name)
        shard.barrier()  # the files exist on return, on every rank
    return result


def build_learner(cfg: TrainConfig, mu: AgentPolicies, state_dim: int, device: torch.device, gen: torch.Generator,
                  shard: Shard) -> Learner:
    """``LEARNERS[cfg.algo]`` on the behaviour-cloned ``mu``, its networks in ``cfg.dtype`` and broadcast from
    rank 0 (the learner draws its initial parameters from torch's global RNG)."""
    new = LEARNERS[cfg.algo](cfg, mu, state_dim, device, gen, shard)
    for module in vars(new).values():
        if isinstance(module, torch.nn.Module):
            module.to(getattr(torch, cfg.dtype))
            shard.broadcast_(module)
    return new


def stopped_message(stop: StopRequests, step: int, total: int, out: Path | None) -> str:
    """What a run stopped by a signal after ``step`` of ``total`` says: the signal and how to resume."""
    where = f"; resume with: inspo train --resume {out}" if out else " (no --out, nothing saved)"
    by = signal.Signals(stop.signal).name if stop.signal is not None else "a signal to another rank"
    return f"stopped by {by} after step {step} of {total}{where}"
