"""Seeded random inputs: kernels against their references, corrupted dataset files, random play in every
environment. Each case is reproducible from its seed (in the test id)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from inspo import ops, reference
from inspo.data import DatasetError, generate_matrix, load_dataset, save_dataset
from inspo.envs import make

KERNEL_CASES = 120
CORRUPTIONS = 150
ENV_EPISODES = 60


def _random_softmax_inputs(rng: random.Random, gen: torch.Generator):
    lead = tuple(rng.randint(1, 9) for _ in range(rng.randint(1, 3)))
    a = rng.randint(1, 20)
    avail = torch.rand(*lead, a, generator=gen) < rng.uniform(0.05, 1.0)
    # Every row needs one available action; force one at random where none came up.
    forced = torch.randint(a, lead, generator=gen)
    empty = ~avail.any(-1)
    avail[empty, forced[empty]] = True
    scale = rng.choice([1.0, 30.0, 1e4])
    logits = torch.randn(*lead, a, generator=gen, dtype=torch.float64) * scale
    logits = logits.masked_fill(~avail, rng.choice([0.0, float("inf"), float("nan"), -1e30]))
    choice = torch.multinomial(avail.reshape(-1, a).double(), 1, generator=gen).reshape(lead)
    return logits, avail, choice


@pytest.mark.parametrize("seed", range(KERNEL_CASES))
def test_masked_softmax_matches_reference_on_random_input(seed: int) -> None:
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    logits, avail, actions = _random_softmax_inputs(rng, gen)
    x_ref = logits.clone().requires_grad_(True)
    x_op = logits.clone().requires_grad_(True)
    lp_ref, h_ref = reference.masked_softmax_stats(x_ref, avail, actions)
    lp_op, h_op = ops.masked_softmax_stats(x_op, avail, actions)
    torch.testing.assert_close(lp_op, lp_ref, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(h_op, h_ref, rtol=1e-10, atol=1e-9)
    g1, g2 = torch.randn(lp_ref.shape, generator=gen, dtype=torch.float64), torch.randn(h_ref.shape, generator=gen,
                                                                                          dtype=torch.float64)
    (lp_ref * g1 + h_ref * g2).sum().backward()
    (lp_op * g1 + h_op * g2).sum().backward()
    assert torch.isfinite(x_op.grad).all()
    torch.testing.assert_close(x_op.grad, x_ref.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", range(KERNEL_CASES))
def test_advantage_weights_match_reference_on_random_input(seed: int) -> None:
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    n, b = rng.randint(1, 12), rng.randint(1, 300)
    f = lambda *shape, s=1.0: torch.randn(*shape, generator=gen, dtype=torch.float64) * s  # noqa: E731
    q = f(b, s=5.0) if rng.random() < 0.5 else f(n, b, s=5.0)
    v = f(b, s=5.0) if rng.random() < 0.5 else f(n, b, s=5.0)
    logp_pi, logp_mu = -f(n, b).abs() * 3, -f(n, b).abs() * 3
    mask = None if rng.random() < 0.4 else torch.rand(n, b, generator=gen) < 0.8
    agent = rng.randint(-1, n - 1)
    tau = rng.uniform(0.05, 3.0)
    beta = rng.uniform(0.0, tau)
    rho_max, z_max = rng.choice([1.0, 100.0, 1e6]), rng.choice([0.0, 10.0, 50.0])
    got = ops.advantage_weights(q, v, logp_pi, logp_mu, mask, agent, tau, beta, rho_max, z_max)
    want = reference.advantage_weights(q, v, logp_pi, logp_mu, mask, agent, tau, beta, rho_max, z_max)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_kernel_and_reference_name_the_same_bad_row(seed: int) -> None:
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    logits, avail, actions = _random_softmax_inputs(rng, gen)
    flat_avail, flat_actions = avail.view(-1, avail.shape[-1]), actions.view(-1)
    row = rng.randrange(flat_actions.numel())
    kind = rng.choice(["empty", "range", "unavailable"])
    if kind == "empty":
        flat_avail[row] = False
    elif kind == "range":
        flat_actions[row] = rng.choice([-1, avail.shape[-1], 10**6])
    elif bool((~flat_avail[row]).any()):
        flat_actions[row] = int((~flat_avail[row]).nonzero()[0, 0])
    else:
        flat_avail[row, flat_actions[row]] = False
        flat_avail[row, (flat_actions[row] + 1) % avail.shape[-1]] = True
        if avail.shape[-1] == 1:
            flat_avail[row] = False
    messages = []
    for fn in (reference.masked_softmax_stats, ops.masked_softmax_stats):
        with pytest.raises(ValueError, match=rf"row {row}\b") as info:
            fn(logits, avail, actions)
        messages.append(str(info.value).splitlines()[0])
    assert messages[0] == messages[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "mne"
    save_dataset(generate_matrix("mne", "mne-imbalanced", 40, seed=3), path)
    return path


def _corrupt(root: Path, rng: random.Random) -> str:
    """Damage one file of the dataset in `root` at random; return what was done."""
    files = sorted(root.iterdir())
    file = rng.choice(files)
    data = bytearray(file.read_bytes())
    kind = rng.choice(["flip", "truncate", "append", "delete", "swap"])
    if kind == "flip":
        pos = rng.randrange(len(data))
        data[pos] ^= rng.randint(1, 255)
        file.write_bytes(bytes(data))
    elif kind == "truncate":
        file.write_bytes(bytes(data[: rng.randrange(len(data))]))
    elif kind == "append":
        file.write_bytes(bytes(data) + bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 64))))
    elif kind == "delete":
        file.unlink()
    else:  # two files exchange their contents (same sizes are possible, e.g. terminated vs episode_start)
        other = rng.choice([f for f in files if f != file])
        other_data = other.read_bytes()
        if other_data == bytes(data):
            return _corrupt(root, rng)
        other.write_bytes(bytes(data))
        file.write_bytes(other_data)
    return f"{kind} {file.name}"


@pytest.mark.parametrize("seed", range(CORRUPTIONS))
def test_every_corruption_of_a_dataset_is_detected(saved: Path, tmp_path: Path, seed: int) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in saved.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    what = _corrupt(copy, random.Random(seed))
    try:
        load_dataset(copy)
    except DatasetError:
        return  # any other exception type fails the test too: users must get a DatasetError
    pytest.fail(f"corruption not detected: {what}")


@pytest.mark.parametrize("name,options", [("xor", {}), ("mne", {"episode_limit": 3}),
                                          ("bridge-alberdice", {"episode_limit": 20})])
def test_random_play_keeps_the_interface_contract(name: str, options: dict) -> None:
    env = make(name, **options)
    info = env.info
    rng = np.random.default_rng(0)
    for episode in range(ENV_EPISODES):
        obs, state, avail = env.reset(seed=episode)
        for t in range(1, info.episode_limit + 1):
            assert obs.shape == (info.n_agents, info.obs_dim) and obs.dtype == np.float32
            assert state.shape == (info.state_dim,) and avail.shape == (info.n_agents, info.n_actions)
            assert avail.any(axis=1).all()
            if rng.random() < 0.3:  # a bad joint action is refused and changes nothing
                bad = rng.integers(0, info.n_actions, info.n_agents)
                bad[rng.integers(info.n_agents)] = rng.choice([-1, info.n_actions])
                with pytest.raises(ValueError, match="out of range"):
                    env.step(bad)
                assert env.episode_step == t - 1
            actions = np.array([rng.choice(np.flatnonzero(avail[i])) for i in range(info.n_agents)])
            obs, state, avail, reward, terminated, truncated, _ = env.step(actions)
            assert np.isfinite(reward)
            if terminated or truncated:
                assert not (terminated and truncated)
                assert truncated == (t == info.episode_limit and not terminated)
                break
        else:
            pytest.fail(f"{name}: episode {episode} ran past its limit {info.episode_limit}")
        with pytest.raises(RuntimeError, match="after the episode ended"):
            env.step(actions)
