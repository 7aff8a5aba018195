"""Networks shared by the algorithms: MLPs, per-agent categorical policies, joint and local critics."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class MLP(nn.Sequential):
    """Linear layers with ReLU between them: an ``nn.Sequential`` (same children, same ``state_dict`` keys) whose
    forward calls the layers' functions itself. A module call per layer costs more than the layer on the small
    batches and widths here, and a network runs several times per agent per iteration."""

    def forward(self, x: Tensor) -> Tensor:
        for layer in self:
            x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else torch.relu(x)
        return x


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> MLP:
    """``layers`` hidden ReLU layers of width ``hidden``."""
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    return MLP(*mods)


class AgentPolicies(nn.Module):
    """Categorical policies of N agents on their local observations.

    With ``shared=True`` one network serves every agent and receives a one-hot agent id next to the observation;
    otherwise each agent has its own network (the usual setting for sequential updates, where updating agent i
    must leave its teammates' policies untouched).
    """

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int, shared: bool = False) -> None:
        super().__init__()
        self.n_agents, self.shared = n_agents, shared
        in_dim = obs_dim + (n_agents if shared else 0)
        self.nets = nn.ModuleList([mlp(in_dim, hidden, n_actions) for _ in range(1 if shared else n_agents)])

    def logits(self, obs: Tensor, agent: int) -> Tensor:
        """Logits ``[..., A]`` of ``agent`` from its observations ``[..., obs_dim]``."""
        if not self.shared:
            return self.nets[agent](obs)
        ident = obs.new_zeros(*obs.shape[:-1], self.n_agents)
        ident[..., agent] = 1.0
        return self.nets[0](torch.cat([obs, ident], dim=-1))

    def all_logits(self, obs: Tensor) -> Tensor:
        """Logits ``[..., N, A]`` of every agent from observations ``[..., N, obs_dim]``."""
        return torch.stack([self.logits(obs[..., i, :], i) for i in range(self.n_agents)], dim=-2)

    def agent_parameters(self, agent: int) -> list[nn.Parameter]:
        """The parameters that an update of ``agent`` changes (all of them when shared)."""
        return list(self.nets[0 if self.shared else agent].parameters())


class JointCritic(nn.Module):
    """``Q(s, a)`` on the state and every agent's one-hot action: not a monotonic decomposition, since the XOR game
    needs a Q that is not monotonic in each agent's action."""

    def __init__(self, state_dim: int, n_agents: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.net = mlp(state_dim + n_agents * n_actions, hidden, 1)

    def forward(self, state: Tensor, actions: Tensor) -> Tensor:
        onehot = nn.functional.one_hot(actions, self.n_actions).to(state.dtype).flatten(-2)
        return self.net(torch.cat([state, onehot], dim=-1)).squeeze(-1)
