"""The installed package: build facts, the torch-version guard, the command line entry point."""
from __future__ import annotations

import subprocess
import sys

import torch

import inspo


def test_build_facts() -> None:
    assert inspo.torch_version_built_against() == torch.__version__
    assert isinstance(inspo.built_with_cuda(), bool)
    assert hasattr(torch.ops.inspo, "advantage_weights")
    assert hasattr(torch.ops.inspo, "masked_softmax_stats")


def test_import_refuses_a_different_torch() -> None:
    # Pretend the installed torch changed after the build: the import must name both versions and the fix.
    code = "import torch; torch.__version__ = '0.0.1'; import inspo"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "built against torch" in proc.stderr and "0.0.1" in proc.stderr
    assert "pip install --no-build-isolation" in proc.stderr


def test_cli_entry_point_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "inspo.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "evaluate", "datasets", "reproduce"):
        assert command in proc.stdout
