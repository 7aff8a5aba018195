"""The centralised critics of online MAPPO (`inspo.online`): V(world state), feed-forward or with memory of the
episode. The team reward is shared, so one value serves every agent, repeated per agent; with ``agent_state`` the
critic also reads each agent's observation and one-hot id and gives a value per agent (the MAPPO paper's
agent-specific state); :class:`ReturnNorm` normalises their targets."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from inspo.algos.networks import gru_replay, mlp

__all__ = ["Critic", "RecurrentCritic", "ReturnNorm"]


def _inputs(state: Tensor, obs: Tensor, n_agents: int, agents: Tensor | None = None, agent_obs: bool = True) -> Tensor:
    """``[..., N, state_dim + obs_dim + N]``: the state beside each agent's observation (left out without
    ``agent_obs``) and one-hot id; with ``agents`` (``[rows]``, the agent of each row), ``[..., rows, ...]`` from
    ``state [..., rows, state_dim]`` and ``obs [..., rows, obs_dim]``, one agent per row."""
    if agents is None:
        ids, state = torch.eye(n_agents, dtype=obs.dtype), state[..., None, :]
    else:
        ids = nn.functional.one_hot(agents, n_agents).to(obs.dtype)
    lead = obs.shape[:-1]
    return torch.cat([state.expand(*lead, -1), *([obs] if agent_obs else []), ids.expand(*lead, n_agents)], -1)


def _input_dim(n_agents: int, obs_dim: int, state_dim: int, agent_state: bool, agent_obs: bool) -> int:
    return state_dim + (n_agents + (obs_dim if agent_obs else 0) if agent_state else 0)


class Critic(nn.Module):
    """V(world state) -> values ``[..., N]``: one value shared by the agents, repeated per agent; or, with
    ``agent_state``, V(world state, agent's observation, agent's id), one per agent."""

    def __init__(self, n_agents: int, obs_dim: int, state_dim: int, hidden: int, agent_state: bool,
                 agent_obs: bool = True) -> None:
        super().__init__()
        self.n_agents, self.agent_state, self.agent_obs = n_agents, agent_state, agent_obs
        self.net = mlp(_input_dim(n_agents, obs_dim, state_dim, agent_state, agent_obs), hidden, 1)

    def forward(self, state: Tensor, obs: Tensor) -> Tensor:
        """``state [..., state_dim]``, ``obs [..., N, obs_dim]`` -> values ``[..., N]``."""
        if not self.agent_state:
            return self.net(state).expand(*state.shape[:-1], self.n_agents)
        return self.net(_inputs(state, obs, self.n_agents, agent_obs=self.agent_obs)).squeeze(-1)


class RecurrentCritic(nn.Module):
    """:class:`Critic`'s values from a network with memory of the episode (JaxMARL's MAPPO critic): ``input -> ReLU
    layer -> GRU cell -> ReLU layer -> value``, the memory one per agent with ``agent_state``, else one per
    episode. :meth:`step` is the function (``state, obs, memory -> values, memory``)."""

    def __init__(self, n_agents: int, obs_dim: int, state_dim: int, hidden: int, agent_state: bool,
                 agent_obs: bool = True) -> None:
        super().__init__()
        self.n_agents, self.agent_state, self.agent_obs, self.hidden = n_agents, agent_state, agent_obs, hidden
        self.inp = nn.Linear(_input_dim(n_agents, obs_dim, state_dim, agent_state, agent_obs), hidden)
        self.gru = nn.GRUCell(hidden, hidden)
        self.fc = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)

    def initial_state(self, *lead: int) -> Tensor:
        """The memory at the start of an episode, ``[*lead, N, hidden]`` (``N`` is 1 without ``agent_state``)."""
        return torch.zeros(*lead, self.n_agents if self.agent_state else 1, self.hidden,
                           dtype=self.out.weight.dtype, device=self.out.weight.device)

    def _first_layer(self, state: Tensor, obs: Tensor, agents: Tensor | None = None) -> Tensor:
        """The ReLU layer on the critic's input, ``[..., N or 1, hidden]`` (``[..., rows, hidden]`` with
        ``agents``, as in :func:`_inputs`)."""
        x = _inputs(state, obs, self.n_agents, agents, self.agent_obs) if self.agent_state else state[..., None, :]
        return torch.relu(self.inp(x))

    def step(self, state: Tensor, obs: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """``state [..., state_dim]``, ``obs [..., N, obs_dim]``, ``memory`` -> (values ``[..., N]``, memory)."""
        x = self._first_layer(state, obs)
        memory = self.gru(x.reshape(-1, self.hidden), memory.reshape(-1, self.hidden)).view_as(memory)
        values = self.out(torch.relu(self.fc(memory))).squeeze(-1)
        return values.expand(*state.shape[:-1], self.n_agents), memory

    def replay(self, state: Tensor, obs: Tensor, done: Tensor, memory: Tensor, backend: str = "fused",
               agents: Tensor | None = None) -> Tensor:
        """Values ``[T, b, N]`` of :meth:`step` played over ``T`` steps of ``b`` episode rows (``state [T, b,
        state_dim]``, ``obs [T, b, N, obs_dim]``) from their memories, cleared after each step that ended an episode
        (``done [T, b]``); as :meth:`RecurrentPolicies.replay <inspo.algos.networks.RecurrentPolicies.replay>`.
        With ``agents`` (``[b]``; needs ``agent_state``), each row is one agent's: ``obs [T, b, obs_dim]``,
        ``memory [b, hidden]``, values ``[T, b]``."""
        if agents is None:
            hidden = gru_replay(self.gru, self._first_layer(state, obs), done, memory, backend)
        elif self.agent_state:
            hidden = gru_replay(self.gru, self._first_layer(state, obs, agents)[:, :, None], done, memory[:, None],
                                backend)[:, :, 0]
        else:
            raise ValueError("RecurrentCritic.replay: rows of one agent each need agent_state=True (a value per agent)")
        values = self.out(torch.relu(self.fc(hidden))).squeeze(-1).to(self.out.weight.dtype)
        return values if agents is not None else values.expand(*state.shape[:-1], self.n_agents)


class ReturnNorm:
    """Running mean and variance of the critic's targets (batched Welford); identity until the first update and
    when disabled, so that one code path serves both settings."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.count, self.mean, self.var = enabled, 0.0, 0.0, 1.0

    def update(self, x: torch.Tensor) -> None:
        if not self.enabled:
            return
        n, mean, var = x.numel(), float(x.mean()), float(x.var(unbiased=False))
        total = self.count + n
        delta = mean - self.mean
        self.var = (self.var * self.count + var * n + delta * delta * self.count * n / total) / total
        self.mean, self.count = self.mean + delta * n / total, total

    @property
    def std(self) -> float:
        return math.sqrt(self.var) + 1e-8 if self.enabled else 1.0

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.enabled else x

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean if self.enabled else x
