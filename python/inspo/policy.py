"""Saved policies: the one format of a policy checkpoint, reading it back, and playing it.

A policy checkpoint (``final.pt`` and ``best.pt`` of ``inspo train``, every snapshot of ``inspo online train``) is
an :mod:`inspo.checkpoint` file holding the dict that :func:`policy_checkpoint` builds: the environment it acts in,
the config that made it, the :class:`~inspo.algos.networks.AgentPolicies` constructor arguments and weights (or
those of a :class:`~inspo.algos.networks.RecurrentPolicies`, marked ``"recurrent": True`` in ``policy_kwargs``), plus
any extra entries of its writer (``online``: the snapshot's record). :func:`load_policy` reads one back as a
:class:`Policy`, which acts on numpy arrays or torch tensors (``policy.act(obs, avail)``); ``inspo.train`` returns
the trained one in ``TrainResult.policy``.

SMAX snapshots of an online run are listed, in training order, by the folder's ``snapshots.json``
(:func:`load_snapshots`) and are played by :class:`SampledPolicy`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspo import checkpoint as ckpt_io
from inspo.algos.networks import AgentPolicies, RecurrentPolicies
from inspo.envs.base import MultiAgentEnv, RecordedEnv

__all__ = ["POLICY_FORMAT", "SNAPSHOT_FORMAT", "Policy", "SampledPolicy", "load_policy", "load_snapshots",
           "mask_unavailable", "masked_logits", "policy_checkpoint", "policy_from_checkpoint", "snapshot_eval_seed"]

POLICY_FORMAT = 1
"""Version of the policy checkpoint dict (its ``format`` entry)."""

SNAPSHOT_FORMAT = 1
"""Version of ``snapshots.json`` and of the snapshot files' extra metadata (``online``)."""


def policy_checkpoint(policy: AgentPolicies | RecurrentPolicies, env: MultiAgentEnv | RecordedEnv, *, hidden: int,
                      config: dict[str, Any], iteration: int, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of ``policy`` (``hidden`` units per layer) acting in ``env`` (built, or as a dataset
    describes it): what :func:`load_policy` and ``inspo evaluate`` read. ``config`` records what made it, ``extra``
    entries are added as they are."""
    info = env.info
    kind = ({"recurrent": True, **({} if policy.agent_id else {"agent_id": False})}
            if isinstance(policy, RecurrentPolicies) else {"shared": policy.shared})
    return {"format": POLICY_FORMAT, "iteration": iteration, "env": info.name, "env_options": env.options,
            "env_info": asdict(info), "config": config,
            "policy_kwargs": {"n_agents": info.n_agents, "obs_dim": info.obs_dim, "n_actions": info.n_actions,
                              "hidden": hidden, **kind},
            # Copies: the file must hold these weights, not storage shared with parameters that keep training.
            "policy": {k: v.clone() for k, v in policy.state_dict().items()},
            **extra}


_POLICY_SECTIONS = ("format", "env", "env_options", "policy_kwargs", "policy")
_TRAINING_STATE = ("run", "bc", "learner")
"""Sections of a training run's full state (``checkpoint.pt`` of ``inspo train``): not a policy checkpoint."""


def policy_from_checkpoint(ckpt: Any, device: str | torch.device = "cpu",
                           source: str | os.PathLike = "checkpoint") -> AgentPolicies | RecurrentPolicies:
    """The policy of a checkpoint dict built by :func:`policy_checkpoint`; CheckpointError naming ``source`` (the
    file it was read from) when it is not one (e.g. a run's training state ``checkpoint.pt``)."""
    if isinstance(ckpt, dict) and all(key in ckpt for key in _TRAINING_STATE):
        final = Path(source).with_name("final.pt")
        raise ckpt_io.CheckpointError(
            f"{source} is a training run's full state (for inspo train --resume), not a policy; evaluate the "
            f"run's policy {final} (or best.pt beside it)")
    what = f"a policy checkpoint (format {POLICY_FORMAT}, e.g. a run's final.pt)"
    ckpt = ckpt_io.sections(ckpt, source, _POLICY_SECTIONS, what)
    if ckpt["format"] != POLICY_FORMAT:
        raise ckpt_io.CheckpointError(f"{source} has policy format {ckpt['format']!r}; expected {POLICY_FORMAT}")
    if not isinstance(ckpt["env"], str) or not isinstance(ckpt["env_options"], dict):
        raise ckpt_io.CheckpointError(f"{source}: 'env' must be an environment name and 'env_options' a mapping, "
                                      f"got {ckpt['env']!r} and {ckpt['env_options']!r}")
    try:
        kwargs = dict(ckpt["policy_kwargs"])
        policy = RecurrentPolicies(**kwargs) if kwargs.pop("recurrent", False) else AgentPolicies(**kwargs)
        policy.load_state_dict(ckpt["policy"])
    except (TypeError, ValueError, RuntimeError) as exc:  # wrong constructor arguments, or weights of other shapes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ckpt_io.CheckpointError(f"{source}: its policy cannot be rebuilt from policy_kwargs "
                                      f"{ckpt['policy_kwargs']!r} and its weights: {first}") from None
    return policy.to(device)


class Policy:
    """A trained policy you can call: ``act(obs, avail)`` picks every agent's action.

    ``network`` is the :class:`~inspo.algos.networks.AgentPolicies` (one network per agent, or a shared one) or,
    for an online actor with memory, the :class:`~inspo.algos.networks.RecurrentPolicies`: its calls of ``act`` are
    the steps of the same episodes until :meth:`reset`. ``checkpoint`` is the policy checkpoint dict it came from
    (``env``, ``env_options``, ``config``, ...). Sampling draws from the policy's own generator, seeded with
    ``seed``: the same calls give the same actions.
    """

    def __init__(self, network: AgentPolicies | RecurrentPolicies, checkpoint: dict[str, Any], seed: int = 0) -> None:
        self.network, self.checkpoint = network.eval(), checkpoint
        param = next(network.parameters())
        self._device, self._dtype = param.device, param.dtype
        self.generator = torch.Generator(device=param.device).manual_seed(seed)

    @property
    def env(self) -> str:
        """The environment the policy was trained for (e.g. ``"xor"``, ``"smax:3m"``)."""
        return self.checkpoint["env"]

    def reset(self) -> None:
        """Start new episodes: a recurrent policy forgets what it saw (nothing to do for a feed-forward one)."""
        if isinstance(self.network, RecurrentPolicies):
            self.network.reset_state()

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, avail: np.ndarray | torch.Tensor | None = None,
            greedy: bool = False) -> np.ndarray | torch.Tensor:
        """Every agent's action for observations ``obs`` of shape ``[n_agents, obs_dim]`` (one step) or
        ``[B, n_agents, obs_dim]`` (a batch); ``avail`` (bool, ``[..., n_agents, n_actions]``; None: every action)
        masks unavailable actions. Samples from the policy, or takes its most likely action with ``greedy``.
        Returns int64 actions ``[n_agents]`` or ``[B, n_agents]``, of the kind of ``obs``: a numpy array, or a
        tensor on ``obs``'s device."""
        as_numpy = not isinstance(obs, torch.Tensor)
        x = torch.as_tensor(np.asarray(obs) if as_numpy else obs).to(self._device, self._dtype)
        n_agents = self.network.n_agents
        if x.dim() not in (2, 3) or x.shape[-2] != n_agents:
            raise ValueError(f"obs must have shape [n_agents={n_agents}, obs_dim] or [B, {n_agents}, obs_dim], got "
                             f"{list(x.shape)}")
        logits = self.network.all_logits(x)
        if avail is not None:
            mask = torch.as_tensor(np.asarray(avail) if not isinstance(avail, torch.Tensor) else avail,
                                   device=self._device).bool()
            if mask.shape != logits.shape:
                raise ValueError(f"avail must have shape {list(logits.shape)} (obs's leading dims, n_actions="
                                 f"{logits.shape[-1]}), got {list(mask.shape)}")
            if not mask.any(-1).all():
                raise ValueError("avail leaves an agent without any available action; every agent needs one")
            logits = logits.masked_fill(~mask, -math.inf)
        if greedy:
            actions = logits.argmax(-1)
        else:
            probs = torch.softmax(logits, -1)
            flat = probs.reshape(-1, probs.shape[-1])
            actions = torch.multinomial(flat, 1, generator=self.generator).view(probs.shape[:-1])
        return actions.cpu().numpy() if as_numpy else actions.to(obs.device)


def load_policy(checkpoint: str | os.PathLike, device: str = "cpu", seed: int = 0) -> Policy:
    """The :class:`Policy` stored in a policy checkpoint file (a run's ``final.pt`` or ``best.pt``, a snapshot of
    ``inspo online train``), on ``device``; ``policy.checkpoint`` holds the file's metadata."""
    ckpt = ckpt_io.load(checkpoint, map_location=device)
    return Policy(policy_from_checkpoint(ckpt, device, source=checkpoint), ckpt, seed=seed)


def mask_unavailable(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """``logits [..., N, A]`` with the unavailable actions (``avail`` False) masked out."""
    # A large negative number instead of -inf: an entropy of a masked distribution would be 0 * -inf = nan.
    return logits.masked_fill(~avail, -1e9)


def masked_logits(actor: AgentPolicies | RecurrentPolicies, obs: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Every agent's logits ``[..., N, A]`` with unavailable actions masked out."""
    return mask_unavailable(actor.all_logits(obs), avail)


class SampledPolicy:
    """A `BatchPolicy` for `SMAXEnv.rollout`: samples each agent's action from an `AgentPolicies` (masked), with a
    torch generator reseeded per batch of episodes (deterministic rollouts)."""

    def __init__(self, actor: AgentPolicies | RecurrentPolicies, description: str = "") -> None:
        self.actor, self.description = actor, description
        self._gen = torch.Generator().manual_seed(0)

    def reset(self, batch: int, seed: int) -> None:
        """Reseed for a new batch of episodes (and start a recurrent actor's memory afresh)."""
        self._gen = torch.Generator().manual_seed(seed)
        if isinstance(self.actor, RecurrentPolicies):
            self.actor.reset_state()

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, avail: np.ndarray) -> np.ndarray:
        logits = masked_logits(self.actor, torch.as_tensor(obs), torch.as_tensor(avail))
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs.flatten(0, 1), 1, generator=self._gen).view(probs.shape[:2]).numpy()


def snapshot_eval_seed(seed: int) -> int:
    """Seed of the episodes every snapshot of a run with `seed` is evaluated on: far from the training stream's
    episode keys, so that they never repeat it (the data module evaluates the scripted heuristic on them too)."""
    return 10_000_019 + seed


def load_snapshots(path: str | Path) -> dict[str, Any]:
    """The `snapshots.json` of a folder written by `inspo.online.train_online` (or `inspo online train`), with
    every snapshot file's SHA-256 checked. Raises FileNotFoundError (saying how to make one) or ValueError."""
    folder = Path(path)
    index = folder / "snapshots.json"
    if not index.is_file():
        raise FileNotFoundError(
            f"{folder} holds no online-trained SMAX policy ({index} is missing); train one with "
            f"`inspo online train --env smax:<map> --steps N --seed S --out {folder}`")
    meta = json.loads(index.read_text())
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{index}: snapshot format {meta.get('format')!r}, expected {SNAPSHOT_FORMAT}")
    for snap in meta["snapshots"]:
        if not (folder / snap["file"]).is_file():
            raise FileNotFoundError(f"{folder / snap['file']} is missing: snapshots.json lists it (a pruned run "
                                    f"folder resumes, but its snapshots cannot be read as a set)")
        digest = hashlib.sha256((folder / snap["file"]).read_bytes()).hexdigest()
        if digest != snap["sha256"]:
            raise ValueError(f"{folder / snap['file']}: sha256 {digest}, snapshots.json says {snap['sha256']}")
    meta["folder"] = str(folder)
    return meta
