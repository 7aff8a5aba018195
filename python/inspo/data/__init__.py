"""Offline datasets: the on-disk format, the PyMARL and vault importers, the matrix-game and SMAX generators and
the uniform random one for any environment."""
from __future__ import annotations

from inspo.data.format import (
    FIELDS,
    FORMAT_VERSION,
    SHIPPED_DATA,
    Dataset,
    DatasetError,
    dataset_digest,
    load_dataset,
    save_dataset,
)
from inspo.data.generate import MATRIX_PRESETS, generate_matrix
from inspo.data.pymarl import import_pymarl
from inspo.data.smax import SMAX_QUALITIES, generate_smax
from inspo.data.uniform import generate_uniform
from inspo.data.vault import export_vault, import_vault

__all__ = [
    "FIELDS",
    "FORMAT_VERSION",
    "MATRIX_PRESETS",
    "SHIPPED_DATA",
    "SMAX_QUALITIES",
    "Dataset",
    "DatasetError",
    "dataset_digest",
    "export_vault",
    "generate_matrix",
    "generate_smax",
    "generate_uniform",
    "import_pymarl",
    "import_vault",
    "load_dataset",
    "save_dataset",
]
