"""The Markdown table of ``inspo bench train`` (:mod:`inspo.benchmarks.train`) from its report."""
from __future__ import annotations

import numpy as np

BACKENDS = ("fused", "torch")
"""The backends every case times; the ratios of the first table are torch / fused."""


def _speedup(result: dict, slow: str, fast: str) -> str:
    """Time of ``slow`` over time of ``fast`` in one case, from medians and (in parentheses) the fastest repeats."""
    b = result["backends"]
    return f"{b[slow]['median_s'] / b[fast]['median_s']:.2f}x ({b[slow]['min_s'] / b[fast]['min_s']:.2f}x)"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# InSPO training updates/s on {m['device']}: fused kernels vs pure PyTorch", "",
        f"`{report['command']}`", "",
        (f"{m['gpu']}; host " if m.get("gpu") else "") + f"{m['cpu']}, {m['threads']} torch threads, "
        f"torch {m['torch']}, Python {m['python']}; {report['started']} ({report['wall_s']:.0f} s). Load average "
        f"at start {m['loadavg_start']}, at end {m['loadavg_end']}: the machine is shared, so single numbers can be "
        "off by 20% or more.", "",
        "One update = `InSPO.update` on a sampled batch (critic step + sequential pass over every agent), default "
        "config otherwise (resample weighting, random order, 1 local-critic step). Median over repeats, the backends "
        "alternating; `ratio` = torch time / fused time, from medians and (in parentheses) from the fastest repeats, "
        "the least disturbed by other load. `peak MB`: " + (
            "torch.cuda.max_memory_allocated." if m["device"].startswith("cuda") else
            "growth of the peak resident set (VmHWM) during 5 updates over the resident set after warm-up, in a "
            "fresh process per case and backend (data, networks and optimiser states excluded)."), "",
        "| case | N | obs | state | A | hidden | batch | fused upd/s | torch upd/s | ratio | fused ms/upd | "
        "ms per agent (fused) | peak MB fused | peak MB torch | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mb = lambda b: "-" if b is None else f"{b / 2**20:.1f}"  # noqa: E731
    for r in report["results"]:
        f, t = r["backends"]["fused"], r["backends"]["torch"]
        lines.append(f"| {r['case']} | {r['n_agents']} | {r['obs_dim']} | {r['state_dim']} | {r['n_actions']} | "
                     f"{r['hidden']} | {r['batch_size']} | {f['updates_per_s']:.1f} | {t['updates_per_s']:.1f} | "
                     f"{_speedup(r, 'torch', 'fused')} | {f['median_s'] * 1e3:.2f} | "
                     f"{f['median_s'] * 1e3 / r['n_agents']:.2f} | "
                     f"{mb(f['peak_bytes'])} | {mb(t['peak_bytes'])} | {r['loadavg']:.1f} |")
    lines += roofline_section(report)
    if report.get("population"):
        lines += ["", "Populations (`--population P`): P members (seeds 0..P-1) trained as one stacked population "
                  "(`StackedInSPO`) against the same P runs one after another on the fused ops, the two taking turns "
                  "repeat by repeat; aggregate updates/s count one update per member.", "",
                  "| case | members | one after another upd/s | population upd/s | population / one after another |",
                  "|---|---:|---:|---:|---:|"]
        for r in report["population"]:
            lines.append(f"| {r['case']} | {r['members']} | {r['sequential']['updates_per_s']:.1f} | "
                         f"{r['stacked']['updates_per_s']:.1f} | {r['ratio']:.2f}x |")
    if "fused@base" in report["results"][0]["backends"]:
        lines += ["", f"Against the baseline learner `{report['args']['baseline']}`, timed in the same run: its "
                  "updates/s and the speed-up (its time / this version's time) per backend, from medians and (in "
                  "parentheses) from the fastest repeats.", "",
                  "| case | fused@base upd/s | torch@base upd/s | fused speed-up | torch speed-up | "
                  "torch@base / fused (before vs after) |", "|---|---:|---:|---:|---:|---:|"]
        for r in report["results"]:
            b = r["backends"]
            lines.append(f"| {r['case']} | {b['fused@base']['updates_per_s']:.1f} | "
                         f"{b['torch@base']['updates_per_s']:.1f} | {_speedup(r, 'fused@base', 'fused')} | "
                         f"{_speedup(r, 'torch@base', 'torch')} | {_speedup(r, 'torch@base', 'fused')} |")
    lines += ["", "The two halves of an update, each timed alone on one batch (ms, median over repeats, the backends "
              "taking "
              "turns): the critic step (fused: the `critic_update` op; torch: autograd on the critic losses) and the "
              "sequential pass over the agents (fused: the log-prob stack and the `sequential_update` op; torch: the "
              "Python loop on the reference kernels); the ratio is torch / fused.", "",
              "| case | critic fused | critic torch | ratio | pass fused | pass torch | ratio |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        f, t = r["parts"]["fused"], r["parts"]["torch"]
        lines.append(f"| {r['case']} | {f['critic']:.2f} | {t['critic']:.2f} | {t['critic'] / f['critic']:.2f}x | "
                     f"{f['pass']:.2f} | {t['pass']:.2f} | {t['pass'] / f['pass']:.2f}x |")
    if "fused+compile" in report["results"][0]["backends"]:
        lines += ["", "With `TrainConfig.compile` (torch.compile of the critic losses; compilation not timed), in the "
                  "same run: its updates/s and its speed-up over the fused backend without it, from medians and (in "
                  "parentheses) from the fastest repeats.", "",
                  "| case | fused+compile upd/s | vs fused | vs torch |", "|---|---:|---:|---:|"]
        for r in report["results"]:
            lines.append(f"| {r['case']} | {r['backends']['fused+compile']['updates_per_s']:.1f} | "
                         f"{_speedup(r, 'fused', 'fused+compile')} | {_speedup(r, 'torch', 'fused+compile')} |")
    scaling = [r for r in report["results"] if r["case"].startswith("n")]
    if len(scaling) >= 2:
        ns = np.array([r["n_agents"] for r in scaling], dtype=float)
        lines += ["", "Scaling (SMAX-sized networks; the state, hence the joint and local critics' input, grows as "
                  "26 N): "
                  "least-squares fits of ms per update against N, per backend: linear `a + b N` with the largest "
                  "relative deviation of a point from it, and quadratic `a + b N + c N^2`.", ""]
        for backend in BACKENDS:
            ms = np.array([r["backends"][backend]["median_s"] * 1e3 for r in scaling])
            b, a = np.polyfit(ns, ms, 1)
            dev = np.max(np.abs(ms - (a + b * ns)) / ms)
            line = f"- {backend}: linear a = {a:.1f} ms, b = {b:.1f} ms per agent, max deviation {100 * dev:.0f}%"
            if len(scaling) >= 3:
                c2, b2, a2 = np.polyfit(ns, ms, 2)
                line += f"; quadratic a = {a2:.1f}, b = {b2:.1f}, c = {c2:.2f} ms"
            lines.append(line)
    return "\n".join(lines) + "\n"


def roofline_section(report: dict) -> list[str]:
    """Every variant of every case against the machine's ceiling measured in the same run, and the speed-up of
    bfloat16 matrix products over float32 per backend."""
    lines = ["", "Roofline: `GFLOP/upd` counts the matrix products of one update from the layer shapes "
             "(`inspo.benchmarks.roofline`: forward, weight- and input-gradient products; multiply-add = 2 FLOPs); "
             "`ceiling` is the GFLOP/s of the same products alone, at the update's own shapes, in the variant's "
             "precision (float32 or bfloat16), measured in this run right after the case's updates; `of ceiling` = "
             "achieved / ceiling.", "",
             "| case | variant | GFLOP/upd | upd/s | ms/upd | GFLOP/s | ceiling GFLOP/s | of ceiling |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        for name, v in r["backends"].items():
            if "ceiling_fraction" not in v:
                continue
            lines.append(f"| {r['case']} | {name} | {r['gflop_per_update']:.3f} | {v['updates_per_s']:.1f} | "
                         f"{v['median_s'] * 1e3:.2f} | {v['gflops']:.1f} | "
                         f"{r['ceiling_gflops'][v['precision']]:.1f} | {100 * v['ceiling_fraction']:.0f}% |")
    if f"{BACKENDS[0]}+bf16" in report["results"][0]["backends"]:
        lines += ["", "bfloat16 matrix products (`--precision bf16`) against float32, per backend: time in float32 / "
                  "time in bf16, from medians and (in parentheses) from the fastest repeats; and the ratio of the "
                  "two ceilings (what the products alone gain).", "",
                  "| case | " + " | ".join(f"{b}: bf16 speed-up" for b in BACKENDS) + " | ceiling bf16 / fp32 |",
                  "|---|" + "---:|" * (len(BACKENDS) + 1)]
        for r in report["results"]:
            c = r["ceiling_gflops"]
            lines.append(f"| {r['case']} | " + " | ".join(_speedup(r, b, f"{b}+bf16") for b in BACKENDS)
                         + f" | {c['bf16'] / c['fp32']:.2f}x |")
    return lines
