"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "alberdice"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public AlberDICE buffers (`../shared/data/alberdice` next to the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared AlberDICE data not found at {SHARED_DATA} (expected next to the repository)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Like ``inspo.train`` (``TrainConfig.threads = 1``): the learners driven directly here use small networks, and
    several intra-op threads on a busy machine cost far more in synchronisation than they gain."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
