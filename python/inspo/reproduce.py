"""``inspo reproduce``: the known-answer tables (placeholder until the experiments land)."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="reproduce the known-answer tables")
    p.add_argument("suite", choices=["matrix"])
    p.set_defaults(func=lambda args: 0)
