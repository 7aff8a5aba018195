"""The `inspo online` command: `train` (online MAPPO, `inspo.online.train_online`) and `export` (the snapshots that
the SMAX data qualities use), and the allocator setting a training process makes for itself."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch

from inspo import flags, jsonio, online
from inspo.online import OnlineConfig, resumed_config, train_online

__all__ = ["add_parser", "keep_freed_memory"]


def keep_freed_memory() -> bool:
    """Have glibc keep the memory this process frees for its next allocations: no allocation is served by a fresh
    mapping and the heap is not trimmed. A recurrent PPO update allocates and frees tensors of tens of MB many times
    (the replay's gates and gradients); by default a block above glibc's mapping threshold (at most 32 MB) is a fresh
    mapping whose pages the kernel faults in one by one, and freed heap memory is handed back: 5-17% of a 5m_vs_6m
    minibatch step in two measurements (`inspo bench mappo`, with and without `--default-allocator`). The process
    then keeps its peak memory. Returns False where there is no glibc (nothing changed)."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # another C library
        return False


def _cmd_online(args: argparse.Namespace) -> int:
    if args.action == "export":
        from inspo.data.smax import export_policies

        index = export_policies(args.src, args.dst)
        print(jsonio.dumps({"out": args.dst, **index["exported_from"]}))
        return 0
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # this process is the run's own
    if args.resume:
        cfg = resumed_config(args.resume)
        if args.max_minutes is not None:  # a new sitting may get another time limit; nothing else changes
            cfg = replace(cfg, max_minutes=args.max_minutes)
    elif args.env is None or args.out is None:
        raise ValueError("inspo online train needs --env and --out (or --resume DIR)")
    else:
        cfg = flags.from_values(OnlineConfig, flags.values_from_args(OnlineConfig, args), "OnlineConfig")
    result = train_online(cfg, args.resume or args.out, progress=True, resume=bool(args.resume))
    last = result.snapshots[-1]
    print(jsonio.dumps({"out": result.out, "snapshots": len(result.snapshots), "env_steps": result.env_steps,
                      "wall_time_s": round(result.wall_time, 1), "final_return": last["return"],
                      "final_win_rate": last["win_rate"]}, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `inspo online train` on the CLI's sub-command parser."""
    p = sub.add_parser("online", help="train a SMAX policy online (MAPPO): the source of the SMAX data qualities")
    osub = p.add_subparsers(dest="action", required=True)
    q = osub.add_parser("train", help="MAPPO on smax:<map>; writes snapshots with their return and win rate",
                        description=online.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_flags(q, OnlineConfig)  # one flag per OnlineConfig field; --env is needed unless resuming
    q.add_argument("--out", help="folder of the snapshots (snapshots.json, snapshots/, policy.pt, checkpoint.pt)")
    q.add_argument("--resume", metavar="DIR", help="continue the run whose --out was DIR (other flags ignored but "
                                                   "--max-minutes and --threads)")
    q.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    q = osub.add_parser("export", help="copy the snapshots that the SMAX data qualities use to a small folder "
                                       "(what data/smax_policies/<map> ships)")
    q.add_argument("src", help="a folder written by inspo online train")
    q.add_argument("dst", help="where to write the exported file")
    p.set_defaults(func=_cmd_online)
