"""Sync-free iterations (issue 19): an InSPO iteration (critic step and sequential pass, both backends, every
variant of the pass) never reads a tensor on the host, and a non-finite loss is found by the trainer's deferred
check, every ``check_every`` iterations, with the range of iterations it happened in and the last checkpoint left at
the last checked state.

A host read of a tensor is one of ``item``, ``cpu``, ``tolist`` or a conversion to ``bool``/``float``/``int``;
patched to raise, any of them inside an iteration fails the test. On the CPU these reads cost nothing, but the same
code on CUDA would make the host wait for the device (and could not be captured as a CUDA graph).
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from _ops_helpers import DEVICES, VARIANTS, make_batch, make_learner
from inspo import checkpoint
from inspo.algos.inspo import InSPO
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.training import train

pytestmark = pytest.mark.usefixtures("one_thread")

HOST_READS = ("item", "cpu", "tolist", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def no_host_reads() -> Iterator[None]:
    """Every host read of a tensor raises inside the block."""
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def forbid(name: str):
        def read(self, *args: Any, **kwargs: Any):
            raise AssertionError(f"host read inside an iteration: Tensor.{name} of a {tuple(self.shape)} tensor")
        return read

    for name in HOST_READS:
        setattr(torch.Tensor, name, forbid(name))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def test_the_patch_catches_host_reads() -> None:
    t = torch.ones(())
    with no_host_reads():
        for read in (t.item, t.cpu, t.tolist, lambda: bool(t), lambda: float(t), lambda: int(t)):
            with pytest.raises(AssertionError, match="host read inside an iteration"):
                read()
    assert t.item() == 1.0


@pytest.mark.parametrize("backend", ["fused", "torch"])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
@pytest.mark.parametrize("device", DEVICES)
def test_iterations_read_nothing_back(device: str, variant: dict[str, Any], backend: str) -> None:
    learner = make_learner(torch.float32, backend=backend, device=device, **variant)
    assert learner.one_call_pass and learner.one_call_critic
    batches = [make_batch(k, learner.pi, torch.float32, device) for k in range(3)]
    before = [p.clone() for p in learner.pi_opt.params]
    with no_host_reads():
        for b in batches:
            learner.update(b)
    learner.check_finite()  # the deferred check: the one read, outside the iterations
    assert all(not torch.equal(p, q) for p, q in zip(learner.pi_opt.params, before))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "xor"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0), path)
    return path


@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_non_finite_loss_is_caught_at_the_next_check(dataset: Path, tmp_path: Path, backend: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The run stops at the first check after the loss went non-finite, names the loss and the unchecked
    iterations, and its checkpoint is the state after the last check that passed (all finite)."""
    every, poisoned = 4, 6
    update = InSPO.update

    def poison(self: InSPO, batch: Any) -> dict[str, Any]:
        # A NaN weight in the joint critic from the `poisoned`-th iteration on: every loss after it is NaN.
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == poisoned:
            with torch.no_grad():
                next(self.q.parameters()).fill_(float("nan"))
        return update(self, batch)

    monkeypatch.setattr(InSPO, "update", poison)
    cfg = TrainConfig(dataset=str(dataset), iters=200, bc_steps=10, eval_every=100, backend=backend,
                      eval_episode_limit=1, out=str(tmp_path / "nan"), checkpoint_every=1, check_every=every)
    with pytest.raises(FloatingPointError) as info:
        train(cfg)
    message = str(info.value)
    # Checkpoints are written after every iteration here, each right after a passing check: one iteration unchecked.
    match = re.search(r"^non-finite (q_loss|v_loss|local_q_loss|policy_loss) .* at iteration (\d+);", message)
    assert match, message
    first = int(match.group(2))
    assert first == poisoned
    state = checkpoint.load(tmp_path / "nan" / "checkpoint.pt")
    assert state["run"]["step"] == cfg.bc_steps + first - 1
    params = [t for net in ("pi", "q", "v", "local_q") for t in state["learner"][net].values()]
    assert params and all(torch.isfinite(t).all() for t in params)


def test_checks_every_k_iterations_without_checkpoints(dataset: Path) -> None:
    """Without checkpoints to write, only every ``check_every``-th iteration (and the evaluations) checks: the
    failure names the whole range since the last check."""
    cfg = TrainConfig(dataset=str(dataset), iters=200, bc_steps=10, lr_critic=1e5, eval_every=100,
                      eval_episode_limit=1, check_every=8)
    with pytest.raises(FloatingPointError, match=r"non-finite .* (in iterations (\d+)\.\.(\d+)|at iteration \d+)") \
            as info:
        train(cfg)
    match = re.search(r"in iterations (\d+)\.\.(\d+)", str(info.value))
    if match:  # found at a check: the range is one check interval (or ends where an error broke an iteration)
        first, last = int(match.group(1)), int(match.group(2))
        assert (first - 1) % 8 == 0 and last - first < 8
