"""The parts of online MAPPO (`inspo.online`, `inspo.online_critics`) that need no environment: the critic's two
inputs, the running normalisation of its targets, the recurrent actor's and critic's memory, and the allocator
setting of `inspo online train`."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from inspo.algos.networks import RecurrentPolicies
from inspo.online_critics import Critic, RecurrentCritic, ReturnNorm
from inspo.policy import Policy


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


def _critic(agent_state: bool) -> tuple[Critic, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A critic of 3 agents, a batch of 5 states and observations, and its values ``[5, 3]``."""
    torch.manual_seed(0)
    critic = Critic(n_agents=3, obs_dim=4, state_dim=6, hidden=8, agent_state=agent_state)
    state, obs = torch.randn(5, 6), torch.randn(5, 3, 4)
    values = critic(state, obs)
    assert values.shape == (5, 3)
    return critic, state, obs, values


def test_world_state_critic_gives_every_agent_the_same_value() -> None:
    critic, state, obs, values = _critic(agent_state=False)
    torch.testing.assert_close(values, critic.net(state).expand(5, 3))
    assert torch.equal(critic(state, torch.zeros_like(obs)), values)  # observations are not its input


def test_agent_specific_critic_reads_each_agents_own_observation() -> None:
    critic, state, obs, values = _critic(agent_state=True)
    changed = obs.clone()
    changed[:, 1] += 1.0
    moved = critic(state, changed)
    assert torch.equal(moved[:, [0, 2]], values[:, [0, 2]]) and not torch.equal(moved[:, 1], values[:, 1])
    # The same observation in two agents' places still gives two values: the one-hot id is an input.
    same = obs[:, :1].expand(5, 3, 4)
    assert not torch.allclose(critic(state, same)[:, 0], critic(state, same)[:, 1])


def test_recurrent_actor_remembers_within_episodes_and_forgets_on_reset() -> None:
    torch.manual_seed(0)
    actor = RecurrentPolicies(n_agents=2, obs_dim=3, n_actions=4, hidden=8)
    obs = torch.randn(5, 2, 3)
    first = actor.all_logits(obs)
    second = actor.all_logits(obs)  # the same observation, a step later: the memory differs
    assert first.shape == (5, 2, 4) and not torch.allclose(first, second)
    torch.testing.assert_close(first, actor.step(obs, actor.initial_state(5))[0])
    actor.reset_state()
    assert torch.equal(actor.all_logits(obs), first)
    assert actor.all_logits(obs[:3]).shape == (3, 2, 4)  # another batch: new episodes, a fresh memory
    # Policy.reset starts new episodes too: the same calls, the same actions.
    policy = Policy(actor, {"env": "smax:3m"}, seed=0)
    policy.reset()
    played = [policy.act(obs.numpy()) for _ in range(3)]
    policy.reset()
    policy.generator.manual_seed(0)
    assert all(np.array_equal(a, b) for a, b in zip(played, [policy.act(obs.numpy()) for _ in range(3)]))


def test_recurrent_critic_remembers_and_gives_the_critics_values() -> None:
    torch.manual_seed(0)
    state, obs = torch.randn(5, 6), torch.randn(5, 3, 4)
    for agent_state in (False, True):
        critic = RecurrentCritic(n_agents=3, obs_dim=4, state_dim=6, hidden=8, agent_state=agent_state)
        memory = critic.initial_state(5)
        assert memory.shape == (5, 3 if agent_state else 1, 8)
        first, memory = critic.step(state, obs, memory)
        second, _ = critic.step(state, obs, memory)  # the same input a step later: the memory differs
        assert first.shape == (5, 3) and not torch.allclose(first, second)
        unseen, _ = critic.step(state, torch.zeros_like(obs), critic.initial_state(5))
        if agent_state:  # one value per agent, from its own observation and id
            assert not torch.equal(unseen, first) and not torch.allclose(first[:, 0], first[:, 1])
        else:  # the world state alone: one value, repeated for every agent
            assert torch.equal(unseen, first) and torch.equal(first, first[:, :1].expand(5, 3))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_serves_large_allocations_without_page_faults() -> None:
    # In a process of its own (the setting lasts for the process): a freed 64 MB array's pages serve the next one.
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from inspo.online_cli import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory()
        def faults():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            np.ones(64 << 20, dtype=np.uint8)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        faults()
        print(faults())
    """)
    def faults(how: str) -> int:
        return int(subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True,
                                  check=True).stdout)

    assert faults("keep") < 16 and faults("default") >= 32  # 64 MB is at least 32 huge pages, 16,384 small ones
