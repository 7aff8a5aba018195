"""How the extension is built: the CUDA sources compile (nvcc, no GPU needed), and a build without them says how to
rebuild when it meets a CUDA tensor."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import inspo
from inspo import ops

ROOT = Path(__file__).resolve().parent.parent


def _cmake_326() -> tuple[str | None, str]:
    """A cmake >= 3.26, preferring the one next to this Python (the venv's), and why none was found."""
    candidates = [Path(sys.executable).parent / "cmake", shutil.which("cmake")]
    seen = []
    for c in candidates:
        if c is None or not Path(c).exists():
            continue
        out = subprocess.run([str(c), "--version"], capture_output=True, text=True).stdout
        m = re.search(r"version (\d+)\.(\d+)", out)
        if m and (int(m[1]), int(m[2])) >= (3, 26):
            return str(c), ""
        seen.append(f"{c} ({m[0] if m else 'unknown version'})")
    return None, "no cmake >= 3.26 (CUDA builds need it); found: " + (", ".join(seen) or "none")


def test_cuda_sources_compile(tmp_path):
    """Every CUDA source compiles (nvcc for sm_80 and sm_90, host side with the C++ compiler), warnings as errors,
    against the installed torch's headers; see .ci/cuda_compile_check.sh. About 30-60 s on two cores."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")
    cmake, why = _cmake_326()
    if cmake is None:
        pytest.skip(why)
    env = dict(os.environ, PYTHON=sys.executable, CMAKE=cmake, INSPO_CUDA_ARCHITECTURES="80;90")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's ninja, if any
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "cuda_compile_check.sh"), str(tmp_path / "build")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"CUDA compile check failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    assert "compiled for architectures 80;90" in proc.stdout


def test_cuda_tensor_on_a_cpu_only_build_names_the_rebuild() -> None:
    if inspo.built_with_cuda():
        pytest.skip("this build has its CUDA kernels")
    with pytest.raises(RuntimeError, match="built without its CUDA kernels.*INSPO_CUDA=ON"):
        ops._check_cuda_build(types.SimpleNamespace(is_cuda=True))
