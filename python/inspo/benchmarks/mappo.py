"""Online MAPPO's recurrent update (``inspo bench mappo``): one PPO minibatch step of the recurrent actor and critic,
forward and backward, with ``gru_sequence``'s kernel (``fused``) against its PyTorch twin (``torch``) and against
the networks stepped one step at a time (``loop``), each with float32 and bfloat16 products, and the same run's
ceiling for the step's matrix products.

The default shapes are 5m_vs_6m's with the settings of the SMAX study's expert runs (JaxMARL's MAPPO): 128 steps of
32 episode rows (one of 4 minibatches of 128 parallel episodes), 5 agents, observation 140, world state 132, 11
actions, hidden 128, the critic reading the state with each agent's observation and id. Such a step is most of an
update's time: an update is 16 of them after 128 environment steps. The variants take turns repeat by repeat, so
that the load of a shared machine hits them alike; each number is the median over repeats after warm-up.

    inspo bench mappo                      # writes bench/results/mappo_cpu.{md,json} in a checkout
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from inspo import precision
from inspo.algos.networks import RecurrentPolicies
from inspo.benchmarks.ops import RESULTS, close_report, new_report, publish
from inspo.benchmarks.roofline import Gemm, ceiling, flops
from inspo.online_cli import keep_freed_memory
from inspo.online_critics import RecurrentCritic

VARIANTS = [(backend, p) for p in ("fp32", "bf16") for backend in ("fused", "torch", "loop")]
"""``fused``: the networks' ``replay`` on ``gru_sequence``'s kernel; ``torch``: the same on its PyTorch twin; ``loop``:
the networks' ``step`` called step by step (every layer per step), the way the update replayed rows before."""


def network_gemms(rows: int, steps: int, memories: int, in_dim: int, hidden: int, out_dim: int) -> list[Gemm]:
    """The products of one replay of a recurrent network ``in -> H -> GRU -> H -> out`` over ``steps`` steps of
    ``memories`` rows (``rows = steps * memories``), forward and backward: the layers around the cell and its input
    products on all rows at once, the cell's recurrent product per step (forward, and in the backward its input
    gradient and its weight gradient, which the kernel sums step by step)."""
    gemms = [Gemm("forward", rows, in_dim, hidden), Gemm("weight_grad", rows, in_dim, hidden)]
    for fan_in, fan_out in ((hidden, 3 * hidden), (hidden, hidden), (hidden, out_dim)):
        gemms += [Gemm(kind, rows, fan_in, fan_out) for kind in ("forward", "weight_grad", "input_grad")]
    return gemms + [Gemm(kind, memories, hidden, 3 * hidden, steps)
                    for kind in ("forward", "weight_grad", "input_grad")]


def measure(args: argparse.Namespace) -> dict:
    """Seconds per minibatch step of each variant (median and minimum over repeats) and the GEMM ceilings."""
    torch.manual_seed(0)
    t, b, n, h = args.steps, args.rows, args.agents, args.hidden
    actor = RecurrentPolicies(n, args.obs_dim, args.n_actions, h)
    critic = RecurrentCritic(n, args.obs_dim, args.state_dim, h, agent_state=True)
    obs, state = torch.randn(t, b, n, args.obs_dim), torch.randn(t, b, args.state_dim)
    done = (torch.rand(t, b) < 0.02).float()  # 5m_vs_6m's episodes last about 50 steps
    memory, critic_memory = torch.randn(b, n, h) * 0.1, torch.randn(b, n, h) * 0.1

    def step(backend: str, p: str) -> None:
        with precision.autocast(p, "cpu"):
            if backend == "loop":
                logits, values = stepped()
            else:
                logits = actor.replay(obs, done, memory, backend)
                values = critic.replay(state, obs, done, critic_memory, backend)
        (logits.square().mean() + values.square().mean()).backward()
        actor.zero_grad(set_to_none=True)
        critic.zero_grad(set_to_none=True)

    def stepped() -> tuple[torch.Tensor, torch.Tensor]:
        logits, values, m, cm = [], [], memory, critic_memory
        for s in range(t):
            out, m = actor.step(obs[s], m)
            value, cm = critic.step(state[s], obs[s], cm)
            logits.append(out)
            values.append(value)
            m, cm = (x * (1.0 - done[s])[:, None, None] for x in (m, cm))
        return torch.stack(logits), torch.stack(values)

    runs: dict[str, Callable[[], None]] = {f"{bk}+{p}": (lambda bk=bk, p=p: step(bk, p)) for bk, p in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.warmup + args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if repeat >= args.warmup:
                times[name].append(time.perf_counter() - started)
    gemms = (network_gemms(t * b * n, t, b * n, args.obs_dim + n, h, args.n_actions)
             + network_gemms(t * b * n, t, b * n, args.state_dim + args.obs_dim + n, h, 1))
    ceilings = {p: ceiling(gemms, torch.float32 if p == "fp32" else torch.bfloat16, torch.device("cpu"))
                for p in ("fp32", "bf16")}
    gflop = flops(gemms) / 1e9
    return {"gflop_per_step": gflop, "ceiling_gflops": ceilings,
            "variants": {name: {"median_s": statistics.median(ts), "min_s": min(ts), "times": ts}
                         for name, ts in times.items()}}


def markdown(report: dict) -> str:
    m, r, a = report["machine"], report["result"], report["args"]
    v = r["variants"]
    native = {True: "yes", False: "no"}.get(m.get("bf16_native"), "not known")
    lines = [
        "# Online MAPPO: one recurrent PPO minibatch step, gru_sequence's kernel vs its PyTorch twin and a step loop",
        "",
        f"`{report['command']}`", "",
        f"{m['cpu']} ({m['cpu_capability']}, bfloat16 instructions: {native}), {m['threads']} torch threads, "
        f"torch {m['torch']}, Python "
        f"{m['python']}; {report['started']} ({report['wall_s']:.0f} s). Load average at start {m['loadavg_start']},"
        f" at end {m['loadavg_end']}: on a shared machine single numbers can be off by 20% or more.", "",
        f"One step: the recurrent actor's and critic's replay of {a['steps']} steps x {a['rows']} episode rows x "
        f"{a['agents']} agents (observation {a['obs_dim']}, state {a['state_dim']}, {a['n_actions']} actions, hidden "
        f"{a['hidden']}), forward and backward, "
        + ("glibc's allocator as it is" if a["default_allocator"] else
           "freed memory kept for reuse as in `inspo online train` (`inspo.online_cli.keep_freed_memory`)")
        + f". Median over {a['repeats']} repeats (the variants alternating); "
        "ratios from medians and, in parentheses, from the fastest repeats. `GFLOP/step` counts the matrix products "
        "from the layer shapes (`inspo.benchmarks.mappo.network_gemms`); `ceiling` is the GFLOP/s of the same "
        "products alone in the variant's precision, measured in this run.", "",
        "| variant | ms/step | time / fused's | GFLOP/step | GFLOP/s | ceiling GFLOP/s | of ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|"]
    for name, t in v.items():
        backend, p = name.split("+")
        fused = v[f"fused+{p}"]
        ratio = (f"{t['median_s'] / fused['median_s']:.2f}x ({t['min_s'] / fused['min_s']:.2f}x)"
                 if backend != "fused" else "-")
        achieved = r["gflop_per_step"] / t["median_s"]
        lines.append(f"| {name} | {t['median_s'] * 1e3:.1f} | {ratio} | {r['gflop_per_step']:.2f} | {achieved:.1f} | "
                     f"{r['ceiling_gflops'][p]:.1f} | {100 * achieved / r['ceiling_gflops'][p]:.0f}% |")
    lines += ["", "bfloat16 products against float32, per backend (time in fp32 / time in bf16):", "",
              "| backend | bf16 speed-up | ceiling bf16 / fp32 |", "|---|---:|---:|"]
    for backend in ("fused", "torch", "loop"):
        slow, fast = v[f"{backend}+fp32"], v[f"{backend}+bf16"]
        lines.append(f"| {backend} | {slow['median_s'] / fast['median_s']:.2f}x ({slow['min_s'] / fast['min_s']:.2f}x)"
                     f" | {r['ceiling_gflops']['bf16'] / r['ceiling_gflops']['fp32']:.2f}x |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=128, help="rollout steps replayed")
    p.add_argument("--rows", type=int, default=32, help="episode rows of the minibatch")
    p.add_argument("--agents", type=int, default=5)
    p.add_argument("--obs-dim", type=int, default=140)
    p.add_argument("--state-dim", type=int, default=132)
    p.add_argument("--n-actions", type=int, default=11)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc's allocator as it is (inspo online train keeps freed memory: keep_freed_memory)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of mappo_cpu.{md,json}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "inspo bench mappo") -> int:
    args = parse_args(argv, prog)
    torch.set_num_threads(args.threads)
    if not args.default_allocator:
        keep_freed_memory()  # as `inspo online train` does
    started = time.time()
    report = new_report(prog, argv, args, torch.device("cpu"))
    report["result"] = measure(args)
    close_report(report, started)
    publish(args.out, "mappo_cpu", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
