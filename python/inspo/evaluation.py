"""Evaluating policies: the return of a policy in its environment, exactly for matrix games and by played
episodes elsewhere, and ``inspo.evaluate`` of a saved policy."""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from inspo.algos.networks import AgentPolicies
from inspo.config import TrainConfig
from inspo.envs import MultiAgentEnv, make
from inspo.errors import InspoError
from inspo.policy import load_policy

__all__ = ["eval_env", "evaluate", "policy_outcome", "policy_return"]


def policy_return(policy: AgentPolicies, env: MultiAgentEnv, episodes: int, seed: int = 0,
                  greedy: bool = False) -> tuple[float, float]:
    """Mean and std of the undiscounted team return of ``policy`` over ``episodes`` episodes (see
    :func:`policy_outcome`)."""
    outcome = policy_outcome(policy, env, episodes, seed, greedy)
    return outcome["mean"], outcome["std"]


@torch.no_grad()
def policy_outcome(policy: AgentPolicies, env: MultiAgentEnv, episodes: int, seed: int = 0,
                   greedy: bool = False) -> dict[str, Any]:
    """``mean`` and ``std`` of the undiscounted team return of ``policy`` over ``episodes`` episodes, every
    episode's return (``episode_returns``), and ``win_rate`` on environments that play batched episodes with a win
    condition (SMAX).

    Matrix games (environments with a ``payoff`` table and a constant state) are evaluated exactly: the expected
    payoff of the product policy per round, times the number of rounds, with std 0 (and that expectation as the
    one entry of ``episode_returns``).
    """
    param = next(policy.parameters())
    to_t = lambda x: torch.as_tensor(x, device=param.device)  # noqa: E731
    payoff = getattr(env, "payoff", None)
    if payoff is not None and not greedy:
        obs, _, avail = env.reset(seed=seed)
        logits = policy.all_logits(to_t(obs).to(param.dtype)).masked_fill(~to_t(avail), -math.inf)
        probs = torch.softmax(logits, -1).double().cpu().numpy()
        value = float(np.einsum("ij,i,j->", payoff, probs[0], probs[1])) * env.info.episode_limit
        return {"mean": value, "std": 0.0, "episode_returns": [value]}
    # Episodes run in lockstep so that each step is one batched forward pass.
    gen = torch.Generator(device=param.device).manual_seed(seed)

    def act(obs_np: np.ndarray, avail_np: np.ndarray) -> np.ndarray:
        obs, avail = to_t(obs_np).to(param.dtype), to_t(avail_np)
        logits = policy.all_logits(obs).masked_fill(~avail, -math.inf)
        if greedy:
            return logits.argmax(-1).cpu().numpy()
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs.flatten(0, 1), 1, generator=gen).view(probs.shape[:2]).cpu().numpy()

    if hasattr(env, "rollout"):  # environments that step whole batches of episodes themselves (SMAX)
        played = env.rollout(act, episodes, seed)
        return {"mean": float(played.returns.mean()), "std": float(played.returns.std()), "win_rate": played.win_rate,
                "episode_returns": np.asarray(played.returns, dtype=float).tolist()}
    envs = [make(env.info.name, **env.options) for _ in range(episodes)]
    current = [e.reset(seed=seed + k) for k, e in enumerate(envs)]
    returns = np.zeros(episodes)
    running = list(range(episodes))
    while running:
        actions = act(np.stack([current[k][0] for k in running]), np.stack([current[k][2] for k in running]))
        still = []
        for row, k in enumerate(running):
            obs_k, state_k, avail_k, reward, terminated, truncated, _ = envs[k].step(actions[row])
            returns[k] += reward
            current[k] = (obs_k, state_k, avail_k)
            if not (terminated or truncated):
                still.append(k)
        running = still
    return {"mean": float(returns.mean()), "std": float(returns.std()), "episode_returns": returns.tolist()}


def eval_env(cfg: TrainConfig, env_name: str, data_options: dict[str, Any]) -> MultiAgentEnv:
    """The environment a run of ``cfg`` evaluates on: the dataset's, with ``cfg``'s options on top."""
    options = {**data_options, **cfg.env_options}
    if cfg.eval_episode_limit is not None:
        options["episode_limit"] = cfg.eval_episode_limit
    return make(env_name, **options)


def evaluate(checkpoint: str | os.PathLike, env: str | None = None, episodes: int = 100, seed: int = 0,
             episode_limit: int | None = None, greedy: bool = False, **env_options: Any) -> dict[str, float]:
    """Mean and std return of a saved policy on ``env`` (default: the environment it was trained for), and its
    ``win_rate`` on environments with a win condition (SMAX)."""
    if episodes < 1:
        raise InspoError(f"episodes must be >= 1, got {episodes}")
    loaded = load_policy(checkpoint)
    ckpt = loaded.checkpoint
    name = env or ckpt["env"]
    options = dict(ckpt["env_options"]) if env is None else {}
    options.update(env_options)
    if episode_limit is not None:
        options["episode_limit"] = episode_limit
    outcome = policy_outcome(loaded.network, make(name, **options), episodes, seed=seed, greedy=greedy)
    return {**outcome, "episodes": episodes}
