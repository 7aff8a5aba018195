"""Benchmark of the fused kernels (CPU, or CUDA with ``--device cuda``) against their references (docs/design.md
section 5).

For each op and shape it times our kernel, the eager reference (:mod:`inspo.reference`), ``torch.compile`` of the
reference, and ``clone()`` of the same inputs, the practical memory-bandwidth limit. Times are medians of repeats
after warm-up; "effective bytes" count what the op must read and write once (inputs it needs, outputs), so
``GB/s / clone GB/s`` says how close a run is to streaming its data at copy speed.

    inspo bench ops            # full grid (about 10 minutes on 2 cores); also: python bench/bench_ops.py
    inspo bench ops --quick    # B = 64k only, a few shapes, fewer repeats
    inspo bench ops --ops softmax --B 65536 --N 8 --A 16 --modes fwd

Writes ``<tag>.json`` and ``<tag>.md`` (atomically) to ``--out``: by default ``bench/results/`` of the source
checkout, or ``./bench_results`` when inspo is installed from a wheel. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import inspo.ops as ops
import inspo.reference as ref
from inspo import jsonio, precision, provenance
from inspo.checkpoint import write_text
from inspo.provenance import package_info, portable_path

_SOURCE = Path(__file__).resolve().parents[3]
CHECKOUT = _SOURCE if (_SOURCE / "pyproject.toml").is_file() else Path.cwd()
"""The repository root: the source checkout of an editable install; otherwise the working directory (e.g. a
checkout in which inspo was installed with ``pip install .``)."""
RESULTS = CHECKOUT / "bench" / "results"
if not RESULTS.is_dir():  # not a checkout
    RESULTS = Path("bench_results")
IMPLS = ("kernel", "eager", "compile", "clone")


def parse_args(argv=None, prog: str | None = None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="B=64k, N in {2, 8, 27} x A=16 / agent in {0, -1}, "
                                                        "5 repeats")
    p.add_argument("--ops", nargs="+", default=["weights", "softmax"], choices=["weights", "softmax"])
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    p.add_argument("--B", nargs="+", type=int, default=[1 << 10, 1 << 16, 1 << 20])
    p.add_argument("--N", nargs="+", type=int, default=[2, 8, 27])
    p.add_argument("--A", nargs="+", type=int, default=[5, 16, 32])
    p.add_argument("--agents", nargs="+", default=["single", "all"], choices=["single", "all"],
                   help="advantage weights for agent 0 ([B] outputs) or agent=-1 ([N, B])")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwdbwd"], choices=["fwd", "fwdbwd"],
                   help="softmax: forward only, or forward + backward")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per measurement (at most)")
    p.add_argument("--budget", type=float, default=1.5,
                   help="seconds per implementation and shape; slow cases get fewer repeats, never fewer than 3")
    p.add_argument("--max-elems", type=int, default=1 << 28,
                   help="skip softmax shapes with more logits than this (memory)")
    p.add_argument("--max-elems-ref", type=int, default=1 << 26,
                   help="time only the kernel and clone() on softmax shapes with more logits than this (the "
                        "references take seconds per call there)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda; on cuda every timed call is followed by a "
                                                   "synchronisation")
    p.add_argument("--tag", default=None, help="output file stem (default: <device>_<quick|full>)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.B, args.N, args.A, args.repeats = [1 << 16], [2, 8, 27], [16], min(args.repeats, 5)
    args.device = torch.device(args.device)
    args.tag = args.tag or f"{args.device.type}_{'quick' if args.quick else 'full'}"
    return args


def timeit(fns: dict, repeats: int, budget: float, sync=lambda: None) -> dict:
    """Median seconds per call of each fn() in fns. After warm-up, the repeats take turns round-robin, so that the
    load of a shared machine hits every implementation alike; a repeat is a batch of calls lasting >= 2 ms, ended by
    ``sync()`` (the device's queue drained, so that asynchronous launches are timed by their work)."""
    inner, once = {}, {}
    for name, fn in fns.items():
        fn()  # warm-up; torch.compile compiles here
        sync()
        t = time.perf_counter()
        fn()
        sync()
        once[name] = max(time.perf_counter() - t, 1e-7)
        inner[name] = max(1, math.ceil(2e-3 / once[name]))
    per_round = sum(once[k] * inner[k] for k in fns)
    n = int(max(3, min(repeats, budget / per_round)))
    samples = {k: [] for k in fns}
    for _ in range(n):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t) / inner[name])
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "repeats": n,
                "calls_per_repeat": inner[k]} for k, v in samples.items()}


def compiled(fn):
    # A fresh compiled wrapper per shape: the measurement includes no recompilation, and dynamo's guards on one
    # shape are exactly what a training loop with a fixed batch shape sees.
    torch._dynamo.reset()
    return torch.compile(fn)


def weights_case(B: int, N: int, agent: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator().manual_seed(0)
    lpi = torch.randn(N, B, generator=g, dtype=dtype) - 1.5
    lmu = torch.randn(N, B, generator=g, dtype=dtype) - 1.5
    q = torch.randn(N, B, generator=g, dtype=dtype)
    v = torch.randn(N, B, generator=g, dtype=dtype)
    mask = torch.rand(N, B, generator=g) < 0.9
    q, v, lpi, lmu, mask = (t.to(device) for t in (q, v, lpi, lmu, mask))
    args = (q, v, lpi, lmu, mask, agent, 1.0, 0.1, 10.0, 5.0)
    esize = lpi.element_size()
    rows_out = N if agent == -1 else 1
    rows_qv = N if agent == -1 else 1  # a single agent reads only its own row of the per-agent critic
    eff_bytes = B * N * (2 * esize + 1) + 2 * rows_qv * B * esize + 2 * rows_out * B * esize
    inputs = (q, v, lpi, lmu, mask)
    fns = {
        "kernel": lambda: ops.advantage_weights(*args),
        "eager": lambda: ref.advantage_weights(*args),
        "clone": lambda: [t.clone() for t in inputs],
    }
    return fns, args, eff_bytes, sum(t.numel() * t.element_size() for t in inputs)


def softmax_case(B: int, N: int, A: int, dtype: torch.dtype, mode: str, device: torch.device):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, N, A, generator=g, dtype=dtype) * 2
    avail = torch.rand(B, N, A, generator=g) < 0.8
    actions = torch.randint(0, A, (B, N), generator=g)
    avail.scatter_(-1, actions[..., None], True)
    g_logp = torch.randn(B, N, generator=g, dtype=dtype)
    g_ent = torch.randn(B, N, generator=g, dtype=dtype)
    logits, avail, actions, g_logp, g_ent = (t.to(device) for t in (logits, avail, actions, g_logp, g_ent))
    esize = logits.element_size()
    rows = B * N
    fwd_bytes = rows * A * (esize + 1) + rows * 8 + 2 * rows * esize
    bwd_bytes = rows * A * (2 * esize + 1) + rows * 8 + 2 * rows * esize
    inputs = (logits, avail, actions)
    if mode == "fwd":
        def run(f):
            return lambda: f(logits, avail, actions)
        eff_bytes = fwd_bytes
    else:
        x = logits.detach().clone().requires_grad_()

        def run(f):
            def step():
                logp, ent = f(x, avail, actions)
                torch.autograd.backward((logp, ent), (g_logp, g_ent))
                x.grad = None
            return step
        eff_bytes = fwd_bytes + bwd_bytes
        inputs = inputs + (g_logp, g_ent)
    fns = {
        "kernel": run(ops.masked_softmax_stats),
        "eager": run(ref.masked_softmax_stats),
        "clone": lambda: [t.clone() for t in inputs],
    }
    return fns, run, eff_bytes, sum(t.numel() * t.element_size() for t in inputs)


def machine_info(device: torch.device) -> dict:
    return {
        **provenance.machine_info(), "python": platform.python_version(), "torch": torch.__version__,
        "package": package_info(), "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_native": precision.native_bf16("cpu"),
        "loadavg_start": os.getloadavg(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def recorded_args(args: argparse.Namespace) -> dict:
    """The command's arguments as JSON, paths made portable."""
    def plain(v):
        if isinstance(v, Path):
            return portable_path(v)
        return str(v) if isinstance(v, torch.device) else v
    return {k: plain(v) for k, v in vars(args).items()}


def recorded_command(prog: str, argv: list[str]) -> str:
    """The command line as typed, absolute paths made portable."""
    return " ".join([prog, *(portable_path(Path(a)) if os.path.isabs(a) else a for a in argv)])


def new_report(prog: str, argv: list[str] | None, args: argparse.Namespace, device: torch.device) -> dict:
    """What a benchmark's report starts with: the command line, the time (UTC), the arguments and the machine."""
    return {"command": recorded_command(prog, sys.argv[1:] if argv is None else argv),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "args": recorded_args(args), "machine": machine_info(device)}


def close_report(report: dict, started: float) -> None:
    """Add the load average at the end and the wall time since ``started`` (``time.time()``)."""
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = time.time() - started


def publish(out: Path, stem: str, report: dict, md: str) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out``, each in one rename, and print the markdown."""
    jsonio.write(out / f"{stem}.json", report, indent=1)
    write_text(out / f"{stem}.md", md)
    print(md)


def fmt_ms(s):
    return "-" if s is None else f"{s * 1e3:.3f}"


def fmt_x(t: dict, impl: str) -> str:
    """impl's time over the kernel's: from medians, and in parentheses from minima (the least disturbed runs)."""
    if "kernel" not in t or impl not in t:
        return "-"
    return f"{t[impl]['median_s'] / t['kernel']['median_s']:.2f}x ({t[impl]['min_s'] / t['kernel']['min_s']:.2f}x)"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# inspo kernels vs references on {m['device']} ({report['tag']})", "",
        (f"{m['gpu']}; host " if m.get("gpu") else "")
        + f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}, Python {m['python']}; "
        f"{report['started']} ({report['wall_s']:.0f} s). Load average at start {m['loadavg_start']}, at end "
        f"{m['loadavg_end']}: the machine is shared, so single numbers can be off by 20% or more.", "",
        "Median ms per call. `vs eager` / `vs compile`: their time divided by the kernel's, from medians and (in "
        "parentheses) from the fastest repeats. `% clone`: the kernel's effective bandwidth (bytes it must read and "
        "write, once) as a share of `clone()` bandwidth on the same inputs (both from medians); clone pays the page "
        "faults of its fresh output. `torch.compile` compiles the reference as written (its input checks cause "
        "graph breaks). `load`: 1-minute load average when the shape was measured.", "",
    ]
    for key, title in (("weights", "advantage_weights"), ("softmax", "masked_softmax_stats")):
        rows = [r for r in report["results"] if r["op"] == key]
        if not rows:
            continue
        shape_col = "agent" if key == "weights" else "A"
        lines += [f"## {title}", "",
                  f"| dtype | mode | B | N | {shape_col} | kernel | eager | compile | vs eager | vs compile | "
                  "kernel GB/s | clone GB/s | % clone | load |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            t = r["times"]
            k, e, c = (t.get(i, {}).get("median_s") for i in ("kernel", "eager", "compile"))
            cl = t.get("clone", {}).get("median_s")
            kbw = r["eff_bytes"] / k / 1e9 if k else None
            cbw = 2 * r["clone_bytes"] / cl / 1e9 if cl else None
            pct = f"{100 * kbw / cbw:.0f}%" if kbw and cbw else "-"
            shape = r["agent"] if key == "weights" else r["A"]
            lines.append(f"| {r['dtype']} | {r['mode']} | {r['B']} | {r['N']} | {shape} | {fmt_ms(k)} | "
                         f"{fmt_ms(e)} | {fmt_ms(c)} | {fmt_x(t, 'eager')} | {fmt_x(t, 'compile')} | "
                         f"{'-' if kbw is None else f'{kbw:.1f}'} | {'-' if cbw is None else f'{cbw:.1f}'} | "
                         f"{pct} | {r['loadavg']:.1f} |")
        lines.append("")
    if report["kernel_only"]:
        lines += [f"Only kernel and clone timed (over --max-elems-ref = {report['args']['max_elems_ref']} logits): "
                  + ", ".join(report["kernel_only"]), ""]
    if report["skipped"]:
        lines += [f"Skipped (over --max-elems = {report['args']['max_elems']} logits): "
                  + ", ".join(report["skipped"]), ""]
    return "\n".join(lines)


def main(argv=None, prog: str = "inspo bench ops") -> int:
    args = parse_args(argv, prog)
    torch.set_num_threads(args.threads)
    torch._dynamo.config.cache_size_limit = 64
    started = time.time()
    report = {"tag": args.tag, "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "args": recorded_args(args),
              "machine": machine_info(args.device), "results": [], "skipped": [], "kernel_only": []}

    sync = (lambda: torch.cuda.synchronize(args.device)) if args.device.type == "cuda" else (lambda: None)

    def measure(label, fns, make_compiled, refs=True):
        chosen = {impl: fns[impl] if impl in fns else make_compiled() for impl in args.impls
                  if refs or impl not in ("eager", "compile")}
        times = timeit(chosen, args.repeats, args.budget * len(chosen), sync)
        print(f"  {label:<44} " + "  ".join(f"{k} {v['median_s'] * 1e3:.3f}" for k, v in times.items()) + " ms",
              flush=True)
        return times

    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        if "weights" in args.ops:
            for B in args.B:
                for N in args.N:
                    for agent_kind in args.agents:
                        agent = 0 if agent_kind == "single" else -1
                        fns, wargs, eff, clone_bytes = weights_case(B, N, agent, dtype, args.device)

                        def make():
                            f = compiled(ref.advantage_weights)
                            return lambda: f(*wargs)
                        times = measure(f"weights {dtype_name} B={B} N={N} agent={agent}", fns, make)
                        report["results"].append({"op": "weights", "dtype": dtype_name, "mode": "fwd", "B": B,
                                                  "N": N, "agent": agent, "eff_bytes": eff,
                                                  "clone_bytes": clone_bytes, "loadavg": os.getloadavg()[0],
                                                  "times": times})
                        del fns, wargs
        if "softmax" in args.ops:
            for mode in args.modes:
                for B in args.B:
                    for N in args.N:
                        for A in args.A:
                            label = f"softmax {dtype_name} {mode} B={B} N={N} A={A}"
                            if B * N * A > args.max_elems:
                                report["skipped"].append(f"{dtype_name} {mode} B={B} N={N} A={A}")
                                continue
                            fns, run, eff, clone_bytes = softmax_case(B, N, A, dtype, mode, args.device)
                            refs = B * N * A <= args.max_elems_ref
                            if not refs:
                                report["kernel_only"].append(f"{dtype_name} {mode} B={B} N={N} A={A}")
                            times = measure(label, fns, lambda: run(compiled(ref.masked_softmax_stats)), refs)
                            report["results"].append({"op": "softmax", "dtype": dtype_name, "mode": mode, "B": B,
                                                      "N": N, "A": A, "eff_bytes": eff,
                                                      "clone_bytes": clone_bytes,
                                                      "loadavg": os.getloadavg()[0], "times": times})
                            del fns, run
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = time.time() - started
    publish(args.out, args.tag, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
