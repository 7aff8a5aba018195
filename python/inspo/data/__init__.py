"""Offline datasets: the on-disk format, the PyMARL importer and the matrix-game generators."""
from __future__ import annotations

from inspo.data.format import FIELDS, FORMAT_VERSION, Dataset, DatasetError, load_dataset, save_dataset
from inspo.data.generate import MATRIX_PRESETS, generate_matrix
from inspo.data.pymarl import import_pymarl

__all__ = [
    "FIELDS",
    "FORMAT_VERSION",
    "MATRIX_PRESETS",
    "Dataset",
    "DatasetError",
    "generate_matrix",
    "import_pymarl",
    "load_dataset",
    "save_dataset",
]
