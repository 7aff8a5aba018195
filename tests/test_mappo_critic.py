"""The parts of online MAPPO (`inspo.online`) that need no environment: the critic's two inputs and the running
normalisation of its targets."""
from __future__ import annotations

import numpy as np
import torch

from inspo.online import Critic, ReturnNorm


def test_return_norm_matches_the_moments_of_everything_seen() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(8, 5)), rng.normal(-1.0, 0.5, size=(32, 5)), rng.normal(0.0, 9.0, size=(4,))]
    norm = ReturnNorm(True)
    for b in batches:
        norm.update(torch.as_tensor(b, dtype=torch.float64))
    seen = np.concatenate([b.ravel() for b in batches])
    assert norm.count == seen.size
    np.testing.assert_allclose([norm.mean, norm.var], [seen.mean(), seen.var()], rtol=1e-12)
    x = torch.as_tensor(seen)
    np.testing.assert_allclose(norm.normalise(x).numpy(), (seen - seen.mean()) / (seen.std() + 1e-8), rtol=1e-9)
    torch.testing.assert_close(norm.denormalise(norm.normalise(x)), x)


def test_disabled_return_norm_is_the_identity() -> None:
    norm = ReturnNorm(False)
    norm.update(torch.tensor([100.0, 300.0]))
    x = torch.tensor([1.5, -2.0])
    assert norm.std == 1.0 and torch.equal(norm.normalise(x), x) and torch.equal(norm.denormalise(x), x)


def test_world_state_critic_gives_every_agent_the_same_value() -> None:
    torch.manual_seed(0)
    critic = Critic(n_agents=3, obs_dim=4, state_dim=6, hidden=8, agent_state=False)
    state, obs = torch.randn(5, 6), torch.randn(5, 3, 4)
    values = critic(state, obs)
    assert values.shape == (5, 3)
    torch.testing.assert_close(values, critic.net(state).expand(5, 3))
    assert torch.equal(critic(state, torch.zeros_like(obs)), values)  # observations are not its input


def test_agent_specific_critic_reads_each_agents_own_observation() -> None:
    torch.manual_seed(0)
    critic = Critic(n_agents=3, obs_dim=4, state_dim=6, hidden=8, agent_state=True)
    state, obs = torch.randn(5, 6), torch.randn(5, 3, 4)
    values = critic(state, obs)
    assert values.shape == (5, 3)
    changed = obs.clone()
    changed[:, 1] += 1.0
    moved = critic(state, changed)
    assert torch.equal(moved[:, [0, 2]], values[:, [0, 2]]) and not torch.equal(moved[:, 1], values[:, 1])
    # The same observation in two agents' places still gives two values: the one-hot id is an input.
    same = obs[:, :1].expand(5, 3, 4)
    assert not torch.allclose(critic(state, same)[:, 0], critic(state, same)[:, 1])
