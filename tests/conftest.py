"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "alberdice"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public AlberDICE buffers (`../shared/data/alberdice` next to the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared AlberDICE data not found at {SHARED_DATA} (expected next to the repository)")
    return SHARED_DATA
