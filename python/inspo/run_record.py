"""One training run's record: its progress (what its checkpoint holds besides the networks), its evaluations and
logs, and the files it writes into its folder (``checkpoint.pt``, ``best.pt``, ``final.pt``, ``metrics.json``).

A single run (:func:`inspo.training.train`) keeps one; a population (:mod:`inspo.population_training`) one per
member, so that every member's folder holds exactly what the single run would write.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from inspo import checkpoint as ckpt_io
from inspo import jsonio
from inspo.algos.bc import BehaviourCloning
from inspo.algos.learner import Learner
from inspo.algos.networks import AgentPolicies
from inspo.config import TrainConfig
from inspo.envs import MultiAgentEnv, RecordedEnv
from inspo.evaluation import policy_outcome
from inspo.loggers import RunLog
from inspo.policy import Policy, policy_checkpoint, policy_from_checkpoint
from inspo.progress import ProgressBar
from inspo.provenance import machine_info, package_info

__all__ = ["KEPT", "RunRecord", "TrainResult", "check_finite", "resumed_cpu_time"]

KEPT = "the run stopped, and its last checkpoint (if any) holds the last good state"


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
    cpu_time: float = 0.0  # CPU seconds (every thread) of the training loop; see RunRecord.run
    final_win_rate: float | None = None  # environments with a win condition (SMAX); None elsewhere
    machine: dict[str, Any] = field(default_factory=dict)  # provenance.machine_info and torch's CPU capability
    policy: Policy | None = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        """Every field but ``policy``, for ``metrics.json``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "policy"}


def resumed_cpu_time(run: dict[str, Any], members: int = 1) -> float:
    """The CPU time the training process had used when ``run`` (one of ``members`` trained together) was saved.
    Checkpoints written before CPU time was recorded have the wall time alone, its estimate on one thread."""
    return run["cpu_time"] * members if "cpu_time" in run else run["wall_time"]


class RunRecord:
    """The record of the run of ``cfg`` evaluated on ``env``: ``run`` (step, curve, best return, timings, the last
    behaviour-cloning loss, the rows logged) and the files in ``cfg.out`` (none without it). Only the ``lead`` (rank 0
    of data-parallel training) evaluates and writes; ``bar``, if given, shows each evaluation's return.

    ``run["cpu_time"]`` is the compute the run used: the CPU time of its process over the training loop (evaluations
    included, every thread; rank 0's under data-parallel training), a population member's share being the
    population's divided by its members, since they train together in one process."""

    def __init__(self, cfg: TrainConfig, env: MultiAgentEnv | RecordedEnv, dataset_sha256: str, lead: bool = True,
                 bar: ProgressBar | None = None) -> None:
        self.cfg, self.env, self.dataset_sha256, self.lead, self.bar = cfg, env, dataset_sha256, lead, bar
        self.evaluating = cfg.eval != "none"  # else ``env`` is only described (RecordedEnv), never played
        self.out = Path(cfg.out) if cfg.out else None
        self.state_path = self.out / "checkpoint.pt" if self.out else None
        self.run: dict[str, Any] = {"step": 0, "curve": [], "best_return": -math.inf, "update_time": 0.0,
                                    "wall_time": 0.0, "cpu_time": 0.0, "bc_nll": float("nan")}
        self.log: RunLog | None = None

    def adopt(self, saved: dict[str, Any], path: Path) -> None:
        """Continue from ``saved``, the training state read from ``path``: refused if another config (``out``
        aside: the folder may be spelled differently or have moved) or another dataset wrote it."""
        # Read, so that flat (older) keys compare too.
        if replace(TrainConfig.from_dict(saved["config"]), out=self.cfg.out) != self.cfg:
            raise ValueError(f"{path} was written by a run with another config; resume with the same one")
        check_same_dataset(saved.get("dataset_sha256"), self.dataset_sha256, path, self.cfg.dataset)
        self.run = saved["run"]

    def open_log(self, closing: contextlib.ExitStack, resumed: bool) -> None:
        """Start the run's loggers (:mod:`inspo.loggers`), closed by ``closing``; ``resumed``: continuing the run
        from its checkpoint."""
        if self.lead and self.out is not None and self.cfg.loggers():
            self.log = closing.enter_context(RunLog(
                self.cfg.loggers(), self.out, self.cfg.to_dict(), keep_rows=self.run.get("logged"),
                resume_step=self.run["step"] if resumed else None))

    def log_row(self, done: int, iteration: int, values: dict[str, Any]) -> None:
        """A row of the loggers after ``done`` steps (learner ``iteration``), with the updates/s so far."""
        if self.log is not None:
            run = self.run
            speed = {"updates_per_second": iteration / run["update_time"]} if run["update_time"] else {}
            self.log.log(done, iteration, {**values, **speed})
            run["logged"] = self.log.rows

    def record(self, iteration: int, losses: dict[str, float], policy: AgentPolicies) -> None:
        """Evaluate ``policy`` after learner ``iteration``; log it with ``losses``; save it as ``best.pt`` if it is
        the best so far. With ``eval="none"``, log the losses alone at the same points."""
        if not self.lead:
            return
        cfg, run = self.cfg, self.run
        if not self.evaluating:
            run["curve"].append({"iteration": iteration, **losses})
            self.log_row(cfg.bc_steps + iteration, iteration, run["curve"][-1])
            if self.bar is not None:
                self.bar.update(cfg.bc_steps + iteration, f"iteration {iteration}")
            return
        outcome = policy_outcome(policy, self.env, cfg.eval_episodes, seed=cfg.seed, greedy=cfg.eval_greedy)
        mean, std = outcome["mean"], outcome["std"]
        won = {"win_rate": outcome["win_rate"]} if "win_rate" in outcome else {}
        run["curve"].append({"iteration": iteration, "return": mean, "return_std": std, **won, **losses,
                             "episode_returns": outcome["episode_returns"]})
        self.log_row(cfg.bc_steps + iteration, iteration, run["curve"][-1])
        if self.bar is not None:
            self.bar.update(cfg.bc_steps + iteration, f"return {mean:.4f}")
        if mean > run["best_return"]:
            run["best_return"] = mean
            if self.out is not None:
                ckpt_io.save(self.policy_checkpoint(policy, iteration), self.out / "best.pt")

    def policy_checkpoint(self, policy: AgentPolicies, iteration: int) -> dict[str, Any]:
        """What ``best.pt`` and ``final.pt`` hold: ``policy`` after learner ``iteration``."""
        return policy_checkpoint(policy, self.env, hidden=self.cfg.hidden, config=self.cfg.to_dict(),
                                 iteration=iteration)

    def save_state(self, bc: BehaviourCloning, learner: Learner | None, gen: torch.Generator,
                   torch_rng: torch.Tensor | None = None) -> None:
        """Write ``checkpoint.pt``: everything a resumed run needs (``torch_rng``: the run's global RNG state,
        default the current one)."""
        ckpt_io.save({"config": self.cfg.to_dict(), "dataset_sha256": self.dataset_sha256, "run": self.run,
                      "bc": bc.state_dict(), "learner": None if learner is None else learner.state_dict(),
                      "generator": gen.get_state(),
                      "torch_rng": torch.get_rng_state() if torch_rng is None else torch_rng,
                      "version": package_info()["version"]}, self.state_path)

    def result(self, policy: AgentPolicies, behaviour_return: float | None, optimum: float | None,
               learned: bool) -> TrainResult:
        """The run's result, its final policy ``policy``; ``learned``: a learner ran (else no updates/s)."""
        run, cfg = self.run, self.cfg
        ckpt = self.policy_checkpoint(policy, run["curve"][-1]["iteration"])
        final = Policy(policy_from_checkpoint(ckpt, next(policy.parameters()).device), ckpt, seed=cfg.seed)
        result = TrainResult(
            final_return=run["curve"][-1].get("return"),
            best_return=run["best_return"] if self.evaluating else None, behaviour_return=behaviour_return,
            optimum=optimum if self.evaluating else None, curve=run["curve"], wall_time=run["wall_time"],
            cpu_time=run["cpu_time"], final_win_rate=run["curve"][-1].get("win_rate"),
            updates_per_second=cfg.iters / run["update_time"] if learned and run["update_time"] else 0.0,
            machine={**machine_info(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}, policy=final)
        if self.out is not None:
            result.checkpoint = str(self.out / "final.pt")
            result.metrics_path = str(self.out / "metrics.json")
        return result

    def save_final(self, policy: AgentPolicies) -> None:
        """Write ``final.pt``: ``policy`` after the last evaluation."""
        ckpt_io.save(self.policy_checkpoint(policy, self.run["curve"][-1]["iteration"]), self.out / "final.pt")

    def save_metrics(self, result: TrainResult, env_name: str) -> None:
        """Write ``metrics.json``: the config, the result and where it came from."""
        jsonio.write(self.out / "metrics.json", {"config": self.cfg.to_dict(), "env": env_name,
                                                 "evaluated": self.evaluating, **result.record(),
                                                 "bc_nll": self.run["bc_nll"], "dataset_sha256": self.dataset_sha256,
                                                 "package": package_info()})


def check_same_dataset(recorded: str | None, current: str, state_path: Path, dataset: str) -> None:
    """Refuse to resume on data other than the run started on (compared by manifest SHA-256)."""
    if recorded is None:
        warnings.warn(f"{state_path} records no dataset digest (written by an older inspo): cannot check that "
                      f"{dataset} holds the data the run started on", stacklevel=4)
    elif recorded != current:
        raise ValueError(f"{state_path} was written by a run on another dataset: it started on manifest_sha256 "
                         f"{recorded}, {dataset} now has manifest_sha256 {current}; resume with the data it "
                         f"started on")


def check_finite(learner: Learner, checked: int, it: int) -> int:
    """``it`` after the learner's deferred check of iterations ``checked + 1 .. it`` passed; raises otherwise
    (``learner`` may be a population: its message names the member)."""
    try:
        learner.check_finite()
    except FloatingPointError as exc:
        where = f"at iteration {it}" if it == checked + 1 else f"in iterations {checked + 1}..{it}"
        raise FloatingPointError(f"{exc} {where}; {KEPT}") from None
    return it
