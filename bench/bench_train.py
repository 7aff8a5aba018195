"""The same as ``inspo bench train``: see :mod:`inspo.benchmarks.train` (``python bench/bench_train.py --help``)."""
import sys

from inspo.benchmarks.train import main

if __name__ == "__main__":
    sys.exit(main(prog="python bench/bench_train.py"))
