"""Online MAPPO on SMAX, in PyTorch, read top to bottom (CleanRL style): the source of the SMAX behaviour policies
(`expert`, `medium`, `medium-replay`, `mixed` data in `inspo.data.smax`).

- Actor: one categorical policy shared by the allies, with a one-hot agent id next to the observation
  (`inspo.algos.networks.AgentPolicies(shared=True)`), unavailable actions masked out; with `recurrent`, a GRU
  policy (`inspo.algos.networks.RecurrentPolicies`) whose memory starts afresh with each episode, trained on whole
  rollout rows replayed from the memory they started with.
- Critic: a centralised value V(world state) (MAPPO); the team reward is shared, so every agent gets the same
  advantage (GAE), and the PPO clipped loss is averaged over agents. Two options of the MAPPO paper (Yu et al.
  2022) for the harder maps: `agent_state` gives the critic each agent's own observation and id beside the world
  state (one value, hence one advantage, per agent), and `value_norm` has it learn returns normalised by their
  running mean and standard deviation. `anneal_lr` lowers the learning rate linearly to 0 over the run.
  `separate_clip` bounds the actor's and the critic's gradient norms apart (JaxMARL's MAPPO, two optimisers) rather
  than their joint norm, under which a large critic gradient shrinks the actor's step. `orthogonal_init` starts
  from JaxMARL's MAPPO weights rather than PyTorch's defaults, and `clip_value` clips the critic's step per target
  as the PPO ratio is clipped (the MAPPO paper's value clipping). `recurrent_critic` gives the critic a GRU memory
  of the episode too (`inspo.online_critics`; JaxMARL's MAPPO).
- Data: `SMAXVector`, a batch of `num_envs` SMAX episodes stepped by one compiled jax call, restarting episodes as
  they end. A truncated episode (the step limit) is bootstrapped with the value of the state it reached.
- Snapshots: every `snapshot_every` updates (and at the end), the actor is evaluated on `eval_episodes` sampled
  episodes (return and win rate) and saved as `<out>/snapshots/NNNN.pt`, in the format `inspo.policy.load_policy`
  reads (so `inspo evaluate` works on a snapshot); `<out>/snapshots.json` lists them in training order and
  `<out>/policy.pt` is a copy of the last one (the expert).
- Resuming: with every snapshot, `<out>/checkpoint.pt` keeps the whole training state (networks, optimiser, return
  statistics, generators, the episodes in progress), so a run stopped by `max_minutes` or killed continues with
  `inspo online train --resume <out>` (`train_online(..., resume=True)`) and ends exactly as if never stopped.
  Resuming reads only `checkpoint.pt` and `snapshots.json`: a long run's snapshot files may be pruned (to keep or
  move the run), and its index goes on listing their digests.

Deterministic per seed (CPU, one thread): the episodes' PRNG keys, the action sampling and the minibatches all derive
from `seed`. `target_win_rate` stops training early once a snapshot reaches it (a deterministic rule);
`max_minutes` also stops it (counting the time of this sitting: a resumed run gets it afresh), after the update
during which the time ran out, which is not deterministic in length (the snapshots made before are).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inspo import checkpoint as ckpt_io
from inspo import flags, jsonio, precision, run_folder
from inspo.algos.networks import AgentPolicies, RecurrentPolicies
from inspo.config import PRECISIONS
from inspo.online_critics import Critic, RecurrentCritic, ReturnNorm
from inspo.policy import SNAPSHOT_FORMAT, SampledPolicy, mask_unavailable, policy_checkpoint, snapshot_eval_seed

__all__ = ["CHECKPOINT", "OnlineConfig", "OnlineResult", "resumed_config", "train_online"]

CHECKPOINT = "checkpoint.pt"
"""The training state in an online run's folder, written with every snapshot."""


@dataclass
class OnlineConfig:
    """Settings of `train_online`. `steps` counts environment steps summed over the parallel episodes."""

    env: str = field(default="smax:3m", metadata={"help": "smax:<map>, e.g. smax:3m"})
    steps: int = field(default=2_000_000, metadata={"help": "environment steps over all parallel episodes"})
    seed: int = 0
    num_envs: int = field(default=128, metadata={
        "help": "parallel episodes (8 or 128 reuse the step that SMAXEnv.rollout compiles)"})
    rollout: int = field(default=32, metadata={"help": "steps per episode-row between updates"})
    epochs: int = field(default=4, metadata={"help": "PPO epochs per update"})
    minibatches: int = field(default=4, metadata={"help": "minibatches per PPO epoch"})
    lr: float = 5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    separate_clip: bool = field(default=False, metadata={
        "help": "clip the actor's and the critic's gradient norms each to max_grad_norm (JaxMARL's MAPPO), not "
                "their joint norm"})
    orthogonal_init: bool = field(default=False, metadata={
        "help": "orthogonal starting weights (JaxMARL's MAPPO: gain sqrt(2) into a ReLU, 2 after the GRU, 0.01 "
                "for the logits, 1 for the value), not PyTorch's defaults"})
    clip_value: bool = field(default=False, metadata={
        "help": "value clipping: the critic's loss is the larger of the new value's and the value moved at most "
                "`clip` from the rollout's"})
    hidden: int = 64
    precision: str = field(default="fp32", metadata={
        "choices": PRECISIONS, "help": "matrix products of the PPO updates: fp32, or bf16 (bfloat16 products, "
                                       "float32 weights, recurrence and losses; fast on CPUs with AMX)"})
    agent_state: bool = field(default=False, metadata={
        "help": "critic input: the world state with each agent's observation and one-hot id (a value per agent)"})
    value_norm: bool = field(default=False, metadata={
        "help": "the critic learns returns normalised by their running mean and std"})
    anneal_lr: bool = field(default=False, metadata={"help": "lower the learning rate linearly to 0 over the run"})
    recurrent: bool = field(default=False, metadata={
        "help": "a GRU actor with memory of the episode (minibatches of whole rollout rows)"})
    recurrent_critic: bool = field(default=False, metadata={
        "help": "a GRU critic with memory of the episode (needs --recurrent: whole rollout rows)"})
    actor_id: bool = field(default=True, metadata={
        "help": "the recurrent actor reads each agent's one-hot id beside its observation (--no-actor-id: the "
                "observation alone, JaxMARL's MAPPO)"})
    critic_obs: bool = field(default=True, metadata={
        "help": "with --agent-state, the critic reads the agent's observation beside the world state and id "
                "(--no-critic-obs: the world state and id alone, JaxMARL's MAPPO)"})
    minibatch_rows: str = field(default="episodes", metadata={
        "choices": ("episodes", "agents"),
        "help": "what a recurrent minibatch draws: whole episode rows (every agent of an episode together) or "
                "agent rows (one agent's rollout row each, JaxMARL's MAPPO; needs --recurrent-critic --agent-state)"})
    init_from: str | None = field(default=None, metadata={
        "help": "start from the networks of the online run in this folder (its checkpoint: actor, critic, return "
                "statistics) with a fresh optimiser and schedule; the settings that shape the networks must match"})
    snapshot_every: int = field(default=20, metadata={"help": "updates between snapshots"})
    eval_episodes: int = field(default=128, metadata={"help": "episodes each snapshot is evaluated on"})
    target_win_rate: float | None = field(default=None, metadata={"help": "stop once a snapshot reaches this"})
    max_minutes: float | None = field(default=None, metadata={
        "help": "stop after the update during which this much wall time passed (not deterministic in length)"})

    def validate(self) -> None:
        """Raise ValueError naming the first bad field (a value of the wrong type included)."""
        flags.check_types(self, "OnlineConfig")
        if not self.env.startswith("smax:"):
            raise ValueError(f"online training needs an environment 'smax:<map>', got '{self.env}'")
        for name in ("steps", "num_envs", "rollout", "epochs", "minibatches", "hidden", "snapshot_every",
                     "eval_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OnlineConfig.{name} must be a positive integer, got {value!r}")
        if (self.num_envs * self.rollout) % self.minibatches:
            raise ValueError(f"num_envs * rollout ({self.num_envs * self.rollout}) must be divisible by "
                             f"minibatches ({self.minibatches})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"OnlineConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.recurrent_critic and not self.recurrent:
            raise ValueError("OnlineConfig.recurrent_critic needs recurrent=True (minibatches of whole rollout rows)")
        if not self.actor_id and not self.recurrent:
            raise ValueError("OnlineConfig.actor_id=False needs recurrent=True (the feed-forward actor reads the id)")
        if not self.critic_obs and not self.agent_state:
            raise ValueError("OnlineConfig.critic_obs=False needs agent_state=True (only that critic reads the "
                             "agent's observation)")
        if self.minibatch_rows == "agents" and not (self.recurrent_critic and self.agent_state):
            raise ValueError("OnlineConfig.minibatch_rows 'agents' needs recurrent_critic=True and agent_state=True "
                             "(a recurrent value per agent)")
        if self.recurrent and self.num_envs % self.minibatches:
            raise ValueError(f"a recurrent actor trains on whole rollout rows: num_envs ({self.num_envs}) must be "
                             f"divisible by minibatches ({self.minibatches})")
        for name in ("lr", "clip", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"OnlineConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("ent_coef", "vf_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"OnlineConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"OnlineConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"OnlineConfig.max_minutes must be > 0 or None, got {self.max_minutes!r}")
        if self.target_win_rate is not None and not 0.0 < self.target_win_rate <= 1.0:
            raise ValueError(f"target_win_rate must be in (0, 1], got {self.target_win_rate}")


@dataclass
class OnlineResult:
    """What `train_online` made: the snapshot records (training order; the last is the expert) and files."""

    snapshots: list[dict[str, Any]]
    out: str | None
    wall_time: float
    env_steps: int


def _snapshot(actor: AgentPolicies, cfg: OnlineConfig, env: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of one snapshot: a policy checkpoint (`inspo.policy`) with the training config and `online`,
    this snapshot's record."""
    return policy_checkpoint(actor, env, hidden=cfg.hidden, config={"online": asdict(cfg)}, iteration=record["update"],
                             online={"format": SNAPSHOT_FORMAT, **record})


_NETWORK_FIELDS = ("env", "hidden", "recurrent", "recurrent_critic", "agent_state", "actor_id", "critic_obs",
                   "value_norm")
"""The settings that shape an online run's networks and the scale of its critic's output: `init_from` needs its
source to have the same."""


def _initial_state(cfg: OnlineConfig) -> dict[str, Any]:
    """The training state that `cfg.init_from` names, checked against `cfg`; with its SHA-256 (`"sha256"`)."""
    import hashlib

    path = Path(cfg.init_from) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"init_from: {cfg.init_from} holds no online run ({path} is missing)")
    state = ckpt_io.load(path)
    source = OnlineConfig(**state["config"])
    differ = [f"{name} {getattr(source, name)!r} (this run: {getattr(cfg, name)!r})" for name in _NETWORK_FIELDS
              if getattr(source, name) != getattr(cfg, name)]
    if differ:
        raise ValueError(f"init_from: the run in {cfg.init_from} has other networks: " + ", ".join(differ))
    return {**state, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def resumed_config(out: str | Path) -> OnlineConfig:
    """The config of the online run in folder `out`, read from its checkpoint (what `--resume` continues)."""
    return OnlineConfig(**_saved_state(Path(out))["config"])


def _saved_state(out: Path) -> dict[str, Any]:
    path = out / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{out} holds no online run to resume: {path} is missing")
    saved = ckpt_io.load(path)
    if saved.get("done"):
        raise ValueError(f"the online run in {out} finished at update {saved['update']}: nothing to resume")
    return saved


def train_online(cfg: OnlineConfig, out: str | Path | None = None, progress: bool = False,
                 resume: bool = False) -> OnlineResult:
    """Train MAPPO on `cfg.env`; with `out`, write the snapshots there (see the module docstring). `resume`: continue
    the run in `out` (the same config; `max_minutes` may differ). The folder is claimed as a training run's is
    (`inspo.run_folder.claim`): one run at a time, and one that holds a run is refused unless resuming."""
    cfg.validate()
    precision.warn_if_emulated(cfg.precision, "cpu")
    if out is None:
        if resume:
            raise ValueError("resume needs the folder of the run (out)")
        return _train(cfg, None, None, progress)
    with run_folder.claim(out, resume=resume, files=(CHECKPOINT, "snapshots", "snapshots.json"),
                          command="inspo online train") as out_dir:
        saved = _saved_state(out_dir) if resume else None
        # resumed_config: a run of an earlier version ran with the defaults of the fields added since
        if saved is not None and replace(resumed_config(out_dir), max_minutes=None) != replace(cfg, max_minutes=None):
            raise ValueError(f"{out_dir} holds a run of another config: resume it with its own (resumed_config)")
        return _train(cfg, out_dir, saved, progress)


def _train(cfg: OnlineConfig, out_dir: Path | None, saved: dict[str, Any] | None, progress: bool) -> OnlineResult:
    """`train_online` in the claimed folder `out_dir`, from the training state `saved` if resuming."""
    from inspo.envs import make
    from inspo.envs.smax import SMAXVector

    started = sitting = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = _initial_state(cfg) if saved is None and cfg.init_from is not None else None
    env = make(cfg.env)
    info = env.info
    n, B, T = info.n_agents, cfg.num_envs, cfg.rollout
    actor = (RecurrentPolicies(n, info.obs_dim, info.n_actions, cfg.hidden, cfg.actor_id) if cfg.recurrent
             else AgentPolicies(n, info.obs_dim, info.n_actions, cfg.hidden, shared=True))
    critic = (RecurrentCritic if cfg.recurrent_critic else Critic)(n, info.obs_dim, info.state_dim, cfg.hidden,
                                                                   cfg.agent_state, cfg.critic_obs)
    if cfg.orthogonal_init:
        _orthogonal_init(actor, critic)
    else:
        with torch.no_grad():  # a near-uniform first policy: small output-layer weights (usual for PPO)
            *_, out_weight, out_bias = actor.parameters()  # registered last, whatever the layout of the networks
            out_weight.mul_(0.01)
            out_bias.zero_()
    norm = ReturnNorm(cfg.value_norm)
    params = [*actor.parameters(), *critic.parameters()]
    optim = torch.optim.Adam(params, lr=cfg.lr, eps=1e-5)

    def estimate(state: torch.Tensor, obs: torch.Tensor,
                 memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The critic's estimate in return units ``[..., N]``, and a recurrent critic's memory after it."""
        with torch.no_grad():
            if memory is None:
                return norm.denormalise(critic(state, obs)), None
            values, memory = critic.step(state, obs, memory)
            return norm.denormalise(values), memory

    vec = SMAXVector(env, B, seed=cfg.seed)
    obs, state, avail = vec.reset()
    memory = actor.initial_state(B) if cfg.recurrent else None  # the recurrent actor's, per episode row
    critic_memory = critic.initial_state(B) if cfg.recurrent_critic else None
    updates = max(cfg.steps // (B * T), 1)
    snapshots: list[dict[str, Any]] = []
    digests: dict[str, str] = {}  # the SHA-256 of each snapshot file written
    episode_returns = np.zeros(B)
    finished: list[float] = []  # returns of the training episodes that ended since the last snapshot
    finished_won: list[bool] = []

    def snapshot(update: int, losses: dict[str, Any]) -> dict[str, Any]:
        played = env.rollout(SampledPolicy(actor), cfg.eval_episodes, seed=snapshot_eval_seed(cfg.seed))
        record = {"index": len(snapshots), "update": update, "env_steps": update * B * T,
                  "return": played.mean_return, "win_rate": played.win_rate, "eval_episodes": cfg.eval_episodes,
                  # None (not NaN, which JSON lacks) before any training episode has ended
                  "train_return": float(np.mean(finished)) if finished else None,
                  "train_win_rate": float(np.mean(finished_won)) if finished_won else None,
                  "wall_time": time.perf_counter() - started, **losses}
        finished.clear()
        finished_won.clear()
        if out_dir is not None:
            record["file"] = f"snapshots/{record['index']:04d}.pt"
            ckpt_io.save(_snapshot(actor, cfg, env, record), out_dir / record["file"])
        snapshots.append(record)
        if progress:
            print(f"[{cfg.env} update {update}/{updates}, {record['env_steps']} steps, "
                  f"{record['wall_time']:.0f}s] eval return {record['return']:.3f} win {record['win_rate']:.2f}"
                  f"  train return {record['train_return'] or 0.0:.3f}", file=sys.stderr, flush=True)
        return record

    def save_state(update: int, done: bool) -> None:
        """`checkpoint.pt` after `update`, taken right after a snapshot (so no finished episode awaits counting)."""
        ckpt_io.save({
            "config": asdict(cfg), "update": update, "done": done, "wall_time": time.perf_counter() - started,
            "actor": actor.state_dict(), "critic": critic.state_dict(), "optim": optim.state_dict(),
            "norm": [norm.count, norm.mean, norm.var], "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "vector": vec.state_dict(), "now": [torch.from_numpy(x) for x in (obs, state, avail)], "memory": memory,
            "critic_memory": critic_memory,
            "episode_returns": torch.from_numpy(episode_returns), "snapshots": snapshots, "losses": losses},
            out_dir / CHECKPOINT)

    losses: dict[str, float] = {}
    if saved is None:
        first: dict[str, Any] = {}
        if start is not None:
            actor.load_state_dict(start["actor"])
            critic.load_state_dict(start["critic"])
            norm.count, norm.mean, norm.var = start["norm"]
            source = start["config"]
            # The first snapshot's record says what the run started from (kept in snapshots.json).
            first["init_from"] = {"update": start["update"], "sha256": start["sha256"],
                                  "env_steps": start["update"] * source["num_envs"] * source["rollout"]}
        snapshot(0, first)
    else:
        actor.load_state_dict(saved["actor"])
        critic.load_state_dict(saved["critic"])
        optim.load_state_dict(saved["optim"])
        norm.count, norm.mean, norm.var = saved["norm"]
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        vec.load_state_dict(saved["vector"])
        obs, state, avail = (x.numpy() for x in saved["now"])
        memory, episode_returns = saved["memory"], saved["episode_returns"].numpy().copy()
        critic_memory = saved.get("critic_memory")  # absent from the checkpoints of earlier versions
        snapshots, losses = saved["snapshots"], saved["losses"]
        # The index holds the digests of the snapshots made so far, so that the files themselves may be pruned.
        listed = json.loads((out_dir / "snapshots.json").read_text())["snapshots"]
        digests = {s["file"]: s["sha256"] for s in listed}
        started -= saved["wall_time"]
    for update in range(1 if saved is None else saved["update"] + 1, updates + 1):
        # -- collect T steps of B episodes ------------------------------------------------------------------
        buf_obs = torch.zeros(T, B, n, info.obs_dim)
        buf_state = torch.zeros(T, B, info.state_dim)
        buf_avail = torch.zeros(T, B, n, info.n_actions, dtype=torch.bool)
        buf_act = torch.zeros(T, B, n, dtype=torch.int64)
        buf_logp = torch.zeros(T, B, n)
        buf_val = torch.zeros(T, B, n)
        buf_rew = torch.zeros(T, B, n)
        buf_done = torch.zeros(T, B)  # the episode ended at this step (no bootstrap across it)
        first_memory, first_critic_memory = memory, critic_memory
        for t in range(T):
            o, s, a = torch.as_tensor(obs), torch.as_tensor(state), torch.as_tensor(avail)
            with torch.no_grad():
                if cfg.recurrent:
                    logits, memory = actor.step(o, memory)
                else:
                    logits = actor.all_logits(o)
                probs = torch.softmax(mask_unavailable(logits, a), -1)
                act = torch.multinomial(probs.flatten(0, 1), 1, generator=gen).view(B, n)
                logp = probs.gather(-1, act[..., None]).squeeze(-1).clamp_min(1e-12).log()
            values, critic_next = estimate(s, o, critic_memory)
            obs, state, avail, step = vec.step(act.numpy())
            reward = torch.as_tensor(step["reward"], dtype=torch.float32)[:, None].expand(B, n)
            truncated = torch.as_tensor(step["truncated"])
            if truncated.any():  # the step limit is not an end of the task: bootstrap from the state reached
                final_value, _ = estimate(torch.as_tensor(step["final_state"]), torch.as_tensor(step["final_obs"]),
                                          critic_next)
                reward = reward + cfg.gamma * torch.where(truncated[:, None], final_value, 0.0)
            done = step["terminated"] | step["truncated"]
            if cfg.recurrent:  # an episode that ended leaves its row to a new one, which starts afresh
                memory = memory * torch.as_tensor(~done, dtype=memory.dtype)[:, None, None]
            if cfg.recurrent_critic:
                critic_memory = critic_next * torch.as_tensor(~done, dtype=critic_next.dtype)[:, None, None]
            episode_returns += step["reward"]
            finished.extend(episode_returns[done].tolist())
            finished_won.extend(step["won"][done].tolist())
            episode_returns[done] = 0.0
            buf_obs[t], buf_state[t], buf_avail[t], buf_act[t], buf_logp[t] = o, s, a, act, logp
            buf_val[t], buf_rew[t], buf_done[t] = values, reward, torch.as_tensor(done, dtype=torch.float32)

        # -- generalised advantage estimation --------------------------------------------------------------
        next_value, _ = estimate(torch.as_tensor(state), torch.as_tensor(obs), critic_memory)
        adv = torch.zeros(T, B, n)
        last = torch.zeros(B, n)
        for t in reversed(range(T)):
            following = next_value if t == T - 1 else buf_val[t + 1]
            keep = 1.0 - buf_done[t, :, None]
            delta = buf_rew[t] + cfg.gamma * following * keep - buf_val[t]
            last = delta + cfg.gamma * cfg.gae_lambda * keep * last
            adv[t] = last
        ret = adv + buf_val
        norm.update(ret)
        if cfg.anneal_lr:
            for group in optim.param_groups:
                group["lr"] = cfg.lr * (1.0 - (update - 1) / updates)

        # -- PPO epochs over minibatches of (step, episode) rows ----------------------------------------------
        rows = T * B
        f_obs, f_state = buf_obs.view(rows, n, -1), buf_state.view(rows, -1)
        f_avail, f_act, f_logp = buf_avail.view(rows, n, -1), buf_act.view(rows, n), buf_logp.view(rows, n)
        # Without agent_state every agent has the episode's value, advantage and target: one column stands for all.
        cols = slice(None) if cfg.agent_state else slice(0, 1)
        f_adv, f_ret = adv.view(rows, n)[:, cols], norm.normalise(ret).view(rows, n)[:, cols]
        f_val = norm.normalise(buf_val).view(rows, n)[:, cols]  # the rollout's values, for clip_value
        # A recurrent actor's minibatches are whole rollout rows (all T steps), replayed from their first memory:
        # an episode's (every agent) or, with minibatch_rows "agents", one agent's.
        by_agent = cfg.minibatch_rows == "agents"
        if by_agent:
            f_avail, f_act, f_logp = f_avail.flatten(0, 1), f_act.flatten(), f_logp.flatten()
            f_adv, f_ret, f_val = f_adv.flatten(), f_ret.flatten(), f_val.flatten()
        drawn = B * n if by_agent else B if cfg.recurrent else rows
        size = drawn // cfg.minibatches
        stats = dict.fromkeys(("policy_loss", "value_loss", "entropy", "approx_kl", "actor_grad_norm",
                               "critic_grad_norm"), 0.0)
        for _ in range(cfg.epochs):
            perm = torch.randperm(drawn, generator=gen)
            for k in range(cfg.minibatches):
                pick = perm[k * size:(k + 1) * size]
                # A recurrent minibatch's flat rows are t-major: t * B + row, or t * B * n + row * n + i by agent.
                idx = (torch.arange(T)[:, None] * drawn + pick).flatten() if cfg.recurrent else pick
                with precision.autocast(cfg.precision, "cpu"):  # the networks' products; their outputs are float32
                    if by_agent:
                        env_i, agent_i = pick // n, pick % n
                        logits = actor.replay(buf_obs[:, env_i, agent_i], buf_done[:, env_i],
                                              first_memory[env_i, agent_i], agents=agent_i).flatten(0, 1)
                        value = critic.replay(buf_state[:, env_i], buf_obs[:, env_i, agent_i], buf_done[:, env_i],
                                              first_critic_memory[env_i, agent_i], agents=agent_i).flatten(0, 1)
                    else:
                        logits = (actor.replay(buf_obs[:, pick], buf_done[:, pick], first_memory[pick]).flatten(0, 1)
                                  if cfg.recurrent else actor.all_logits(f_obs[idx]))
                        value = (critic.replay(buf_state[:, pick], buf_obs[:, pick], buf_done[:, pick],
                                               first_critic_memory[pick]).flatten(0, 1)
                                 if cfg.recurrent_critic else critic(f_state[idx], f_obs[idx]))[:, cols]
                logits = mask_unavailable(logits, f_avail[idx])
                logp_all = torch.log_softmax(logits, -1)
                new_logp = logp_all.gather(-1, f_act[idx][..., None]).squeeze(-1)  # [b, n], by agent [b]
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                mb_adv = f_adv[idx]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                ratio = (new_logp - f_logp[idx]).exp()
                policy_loss = -torch.min(ratio * mb_adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * mb_adv).mean()
                value_err = (value - f_ret[idx]).pow(2)
                if cfg.clip_value:
                    moved = f_val[idx] + (value - f_val[idx]).clamp(-cfg.clip, cfg.clip)
                    value_err = torch.maximum(value_err, (moved - f_ret[idx]).pow(2))
                value_loss = 0.5 * value_err.mean()
                loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
                optim.zero_grad()
                loss.backward()
                # Logged before clipping (a joint clip scales the actor's step by the critic's norm too). The joint
                # rule keeps its own call, whose rounding earlier runs were made with, so they resume bit for bit.
                grad_norms = [nn.utils.get_total_norm([p.grad for p in net.parameters()]) for net in (actor, critic)]
                if cfg.separate_clip:
                    for net, grad_norm in zip((actor, critic), grad_norms):
                        nn.utils.clip_grads_with_norm_(net.parameters(), cfg.max_grad_norm, grad_norm)
                else:
                    nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optim.step()
                with torch.no_grad():
                    kl = ((ratio - 1) - (new_logp - f_logp[idx])).mean()
                for name, value in (("policy_loss", policy_loss), ("value_loss", value_loss), ("entropy", entropy),
                                    ("approx_kl", kl), ("actor_grad_norm", grad_norms[0]),
                                    ("critic_grad_norm", grad_norms[1])):
                    stats[name] += float(value.detach()) / (cfg.epochs * cfg.minibatches)
        if not all(math.isfinite(v) for v in stats.values()):
            raise FloatingPointError(f"non-finite MAPPO losses at update {update}: {stats}")
        losses = stats

        out_of_time = cfg.max_minutes is not None and time.perf_counter() - sitting > 60 * cfg.max_minutes
        if update % cfg.snapshot_every == 0 or update == updates or out_of_time:
            record = snapshot(update, losses)
            reached = cfg.target_win_rate is not None and record["win_rate"] >= cfg.target_win_rate
            if out_dir is not None:
                _write_index(out_dir, cfg, snapshots, digests)
                save_state(update, done=reached or update == updates)
            if reached or out_of_time:
                break
    if out_dir is not None:
        expert = (out_dir / snapshots[-1]["file"]).read_bytes()
        ckpt_io.atomic_write(out_dir / "policy.pt", lambda fh: fh.write(expert))
    return OnlineResult(snapshots=snapshots, out=None if out_dir is None else str(out_dir),
                        wall_time=time.perf_counter() - started, env_steps=snapshots[-1]["env_steps"])


def _orthogonal_init(actor: AgentPolicies | RecurrentPolicies, critic: Critic | RecurrentCritic) -> None:
    """JaxMARL MAPPO's starting weights: each weight matrix orthogonal with gain sqrt(2) (into a ReLU), 2 for the
    layer after the GRU, 0.01 for the logits (a near-uniform first policy) and 1 for the value; the GRU's input
    weights LeCun-normal and its recurrent ones orthogonal per gate (flax's GRUCell); biases zero."""
    with torch.no_grad():
        for net, out_gain in ((actor, 0.01), (critic, 1.0)):
            weights = [(name, p) for name, p in net.named_parameters() if "weight" in name]
            for name, p in net.named_parameters():
                if "bias" in name:
                    p.zero_()
            for k, (name, w) in enumerate(weights):
                if name == "gru.weight_ih":
                    std = w.shape[1] ** -0.5 / 0.87962566  # flax's truncated normal, rescaled to variance 1/fan_in
                    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
                    continue
                if name == "gru.weight_hh":  # one matrix per gate
                    gain, blocks = 1.0, w.view(3, -1, w.shape[1])
                else:  # one matrix per member of a stacked MLP
                    gain = out_gain if k == len(weights) - 1 else 2.0 if name == "fc.weight" else math.sqrt(2)
                    blocks = w.view(-1, *w.shape[-2:])
                for block in blocks:
                    nn.init.orthogonal_(block, gain)


def _write_index(out: Path, cfg: OnlineConfig, snapshots: list[dict[str, Any]], digests: dict[str, str]) -> None:
    """`snapshots.json`: the config and every snapshot's record, with the SHA-256 of its file (`digests`: those
    read so far, by file, so that a long run reads each file once)."""
    import hashlib

    for s in snapshots:
        if s["file"] not in digests:
            digests[s["file"]] = hashlib.sha256((out / s["file"]).read_bytes()).hexdigest()
    listed = [{**s, "sha256": digests[s["file"]]} for s in snapshots]
    text = jsonio.dumps({"format": SNAPSHOT_FORMAT, "env": cfg.env, "config": asdict(cfg), "snapshots": listed},
                      indent=2) + "\n"
    ckpt_io.write_text(out / "snapshots.json", text)
