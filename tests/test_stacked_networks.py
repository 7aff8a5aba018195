"""The stacked per-agent networks and their optimiser, in the layout the update ops take: a stacked FusedAdam is one
torch Adam per member, the batched forward is each agent's network alone, and old checkpoints load into the stack."""
from __future__ import annotations

import pytest
import torch

from _ops_helpers import HIDDEN, OBS, A, N
from inspo.algos.networks import AgentPolicies, StackedMLP
from inspo.algos.optim import BETAS, EPS, FusedAdam


def test_stacked_adam_equals_one_torch_adam_per_member() -> None:
    """A stacked FusedAdam stepping one member at a time is, bit for bit, a torch.optim.Adam(fused=True) per
    member: the other members do not move."""
    torch.manual_seed(0)
    net = StackedMLP(3, 4, 8, 2)
    members = [[p[k].detach().clone().requires_grad_() for p in net.stacked()] for k in range(3)]
    torch_opts = [torch.optim.Adam(m, lr=1e-2, betas=BETAS, eps=EPS, fused=True) for m in members]
    ours = FusedAdam(net.stacked(), lr=1e-2, stacked=True)
    g = torch.Generator().manual_seed(1)
    for k in [0, 2, 2, 1, 0, 2]:
        grads = [torch.randn(p.shape, generator=g) for p in members[k]]
        for p, grad in zip(members[k], grads):
            p.grad = grad
        torch_opts[k].step()
        ours.step(grads, k)
    for k in range(3):
        for p, q in zip(net.member(k), members[k]):
            assert torch.equal(p, q)
    assert ours.state()[2].tolist() == [2.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="one member at a time"):
        ours.step(grads)


def test_fused_adam_equals_torch_adam_on_batched_forward_gradients() -> None:
    """The gradients of the batched forward (baddbmm) come back transposed: FusedAdam must step as torch.optim.Adam
    does on them (a kernel that reads them as contiguous memory would mix up the elements)."""
    torch.manual_seed(0)
    theirs, ours = AgentPolicies(N, OBS, A, HIDDEN), AgentPolicies(N, OBS, A, HIDDEN)
    ours.load_state_dict(theirs.state_dict())
    torch_opt = torch.optim.Adam(theirs.parameters(), lr=1e-2, betas=BETAS, eps=EPS, fused=True)
    fused = FusedAdam(list(ours.parameters()), lr=1e-2)
    obs = torch.randn(32, N, OBS)
    for _ in range(3):
        torch_opt.zero_grad()
        theirs.all_logits(obs).pow(2).mean().backward()
        torch_opt.step()
        grads = torch.autograd.grad(ours.all_logits(obs).pow(2).mean(), fused.params)
        assert not all(g.is_contiguous() for g in grads)  # the case this test is about
        fused.step(grads)
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_policies_load_checkpoints_from_before_the_stacking() -> None:
    """A policy saved as one nn.Sequential per agent (``nets.<agent>.<layer>.weight``) loads into the stack."""
    torch.manual_seed(0)
    policy = AgentPolicies(N, OBS, A, HIDDEN)
    legacy = {f"nets.{k}.{2 * l}.{kind}": policy.nets.get_parameter(f"{kind}{l}")[k].clone()
              for k in range(N) for l in range(3) for kind in ("weight", "bias")}
    loaded = AgentPolicies(N, OBS, A, HIDDEN)
    loaded.load_state_dict(legacy)
    for name, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_batched_forward_equals_each_agent_alone() -> None:
    torch.manual_seed(0)
    obs = torch.randn(5, 7, N, OBS, dtype=torch.float64)
    for shared in (False, True):
        policy = AgentPolicies(N, OBS, A, HIDDEN, shared=shared).double()
        alone = torch.stack([policy.logits(obs[..., i, :], i) for i in range(N)], dim=-2)
        torch.testing.assert_close(policy.all_logits(obs), alone, rtol=1e-12, atol=1e-12)
