"""Networks shared by the algorithms: MLPs, stacks of per-agent MLPs, per-agent categorical policies, the joint
critic.

Every MLP returns its output in its parameters' dtype: under autocast (``precision="bf16"``,
:mod:`inspo.precision`) its layers run in bfloat16, and what is computed from its output (losses, softmax and
log-sum-exp statistics) in the parameters' float32."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from inspo.algos.common import kernel_backend


class MLP(nn.Sequential):
    """Linear layers with ReLU between them: an ``nn.Sequential`` (same children, same ``state_dict`` keys) whose
    forward calls the layers' functions itself. A module call per layer costs more than the layer on the small
    batches and widths here, and a network runs several times per agent per iteration."""

    def forward(self, x: Tensor) -> Tensor:
        for layer in self:
            x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else torch.relu(x)
        return x.to(self[0].weight.dtype)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> MLP:
    """``layers`` hidden ReLU layers of width ``hidden``."""
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    return MLP(*mods)


class StackedMLP(nn.Module):
    """``n`` independent MLPs of one shape (ReLU between layers), their parameters stacked: ``weight{l}`` is
    ``[n, out, in]`` and ``bias{l}`` ``[n, out]``, so that all of them run as one batched matmul per layer, and one
    of them as the plain MLP on its slice. The layout the sequential-update op takes (docs/design.md 5.3)."""

    def __init__(self, n: int, in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> None:
        super().__init__()
        self.n, self.n_layers = n, layers + 1
        # Initialised as n separate MLPs, member after member: the same parameters, from the same seed, as before the
        # stacking (and as n calls of mlp()).
        members = [[layer for layer in mlp(in_dim, hidden, out_dim, layers) if isinstance(layer, nn.Linear)]
                   for _ in range(n)]
        for l in range(self.n_layers):
            for kind in ("weight", "bias"):
                stack = torch.stack([getattr(m[l], kind).data for m in members])
                self.register_parameter(f"{kind}{l}", nn.Parameter(stack))

    @property
    def in_features(self) -> int:
        return self.weight0.shape[-1]

    @property
    def out_features(self) -> int:
        return self.get_parameter(f"weight{self.n_layers - 1}").shape[1]

    def stacked(self) -> list[Tensor]:
        """``[weight0, bias0, weight1, ...]``: the op's parameter list."""
        return [self.get_parameter(f"{kind}{l}") for l in range(self.n_layers) for kind in ("weight", "bias")]

    def member(self, k: int) -> list[Tensor]:
        """Member ``k``'s parameters (views into the stacks), in :meth:`stacked`'s order."""
        return [p[k] for p in self.stacked()]

    def run(self, x: Tensor, params: list[Tensor]) -> Tensor:
        """The MLP of ``params`` (one member's, e.g. from :meth:`member`) on ``x [..., in]``."""
        for l in range(self.n_layers):
            x = F.linear(x, params[2 * l], params[2 * l + 1])
            if l < self.n_layers - 1:
                x = torch.relu(x)
        return x.to(params[0].dtype)

    def forward_member(self, x: Tensor, k: int) -> Tensor:
        """Member ``k`` on ``x [..., in]``."""
        return self.run(x, self.member(k))

    def forward(self, x: Tensor) -> Tensor:
        """Every member on its own input, ``x [n, rows, in] -> [n, rows, out]``."""
        for l in range(self.n_layers):
            x = torch.baddbmm(self.get_parameter(f"bias{l}").unsqueeze(1), x,
                              self.get_parameter(f"weight{l}").transpose(1, 2))
            if l < self.n_layers - 1:
                x = torch.relu(x)
        return x.to(self.weight0.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the stacking hold one nn.Sequential per member: "<k>.<2 l>.weight".
        legacy = f"{prefix}0.0.weight"
        if legacy in state_dict and f"{prefix}weight0" not in state_dict:
            for l in range(self.n_layers):
                for kind in ("weight", "bias"):
                    state_dict[f"{prefix}{kind}{l}"] = torch.stack(
                        [state_dict.pop(f"{prefix}{k}.{2 * l}.{kind}") for k in range(self.n)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AgentPolicies(nn.Module):
    """Categorical policies of N agents on their local observations.

    Each agent has its own network (the usual setting for sequential updates, where updating agent i must leave its
    teammates' policies untouched), all of them stacked in one :class:`StackedMLP` of N members; with
    ``shared=True`` one network (a stack of one) serves every agent and receives a one-hot agent id next to the
    observation.
    """

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int, shared: bool = False) -> None:
        super().__init__()
        self.n_agents, self.shared = n_agents, shared
        in_dim = obs_dim + (n_agents if shared else 0)
        self.nets = StackedMLP(1 if shared else n_agents, in_dim, hidden, n_actions)

    def member(self, agent: int) -> int:
        """The member of :attr:`nets` that holds ``agent``'s policy."""
        return 0 if self.shared else agent

    def _with_id(self, obs: Tensor, agent: int | None) -> Tensor:
        # The one-hot agent id of a shared network; agent None: obs is [..., N, obs_dim], one id per agent.
        if agent is None:
            ident = torch.eye(self.n_agents, dtype=obs.dtype, device=obs.device).expand(*obs.shape[:-1], -1)
        else:
            ident = obs.new_zeros(*obs.shape[:-1], self.n_agents)
            ident[..., agent] = 1.0
        return torch.cat([obs, ident], dim=-1)

    def logits(self, obs: Tensor, agent: int, params: list[Tensor] | None = None) -> Tensor:
        """Logits ``[..., A]`` of ``agent`` from its observations ``[..., obs_dim]``; ``params`` replaces its
        network's parameters (views from ``nets.member``, to take gradients with respect to them alone)."""
        x = self._with_id(obs, agent) if self.shared else obs
        return self.nets.run(x, self.nets.member(self.member(agent)) if params is None else params)

    def all_logits(self, obs: Tensor) -> Tensor:
        """Logits ``[..., N, A]`` of every agent from observations ``[..., N, obs_dim]`` (one batched forward)."""
        if self.shared:
            return self.nets.forward_member(self._with_id(obs, None), 0)
        lead = obs.shape[:-2]
        x = obs.reshape(-1, self.n_agents, obs.shape[-1]).transpose(0, 1)  # [N, rows, obs_dim]
        return self.nets(x).transpose(0, 1).reshape(*lead, self.n_agents, -1)


def gru_replay(gru: nn.GRUCell, x: Tensor, done: Tensor, state: Tensor, backend: str = "fused") -> Tensor:
    """The states ``[T, b, M, H]`` of ``gru`` over inputs ``x [T, b, M, in]`` (``M`` memories per episode row) from
    ``state [b, M, H]``, cleared after each step that ended a row's episode (``done [T, b]``). The input products of
    all steps are one matrix product (in bfloat16 under autocast); the recurrence runs in the parameters' dtype, in
    ``gru_sequence`` of :func:`~inspo.algos.common.kernel_backend` (``backend``: "fused" or "torch")."""
    steps, rows, m, hidden = *x.shape[:3], gru.hidden_size
    dtype = gru.weight_hh.dtype
    gi = F.linear(x, gru.weight_ih, gru.bias_ih).to(dtype).reshape(steps, rows * m, 3 * hidden)
    keep = (1.0 - done).to(dtype)[:, :, None].expand(steps, rows, m).reshape(steps, rows * m)
    with torch.autocast(x.device.type, enabled=False):
        memory = kernel_backend(backend).gru_sequence(gi, keep, state.to(dtype).reshape(rows * m, hidden),
                                                      gru.weight_hh, gru.bias_hh)
    return memory.view(steps, rows, m, hidden)


class RecurrentPolicies(nn.Module):
    """Categorical policies of N agents with memory: one network shared by the agents (one-hot agent id next to the
    observation, unless ``agent_id=False``), ``observation -> ReLU layer -> GRU cell -> ReLU layer -> logits``, the
    GRU's state carrying what an agent saw earlier in the episode. Online MAPPO's actor (``OnlineConfig.recurrent``).

    :meth:`step` is the function (``obs, state -> logits, state``); :meth:`all_logits` plays episodes the way the
    feed-forward :class:`AgentPolicies` does, keeping the state between calls: :meth:`reset_state` starts new
    episodes (a call with another batch shape starts them too)."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int, agent_id: bool = True) -> None:
        super().__init__()
        self.n_agents, self.n_actions, self.hidden, self.agent_id = n_agents, n_actions, hidden, agent_id
        self.inp = nn.Linear(obs_dim + (n_agents if agent_id else 0), hidden)
        self.gru = nn.GRUCell(hidden, hidden)
        self.fc = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, n_actions)  # registered last: online MAPPO scales the output layer at the start
        self._state: Tensor | None = None

    def initial_state(self, *lead: int) -> Tensor:
        """The state at the start of an episode, ``[*lead, N, hidden]`` zeros."""
        return torch.zeros(*lead, self.n_agents, self.hidden, dtype=self.out.weight.dtype,
                           device=self.out.weight.device)

    def _first_layer(self, obs: Tensor, agents: Tensor | None = None) -> Tensor:
        """The ReLU layer on each agent's observation and one-hot id (the observation alone without
        ``agent_id``), ``[..., N, hidden]``; with ``agents`` (``[rows]``, the agent of each row), on rows of one
        agent each, ``obs [..., rows, obs_dim]``."""
        if not self.agent_id:
            return torch.relu(self.inp(obs))
        ident = (torch.eye(self.n_agents, dtype=obs.dtype, device=obs.device) if agents is None
                 else F.one_hot(agents, self.n_agents).to(obs.dtype))
        return torch.relu(self.inp(torch.cat([obs, ident.expand(*obs.shape[:-1], -1)], dim=-1)))

    def step(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [..., N, obs_dim]``, ``state [..., N, hidden]`` -> (logits ``[..., N, A]``, next state)."""
        x = self._first_layer(obs)
        state = self.gru(x.reshape(-1, self.hidden), state.reshape(-1, self.hidden)).view_as(state)
        return self.out(torch.relu(self.fc(state))), state

    def replay(self, obs: Tensor, done: Tensor, state: Tensor, backend: str = "fused",
               agents: Tensor | None = None) -> Tensor:
        """Logits ``[T, b, N, A]`` of :meth:`step` played over ``T`` steps of ``b`` episode rows (``obs [T, b, N,
        obs_dim]``) from their states ``[b, N, hidden]``, a row's state cleared after each step that ended its
        episode (``done [T, b]``, 1.0 there). The same values as the steps taken one by one, to float rounding; only
        the recurrence runs step by step (:func:`inspo.ops.gru_sequence`), the layers around it on all steps at once,
        under the caller's autocast if any; ``backend`` as in :func:`gru_replay`.

        With ``agents`` (``[b]``), each row is one agent's (``obs [T, b, obs_dim]``, ``state [b, hidden]``,
        logits ``[T, b, A]``): the minibatches of agent rows that JaxMARL's MAPPO draws."""
        if agents is None:
            memory = gru_replay(self.gru, self._first_layer(obs), done, state, backend)
        else:
            memory = gru_replay(self.gru, self._first_layer(obs, agents)[:, :, None], done, state[:, None],
                                backend)[:, :, 0]
        return self.out(torch.relu(self.fc(memory))).to(self.out.weight.dtype)

    def reset_state(self) -> None:
        """Start new episodes at the next call of :meth:`all_logits`."""
        self._state = None

    def all_logits(self, obs: Tensor) -> Tensor:
        """Logits ``[..., N, A]`` of the next step of the episodes being played (see the class docstring)."""
        if self._state is None or self._state.shape[:-1] != obs.shape[:-1]:
            self._state = self.initial_state(*obs.shape[:-2])
        logits, self._state = self.step(obs, self._state)
        return logits


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
