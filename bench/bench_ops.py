"""The same as ``inspo bench ops``: see :mod:`inspo.benchmarks.ops` (``python bench/bench_ops.py --help``)."""
import sys

from inspo.benchmarks.ops import main

if __name__ == "__main__":
    sys.exit(main(prog="python bench/bench_ops.py"))
