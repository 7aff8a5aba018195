"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inspo.provenance import machine_info

ALBERDICE = Path(__file__).resolve().parent.parent / "data" / "alberdice"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public AlberDICE PyMARL buffers shipped in `data/alberdice` (checked against its SHA256SUMS on import)."""
    return ALBERDICE


@pytest.fixture(scope="session")
def this_machine() -> str:
    """How the reproduce tables name this machine: its CPU and the instruction set torch uses, which tell the two
    machine types apart that make different SMAX data (``docs/design.md`` 4.4)."""
    return f"{machine_info()['cpu']} ({torch.backends.cpu.get_cpu_capability()})"


@pytest.fixture
def one_thread():
    """Like ``inspo.train`` (``TrainConfig.threads = 1``): the learners driven directly here use small networks, and
    several intra-op threads on a busy machine cost far more in synchronisation than they gain."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
