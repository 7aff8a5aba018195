"""Loads the compiled extension and checks that it matches the installed torch."""
from __future__ import annotations

import torch

_REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps ."

try:
    from inspo import _C
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"inspo's compiled extension could not be loaded ({exc}). It is built by `{_REBUILD}` from the "
        f"source tree with torch already installed (torch {torch.__version__} is installed now)."
    ) from exc

if _C.torch_version() != torch.__version__:
    raise ImportError(
        f"inspo was built against torch {_C.torch_version()} but torch {torch.__version__} is installed; "
        f"rebuild it with `{_REBUILD}`"
    )


def built_with_cuda() -> bool:
    """Whether the CUDA kernels were compiled into this build."""
    return bool(_C.built_with_cuda())


def torch_version_built_against() -> str:
    """The torch version the extension was compiled against."""
    return str(_C.torch_version())
