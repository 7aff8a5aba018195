"""Benchmarks against the pure-PyTorch path (``inspo bench``): :mod:`inspo.benchmarks.ops` times the kernels,
:mod:`inspo.benchmarks.train` InSPO updates per second end to end, :mod:`inspo.benchmarks.workers` the same updates
in dask's worker processes, :mod:`inspo.benchmarks.mappo` online MAPPO's recurrent update.
Modules are imported only when a benchmark runs."""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {"ops": "the fused kernels against their references", "train": "InSPO updates/s, fused vs PyTorch",
              "workers": "InSPO updates in this process and in dask workers",
              "mappo": "online MAPPO's recurrent minibatch step, gru_sequence fused vs PyTorch, fp32 and bf16"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``inspo bench ops|train [options]`` (``inspo bench train --help`` lists a benchmark's options)."""
    p = sub.add_parser("bench", help="benchmarks: " + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    p.add_argument("which", choices=list(BENCHMARKS), help="which benchmark to run")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    p.set_defaults(func=lambda args: importlib.import_module(f"inspo.benchmarks.{args.which}").main(
        args.options, prog=f"inspo bench {args.which}"))
