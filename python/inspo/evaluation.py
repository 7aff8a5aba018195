"""Playing a policy in its environment: the team return of a policy (:func:`policy_outcome`), the evaluation of a
saved one (:func:`evaluate`, ``inspo evaluate``), and the environment a training run evaluates on
(:func:`run_environment`: built from the dataset's manifest, or, with ``eval="none"``, only described by it)."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from inspo.algos.networks import AgentPolicies, RecurrentPolicies
from inspo.config import TrainConfig
from inspo.envs import EnvInfo, MultiAgentEnv, RecordedEnv, check_known, make
from inspo.errors import InspoError
from inspo.policy import load_policy

__all__ = ["evaluate", "policy_outcome", "policy_return", "run_environment"]

_WITHOUT_EVALUATION = ("to train without playing the policy (the environment need not be installed), pass --eval none "
                       "(TrainConfig.eval='none'), and evaluate final.pt later with inspo evaluate where it is "
                       "installed")


def run_environment(cfg: TrainConfig, manifest: Mapping[str, Any]) -> MultiAgentEnv | RecordedEnv:
    """The environment a run of ``cfg`` on the dataset of ``manifest`` evaluates on: the recorded one with the
    recorded options, ``cfg.env_options`` on top and ``cfg.eval_episode_limit`` as its step limit. With
    ``cfg.eval == "none"`` only its description, never built (policy checkpoints record it); otherwise built, and
    an environment that is unknown or not installed here is an InspoError that suggests ``--eval none``."""
    recorded = manifest["env"]
    options = {**recorded["options"], **cfg.env_options}
    if cfg.eval_episode_limit is not None:
        options["episode_limit"] = cfg.eval_episode_limit
    if cfg.eval == "none":
        return RecordedEnv(EnvInfo(**{**recorded["spec"], "episode_limit": options.get(
            "episode_limit", recorded["spec"]["episode_limit"])}), options)
    try:
        check_known(recorded["id"])
    except ValueError as exc:  # e.g. an environment registered by another program
        raise InspoError(f"the dataset's environment {recorded['id']!r} is not known here: {exc}; "
                         f"{_WITHOUT_EVALUATION}") from None
    try:
        return make(recorded["id"], **options)
    except ImportError as exc:  # its optional dependency is absent (MissingExtra says which)
        raise InspoError(f"the dataset's environment {recorded['id']!r} cannot be built here: {exc}; "
                         f"{_WITHOUT_EVALUATION}") from None


def policy_return(policy: AgentPolicies | RecurrentPolicies, env: MultiAgentEnv, episodes: int, seed: int = 0,
                  greedy: bool = False) -> tuple[float, float]:
    """Mean and std of the undiscounted team return of ``policy`` over ``episodes`` episodes (see
    :func:`policy_outcome`)."""
    outcome = policy_outcome(policy, env, episodes, seed, greedy)
    return outcome["mean"], outcome["std"]


@torch.no_grad()
def policy_outcome(policy: AgentPolicies | RecurrentPolicies, env: MultiAgentEnv, episodes: int, seed: int = 0,
                   greedy: bool = False) -> dict[str, Any]:
    """``mean`` and ``std`` of the undiscounted team return of ``policy`` over ``episodes`` episodes, every
    episode's return (``episode_returns``), and ``win_rate`` on environments that play batched episodes with a win
    condition (SMAX).

    Matrix games (environments with a ``payoff`` table and a constant state) are evaluated exactly: the expected
    payoff of the product policy per round, times the number of rounds, with std 0 (and that expectation as the
    one entry of ``episode_returns``).
    """
    if isinstance(policy, RecurrentPolicies) and not hasattr(env, "rollout"):
        raise InspoError(f"a recurrent policy plays SMAX's batched episodes, not '{env.info.name}'")
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
        if isinstance(policy, RecurrentPolicies):  # each batch of episodes starts with a fresh memory
            act.reset = lambda batch, seed: policy.reset_state()  # type: ignore[attr-defined]
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
    if env is None:
        try:
            check_known(name)
        except ValueError as exc:  # e.g. a policy trained with --eval none on another machine's environment
            raise InspoError(f"{checkpoint} was trained on an environment that is not known here: {exc}; name one "
                             f"that is with --env (env=)") from None
    played = make(name, **options)
    kwargs = ckpt["policy_kwargs"]
    diffs = [f"{key}: policy {kwargs[key]} vs environment {getattr(played.info, key)}"
             for key in ("n_agents", "obs_dim", "n_actions") if kwargs[key] != getattr(played.info, key)]
    if diffs:
        raise InspoError(f"{checkpoint} does not fit environment '{name}': " + "; ".join(diffs))
    outcome = policy_outcome(loaded.network, played, episodes, seed=seed, greedy=greedy)
    return {**outcome, "episodes": episodes}
