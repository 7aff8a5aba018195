"""The training API: ``inspo.train(config)`` and ``inspo.evaluate(checkpoint, ...)``."""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspo.algos.inspo import Batch, BehaviourCloning, InSPO, behaviour_log_probs
from inspo.algos.networks import AgentPolicies
from inspo.config import TrainConfig
from inspo.data import load_dataset
from inspo.envs import MultiAgentEnv, make, optimum

__all__ = ["TrainResult", "train", "evaluate", "policy_return"]


@dataclass
class TrainResult:
    """What a run produced; ``curve`` holds one record per evaluation."""

    final_return: float
    best_return: float
    behaviour_return: float | None
    optimum: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    metrics_path: str | None = None
    wall_time: float = 0.0
    updates_per_second: float = 0.0


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, lambda fh: fh.write(json.dumps(obj, indent=2).encode()))


@torch.no_grad()
def policy_return(policy: AgentPolicies, env: MultiAgentEnv, episodes: int, seed: int = 0,
                  greedy: bool = False) -> tuple[float, float]:
    """Mean and std of the undiscounted team return of ``policy`` over ``episodes`` episodes.

    Matrix games (environments with a ``payoff`` table and a constant state) are evaluated exactly: the expected
    payoff of the product policy per round, times the number of rounds, with std 0.
    """
    param = next(policy.parameters())
    to_t = lambda x: torch.as_tensor(x, device=param.device)  # noqa: E731
    payoff = getattr(env, "payoff", None)
    if payoff is not None and not greedy:
        obs, _, avail = env.reset(seed=seed)
        logits = policy.all_logits(to_t(obs).to(param.dtype)).masked_fill(~to_t(avail), -math.inf)
        probs = torch.softmax(logits, -1).double().cpu().numpy()
        value = float(np.einsum("ij,i,j->", payoff, probs[0], probs[1])) * env.info.episode_limit
        return value, 0.0
    # Episodes run in lockstep so that each step is one batched forward pass.
    gen = torch.Generator(device=param.device).manual_seed(seed)
    envs = [make(env.info.name, **env.options) for _ in range(episodes)]
    current = [e.reset(seed=seed + k) for k, e in enumerate(envs)]
    returns = np.zeros(episodes)
    running = list(range(episodes))
    while running:
        obs = to_t(np.stack([current[k][0] for k in running])).to(param.dtype)
        avail = to_t(np.stack([current[k][2] for k in running]))
        logits = policy.all_logits(obs).masked_fill(~avail, -math.inf)
        if greedy:
            actions = logits.argmax(-1)
        else:
            probs = torch.softmax(logits, -1)
            actions = torch.multinomial(probs.flatten(0, 1), 1, generator=gen).view(probs.shape[:2])
        actions = actions.cpu().numpy()
        still = []
        for row, k in enumerate(running):
            obs_k, state_k, avail_k, reward, terminated, truncated, _ = envs[k].step(actions[row])
            returns[k] += reward
            current[k] = (obs_k, state_k, avail_k)
            if not (terminated or truncated):
                still.append(k)
        running = still
    return float(returns.mean()), float(returns.std())


def _eval_env(cfg: TrainConfig, env_name: str, data_options: dict[str, Any]) -> MultiAgentEnv:
    options = {**data_options, **cfg.env_options}
    if cfg.eval_episode_limit is not None:
        options["episode_limit"] = cfg.eval_episode_limit
    return make(env_name, **options)


def _to_device(ds, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    # torch.tensor copies: the arrays are read-only memory maps.
    f = lambda x, dt=dtype: torch.tensor(np.asarray(x), device=device, dtype=dt)  # noqa: E731
    return {
        "obs": f(ds.obs), "state": f(ds.state), "avail": f(ds.avail, torch.bool),
        "actions": f(ds.actions, torch.int64), "reward": f(ds.reward), "terminated": f(ds.terminated),
        "next_state": f(ds.next_state),
    }


class _Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, done: int, note: str) -> None:
        if self.enabled:
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            sys.stderr.write(f"\r[{done}/{self.total}] {rate:7.1f} it/s  {note}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _checkpoint(policy: AgentPolicies, cfg: TrainConfig, env: MultiAgentEnv, iteration: int) -> dict[str, Any]:
    info = env.info
    return {
        "format": 1, "iteration": iteration, "env": info.name, "env_options": env.options,
        "env_info": asdict(info), "config": cfg.to_dict(),
        "policy_kwargs": {"n_agents": info.n_agents, "obs_dim": info.obs_dim, "n_actions": info.n_actions,
                          "hidden": cfg.hidden, "shared": cfg.shared_policy},
        "policy": policy.state_dict(),
    }


def train(config: TrainConfig, progress: bool = False) -> TrainResult:
    """Train ``config.algo`` on ``config.dataset``; write metrics and checkpoints to ``config.out`` if set."""
    config.validate()
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, progress)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, progress: bool) -> TrainResult:
    device = torch.device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    ds = load_dataset(cfg.dataset)
    env_name = ds.manifest["env"]["id"]
    eval_env = _eval_env(cfg, env_name, ds.manifest["env"]["options"])
    ds.validate(eval_env)
    info = eval_env.info
    data = _to_device(ds, device, dtype)
    n_rows = data["obs"].shape[0]
    out = Path(cfg.out) if cfg.out else None
    started = time.perf_counter()

    def sample() -> torch.Tensor:
        return torch.randint(n_rows, (cfg.batch_size,), generator=gen, device=device)

    bc = BehaviourCloning(cfg, info.n_agents, info.obs_dim, info.n_actions, device)
    bc.policy.to(dtype)
    bar = _Progress(cfg.bc_steps + (cfg.iters if cfg.algo == "inspo" else 0), progress)
    bc_loss = float("nan")
    for step in range(cfg.bc_steps):
        idx = sample()
        bc_loss = bc.update(data["obs"][idx], data["avail"][idx], data["actions"][idx])
        if step % 100 == 0:
            bar.update(step + 1, f"bc nll {float(bc_loss):.4f}")
    bc_loss = float(bc_loss)

    curve: list[dict[str, float]] = []
    best = (-math.inf, None)
    update_time = 0.0

    def record(iteration: int, policy: AgentPolicies, losses: dict[str, float]) -> None:
        nonlocal best
        mean, std = policy_return(policy, eval_env, cfg.eval_episodes, seed=cfg.seed, greedy=cfg.eval_greedy)
        curve.append({"iteration": iteration, "return": mean, "return_std": std, **losses})
        if mean > best[0]:
            best = (mean, _checkpoint(policy, cfg, eval_env, iteration))

    if cfg.algo == "bc":
        policy = bc.policy
        record(0, policy, {"bc_nll": bc_loss})
    else:
        logmu_all = behaviour_log_probs(bc.policy, data["obs"], data["avail"])
        logp_mu = logmu_all.gather(-1, data["actions"][..., None]).squeeze(-1).t().contiguous()  # [N, T]
        learner = InSPO(cfg, bc.policy, info.state_dim, device, gen)
        for module in (learner.pi, learner.q, learner.q_target, learner.v, learner.local_q):
            module.to(dtype)
        policy = learner.pi
        record(0, policy, {"bc_nll": bc_loss})
        for it in range(1, cfg.iters + 1):
            t0 = time.perf_counter()
            idx = sample()
            batch = Batch(obs=data["obs"][idx], state=data["state"][idx], avail=data["avail"][idx],
                          actions=data["actions"][idx], reward=data["reward"][idx],
                          terminated=data["terminated"][idx], next_state=data["next_state"][idx],
                          logmu_all=logmu_all[idx], logp_mu=logp_mu[:, idx])
            stats = learner.update(batch)
            update_time += time.perf_counter() - t0
            if it % cfg.eval_every == 0 or it == cfg.iters:
                losses = {k: float(v) for k, v in stats.items()}
                for name, value in losses.items():
                    if not math.isfinite(value):
                        raise FloatingPointError(f"{name} is {value} at iteration {it}; stopping the run")
                record(it, policy, losses)
                bar.update(cfg.bc_steps + it, f"return {curve[-1]['return']:.4f}")
    bar.close()

    wall = time.perf_counter() - started
    result = TrainResult(
        final_return=curve[-1]["return"], best_return=best[0],
        behaviour_return=ds.manifest["returns"]["mean"], optimum=optimum(eval_env), curve=curve, wall_time=wall,
        updates_per_second=(cfg.iters / update_time) if cfg.algo == "inspo" and update_time > 0 else 0.0)
    if out is not None:
        final_path = out / "final.pt"
        _atomic_write_bytes(final_path, lambda fh: torch.save(
            _checkpoint(policy, cfg, eval_env, curve[-1]["iteration"]), fh))
        _atomic_write_bytes(out / "best.pt", lambda fh: torch.save(best[1], fh))
        result.checkpoint = str(final_path)
        result.metrics_path = str(out / "metrics.json")
        _write_json(out / "metrics.json", {"config": cfg.to_dict(), "env": env_name, **asdict(result),
                                           "bc_nll": bc_loss})
    return result


def load_policy(checkpoint: str | os.PathLike, device: str = "cpu") -> tuple[AgentPolicies, dict[str, Any]]:
    """The policy stored in a checkpoint written by :func:`train`, and the checkpoint's metadata."""
    ckpt = torch.load(checkpoint, map_location=device, weights_only=True)
    policy = AgentPolicies(**ckpt["policy_kwargs"])
    policy.load_state_dict(ckpt["policy"])
    return policy.to(device), ckpt


def evaluate(checkpoint: str | os.PathLike, env: str | None = None, episodes: int = 100, seed: int = 0,
             episode_limit: int | None = None, greedy: bool = False, **env_options: Any) -> dict[str, float]:
    """Mean and std return of a saved policy on ``env`` (default: the environment it was trained for)."""
    policy, ckpt = load_policy(checkpoint)
    name = env or ckpt["env"]
    options = dict(ckpt["env_options"]) if env is None else {}
    options.update(env_options)
    if episode_limit is not None:
        options["episode_limit"] = episode_limit
    mean, std = policy_return(policy, make(name, **options), episodes, seed=seed, greedy=greedy)
    return {"mean": mean, "std": std, "episodes": episodes}
