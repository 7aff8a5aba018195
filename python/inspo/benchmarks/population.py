"""Population benchmark: aggregate InSPO updates per second of P members trained as one stacked population
(:class:`~inspo.algos.stacked.StackedInSPO`) against the same P members run one after another (their ordinary
learners on the fused ops, as P single runs would).

Cases as in :mod:`inspo.benchmarks.train`: ``bridge`` (the shipped ``data/bridge_mix``, hidden 64, batch 256) and
``smax`` (SMAX-sized synthetic data: 5 agents, hidden 256, batch 256). Member p is built as the trainer builds a
run of seed p and draws its batches from its own generator; drawing the batches is not timed (stacking them is: it
is part of the population's update). The two ways take turns repeat by repeat, so that the load of a shared machine
hits both alike; each number is the median over repeats after warm-up. Aggregate updates/s counts one update per
member: P / (seconds of one iteration of all members).

    python -m inspo.benchmarks.population                       # bridge and smax, P = 8, 1 and 2 threads
    python -m inspo.benchmarks.population --cases bridge --threads 1 --profile

Prints a markdown table (and, with ``--profile``, a torch.profiler table of the population's update per case).
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from inspo.algos.batch import Batch, behaviour_log_probs
from inspo.algos.bc import BehaviourCloning
from inspo.algos.inspo import InSPO
from inspo.algos.stacked import StackedInSPO
from inspo.benchmarks.cases import BATCH_FIELDS, case_setup
from inspo.config import TrainConfig


class Member:
    """Member ``seed`` of a population on a case's data, built as the trainer builds the run of that seed (behaviour
    cloning is not run: its policy as initialised serves as mu)."""

    def __init__(self, seed: int, data: dict, sizes: dict, overrides: dict, device: torch.device) -> None:
        cfg = TrainConfig(dataset="-", seed=seed, device=str(device), **overrides)
        torch.manual_seed(seed)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        bc = BehaviourCloning(cfg, sizes["n_agents"], sizes["obs_dim"], sizes["n_actions"], device)
        self.data = dict(data)
        logmu_all = behaviour_log_probs(bc.policy, data["obs"], data["avail"])
        self.data["logmu_all"] = logmu_all
        self.logp_mu = logmu_all.gather(-1, data["actions"][..., None]).squeeze(-1).t().contiguous()
        self.learner = InSPO(cfg, bc.policy, sizes["state_dim"], device, self.gen)
        self.rows, self.batch_size = data["obs"].shape[0], cfg.batch_size

    def batch(self) -> Batch:
        idx = torch.randint(self.rows, (self.batch_size,), generator=self.gen, device=self.gen.device)
        return Batch(**{k: self.data[k][idx] for k in BATCH_FIELDS}, logp_mu=self.logp_mu[:, idx])


def measure_population(case: str, members: int = 8, threads: int = 1, repeats: int = 5,
                       repeat_seconds: float = 0.5, warmup: int = 3, rows: int = 20000,
                       device: str = "cpu", profile: bool = False, chunk: int | None = None) -> dict:
    """Seconds per iteration of ``members`` members stacked and run one after another on ``case`` with ``threads``
    torch threads; their aggregate updates/s and the ratio (stacked over sequential). ``chunk``: stack the members
    in populations of this many, updated one after another (default: all in one)."""
    device = torch.device(device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data, sizes, overrides = case_setup(case, rows, device)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        singles = [Member(seed, data, sizes, overrides, device) for seed in range(members)]
        stacked = [Member(seed, data, sizes, overrides, device) for seed in range(members)]
        chunk = chunk or members
        parts = [(StackedInSPO([m.learner for m in stacked[s:s + chunk]]), slice(s, s + chunk))
                 for s in range(0, members, chunk)]

        def one_after_another(count: int) -> float:
            spent = 0.0
            for _ in range(count):
                batches = [m.batch() for m in singles]
                sync()
                t = time.perf_counter()
                for m, b in zip(singles, batches):
                    m.learner.update(b)
                sync()
                spent += time.perf_counter() - t
            return spent

        def as_population(count: int) -> float:
            spent = 0.0
            for _ in range(count):
                batches = [m.batch() for m in stacked]
                sync()
                t = time.perf_counter()
                for population, mine in parts:
                    population.update(batches[mine])
                sync()
                spent += time.perf_counter() - t
            return spent

        ways = {"sequential": one_after_another, "stacked": as_population}
        once = {}
        for name, run in ways.items():
            run(warmup)
            once[name] = run(2) / 2
        per_repeat = max(2, round(repeat_seconds / min(once.values())))
        samples: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(repeats):
            for name, run in ways.items():
                samples[name].append(run(per_repeat) / per_repeat)
        if profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                as_population(3)
            print(f"--- {case}, {members} members stacked, {threads} thread(s): torch.profiler, 3 iterations")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    finally:
        torch.set_num_threads(previous)
    out = {"case": case, **sizes, "hidden": singles[0].learner.cfg.hidden, "batch_size": singles[0].batch_size,
           "members": members, "chunk": chunk, "threads": threads, "iterations_per_repeat": per_repeat,
           "repeats": repeats}
    for name, s in samples.items():
        med = statistics.median(s)
        out[name] = {"median_s": med, "min_s": min(s), "max_s": max(s), "updates_per_s": members / med}
    out["ratio"] = out["sequential"]["median_s"] / out["stacked"]["median_s"]
    return out


def markdown(results: list[dict]) -> str:
    """The results as a markdown table."""
    lines = ["| case | members | stacked by | threads | sequential upd/s | stacked upd/s | stacked / sequential |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['case']} | {r['members']} | {r['chunk']} | {r['threads']} | "
                     f"{r['sequential']['updates_per_s']:.1f} | "
                     f"{r['stacked']['updates_per_s']:.1f} | {r['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None, prog: str = "python -m inspo.benchmarks.population") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["bridge", "smax"])
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeat-seconds", type=float, default=0.5)
    p.add_argument("--rows", type=int, default=20000, help="transitions of the synthetic datasets")
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--chunk", type=int, default=None, help="stack the members in populations of this many")
    args = p.parse_args(argv)
    results = []
    for case in args.cases:
        for threads in args.threads:
            r = measure_population(case, args.members, threads, args.repeats, args.repeat_seconds, rows=args.rows,
                                   device=args.device, profile=args.profile, chunk=args.chunk)
            results.append(r)
            print(f"{case} x{args.members}, {threads} thread(s): sequential {r['sequential']['updates_per_s']:.1f} "
                  f"upd/s, stacked {r['stacked']['updates_per_s']:.1f} upd/s, {r['ratio']:.2f}x", flush=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
