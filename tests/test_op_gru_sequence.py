"""Op 5, ``gru_sequence`` (docs/design.md 5.7): a GRU cell's recurrence over rollout rows with episode ends. Forward
and backward against the reference twin and against ``torch.nn.GRUCell`` stepped by hand, PyTorch's op tooling
(opcheck, gradcheck), bad input, and the recurrent MAPPO networks' ``replay`` that runs on it."""
from __future__ import annotations

import pytest
import torch

import inspo.ops as ops
import inspo.reference as ref
from inspo.algos.networks import RecurrentPolicies
from inspo.online_critics import RecurrentCritic

# (T, R, H): H below, at and past one vector of either precision and not a multiple of it; a single step; one row.
SHAPES = [(1, 1, 1), (5, 3, 4), (7, 5, 11), (3, 2, 8), (4, 6, 33), (16, 1, 128)]


def _inputs(t: int, r: int, h: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep = (torch.rand(t, r, generator=g) > 0.3).to(dtype)  # about a third of the steps end an episode
    return [torch.randn(t, r, 3 * h, generator=g, dtype=dtype).requires_grad_(), keep,
            torch.randn(r, h, generator=g, dtype=dtype).requires_grad_(),
            (torch.randn(3 * h, h, generator=g, dtype=dtype) / h ** 0.5).requires_grad_(),
            torch.randn(3 * h, generator=g, dtype=dtype).requires_grad_()]


def _fwd_bwd(fn, args: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
    out = fn(*args)
    return [out, *torch.autograd.grad(out, [args[i] for i in (0, 2, 3, 4)], grad)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference_forward_and_backward(shape, dtype):
    args = _inputs(*shape, dtype)
    grad = torch.randn(shape[0], shape[1], shape[2], generator=torch.Generator().manual_seed(1), dtype=dtype)
    got, want = _fwd_bwd(ops.gru_sequence, args, grad), _fwd_bwd(ref.gru_sequence, args, grad)
    tol = 2e-5 if dtype == torch.float32 else 1e-12
    for name, k, r in zip(("hs", "d_gi", "d_h0", "d_w_hh", "d_b_hh"), got, want):
        torch.testing.assert_close(k, r, rtol=tol, atol=tol, msg=name)


def test_reference_is_a_grucell_cleared_at_episode_ends():
    # The twin's definition, checked against PyTorch's own cell: hs[t] is the cell's output, and the next step
    # starts from it times keep[t].
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(3, 5)
    x, keep, h = torch.randn(6, 4, 3), (torch.rand(6, 4) > 0.4).float(), torch.randn(4, 5)
    gi = torch.nn.functional.linear(x, cell.weight_ih, cell.bias_ih)
    hs = ops.gru_sequence(gi, keep, h, cell.weight_hh, cell.bias_hh)
    with torch.no_grad():
        for t in range(6):
            h = cell(x[t], h)
            torch.testing.assert_close(hs[t], h)
            h = h * keep[t, :, None]
    assert (keep == 0).any() and (keep == 1).any()


def test_gradcheck():
    for shape in ((3, 2, 4), (5, 3, 9), (1, 2, 3)):
        assert torch.autograd.gradcheck(ops.gru_sequence, _inputs(*shape, torch.float64))


def test_opcheck():
    gi, keep, h0, w, b = _inputs(4, 3, 5, torch.float64)
    torch.library.opcheck(torch.ops.inspo.gru_sequence.default, (gi, keep, h0, w, b))
    hs, saved = torch.ops.inspo.gru_sequence.default(gi.detach(), keep, h0.detach(), w.detach(), b.detach())
    torch.library.opcheck(torch.ops.inspo.gru_sequence_backward.default,
                          (torch.randn_like(hs), saved, hs, keep, h0.detach(), w.detach()))


def test_bad_input_names_the_value():
    gi, keep, h0, w, b = (x.detach() for x in _inputs(4, 3, 5, torch.float32))
    cases = [((gi[:, :, :-1], keep, h0, w, b), r"gi must be \[T, R, 3H\] with R=3, H=5, got shape \[4, 3, 14\]"),
             ((gi, keep[:, :2], h0, w, b), r"keep must be \[T, R\]=\[4, 3\], got shape \[4, 2\]"),
             ((gi, keep, h0, w[:, :4], b), r"w_hh must be \[3H, H\]=\[15, 5\], got shape \[15, 4\]"),
             ((gi, keep, h0, w, b[:3]), r"b_hh must be \[3H\]=\[15\], got shape \[3\]"),
             ((gi, keep, h0[0], w, b), r"h0 must be \[R, H\], got shape \[5\]")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            ops.gru_sequence(*args)
    with pytest.raises(TypeError, match="keep has dtype Double but h0 has Float"):
        ops.gru_sequence(gi, keep.double(), h0, w, b)
    with pytest.raises(TypeError, match="h0 must be float32 or float64, got Half"):
        ops.gru_sequence(gi.half(), keep.half(), h0.half(), w.half(), b.half())


@pytest.mark.parametrize("agent_state", [False, True])
def test_replay_is_the_steps_taken_one_by_one(agent_state):
    # What MAPPO's update relies on: replaying rollout rows gives the rollout's outputs, the memory cleared after
    # each step that ended an episode; in bfloat16 products within their rounding.
    torch.manual_seed(0)
    t, b, n = 6, 4, 3
    actor = RecurrentPolicies(n_agents=n, obs_dim=5, n_actions=4, hidden=16)
    critic = RecurrentCritic(n_agents=n, obs_dim=5, state_dim=7, hidden=16, agent_state=agent_state)
    obs, state, done = torch.randn(t, b, n, 5), torch.randn(t, b, 7), torch.zeros(t, b)
    done[1, 0] = done[3, 2] = 1.0
    memory, critic_memory = torch.randn(b, n, 16), critic.initial_state(b) + 0.5
    logits, values = actor.replay(obs, done, memory), critic.replay(state, obs, done, critic_memory)
    with torch.no_grad():
        stepped_logits, stepped_values = [], []
        for s in range(t):
            out, memory = actor.step(obs[s], memory)
            value, critic_memory = critic.step(state[s], obs[s], critic_memory)
            stepped_logits.append(out)
            stepped_values.append(value)
            memory, critic_memory = (m * (1.0 - done[s])[:, None, None] for m in (memory, critic_memory))
    torch.testing.assert_close(logits, torch.stack(stepped_logits))
    torch.testing.assert_close(values, torch.stack(stepped_values))
    # Rows of one agent each (minibatch_rows "agents"): the same outputs, picked.
    rows, agents = torch.tensor([2, 0, 3, 2]), torch.tensor([1, 2, 0, 0])
    memory, critic_memory = torch.randn(b, n, 16), critic.initial_state(b) + 0.5
    full = actor.replay(obs, done, memory)[:, rows, agents]
    picked = actor.replay(obs[:, rows, agents], done[:, rows], memory[rows, agents], agents=agents)
    torch.testing.assert_close(picked, full)
    if agent_state:
        full = critic.replay(state, obs, done, critic_memory)[:, rows, agents]
        picked = critic.replay(state[:, rows], obs[:, rows, agents], done[:, rows], critic_memory[rows, agents],
                               agents=agents)
        torch.testing.assert_close(picked, full)
    else:
        with pytest.raises(ValueError, match="rows of one agent each need agent_state=True"):
            critic.replay(state[:, rows], obs[:, rows, agents], done[:, rows], critic_memory[rows, 0], agents=agents)
    start = actor.initial_state(b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = actor.replay(obs, done, start)
    assert low.dtype == torch.float32
    assert 0 < (low - actor.replay(obs, done, start)).abs().max() < 0.05


def test_backward_refuses_mismatched_records():
    gi, keep, h0, w, b = (x.detach() for x in _inputs(4, 3, 5, torch.float32))
    hs, saved = torch.ops.inspo.gru_sequence.default(gi, keep, h0, w, b)
    grad = torch.ones_like(hs)
    with pytest.raises(ValueError, match=r"hs must be \[T, R, H\] with R=3, H=5, got shape \[4, 2, 5\]"):
        torch.ops.inspo.gru_sequence_backward.default(grad[:, :2], saved, hs[:, :2], keep, h0, w)
    with pytest.raises(ValueError, match=r"keep must be \[T, R\]=\[4, 3\], got shape \[3, 3\]"):
        torch.ops.inspo.gru_sequence_backward.default(grad, saved, hs, keep[:3], h0, w)
    with pytest.raises(TypeError, match="saved has dtype Double but h0 has Float"):
        torch.ops.inspo.gru_sequence_backward.default(grad, saved.double(), hs, keep, h0, w)
