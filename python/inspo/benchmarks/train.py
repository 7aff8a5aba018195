"""End-to-end benchmark of InSPO training: updates per second of the fused kernels against the pure-PyTorch path,
in float32 and with bfloat16 matrix products, against the machine's ceiling for the update's arithmetic.

Times ``InSPO.update`` (one iteration: critic step and the sequential pass over the agents) on uniformly sampled
batches, exactly as :func:`inspo.train` calls it; data loading, behaviour cloning and evaluation are not timed.
Every variant of a case (a backend in a precision: ``fused``, ``torch``, ``fused+bf16``, ``torch+bf16``; see
:func:`variants`) is built from the same seed and measured in the same process, taking turns repeat by repeat so
that the load of a shared machine hits all alike; each number is the median over repeats after warm-up.

Roofline, per case: the FLOPs of one update, counted from the layer shapes (:mod:`inspo.benchmarks.roofline`), the
GFLOP/s each variant reaches, and the machine's ceiling measured in the same run, right after the case's updates:
the same matrix products alone, at the update's own shapes, in float32 and in bfloat16; each variant's fraction is
of the ceiling of its own precision.

Cases: ``bridge`` (the shipped ``data/bridge_mix``, the default config: hidden 64, batch 256), ``smax`` (synthetic
data of SMAX size: 5 agents, obs dim 80, state dim 130, 12 actions, hidden 256, batch 256) and ``n<N>`` (the same
SMAX-sized networks with N = 2, 4, 8, 16, 32 agents, state dim 26 N: the scaling series).

Peak memory of an update: on CUDA ``torch.cuda.max_memory_allocated`` during the timed updates; on CPU the growth
of the resident set's high-water mark (``VmHWM``) during 5 updates above the resident set after warm-up, measured in
a fresh child process per case and backend (allocators keep what one backend freed for the other).

    inspo bench train                  # every case (about 8 minutes on 2 busy cores with --baseline and --compile)
    inspo bench train --quick          # fewer repeats, scaling series N = 2, 8, 32
    inspo bench train --cases smax --profile   # also print a torch.profiler table per backend
    inspo bench train --quick --baseline 64f8088   # also time the learner of that git revision (source checkout)
    inspo bench train --compile        # also time the fused backend with TrainConfig.compile
    inspo bench train --precisions fp32   # float32 only (default: fp32 and bf16)
(``python bench/bench_train.py ...`` is the same.) The ``bridge`` case reads ``data/bridge_mix`` of the source
checkout.

``--baseline REV`` times the learner, behaviour cloning and networks (``inspo/algos/inspo.py``, ``bc.py``,
``learner.py``, ``networks.py``, ...) of an earlier git revision next to the current ones (both backends, all
taking turns; the kernels and everything else are the installed ones), so that a speed-up is measured under the same
machine load rather than across two runs.

Writes ``train_<device>[_<suffix>].json`` and ``.md`` (atomically) to ``--out`` (default as for ``inspo bench ops``).
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from inspo import precision
from inspo.algos.batch import Batch, behaviour_log_probs
from inspo.algos.bc import BehaviourCloning
from inspo.algos.inspo import InSPO
from inspo.benchmarks import roofline
from inspo.benchmarks.cases import BATCH_FIELDS, case_name, case_setup
from inspo.benchmarks.ops import CHECKOUT, RESULTS, close_report, new_report, publish
from inspo.benchmarks.population import measure_population
from inspo.benchmarks.train_report import BACKENDS, markdown
from inspo.config import PRECISIONS, TrainConfig

CEILING_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCALING = (2, 4, 8, 16, 32)
# The classes a Runner builds; baseline_learner gives those of another revision.
CURRENT = SimpleNamespace(BehaviourCloning=BehaviourCloning, InSPO=InSPO)


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", type=case_name, default=None,
                   help=f"bridge, smax, n<N> (default: bridge smax and n{{{','.join(map(str, SCALING))}}})")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="5 repeats, scaling series N = 2, 8, 32")
    p.add_argument("--repeats", type=int, default=9, help="timed repeats per backend (alternating)")
    p.add_argument("--repeat-seconds", type=float, default=0.4,
                   help="each repeat runs consecutive updates for at least this long (at least 2 updates)")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates per backend first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=20000, help="transitions of the synthetic datasets")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children (CPU)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of a few updates per "
                                                          "case and backend")
    p.add_argument("--compile", action="store_true",
                   help="also time the fused backend with TrainConfig.compile (torch.compile of the critic losses)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="precisions of the matrix products to time each backend in (TrainConfig.precision)")
    p.add_argument("--baseline", default=None, metavar="REV",
                   help="a git revision whose learner and networks are timed too, as fused@base/torch@base")
    p.add_argument("--population", type=int, default=8, metavar="P",
                   help="also time P members of the bridge and smax cases stacked as one population against the same "
                        "P runs one after another (0: skip)")
    p.add_argument("--suffix", default="", help="output stem train_<device>[_<suffix>]")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 5)
        args.repeat_seconds = min(args.repeat_seconds, 0.25)
    if args.cases is None:
        args.cases = ["bridge", "smax"] + [f"n{n}" for n in ((2, 8, 32) if args.quick else SCALING)]
    if "fp32" not in args.precisions:
        p.error(f"--precisions must include fp32 (every ratio is taken against it), got {args.precisions}")
    args.device = torch.device(args.device)
    return args


class Runner:
    """One learner of one backend on a case's data, and the batches it updates on (drawn as in the trainer);
    ``learner`` holds the ``BehaviourCloning`` and ``InSPO`` classes to build."""

    def __init__(self, data: dict, sizes: dict, overrides: dict, backend: str, device: torch.device,
                 learner: SimpleNamespace = CURRENT) -> None:
        self.cfg = TrainConfig(dataset="-", backend=backend, device=str(device), **overrides)
        torch.manual_seed(0)
        bc = learner.BehaviourCloning(self.cfg, sizes["n_agents"], sizes["obs_dim"], sizes["n_actions"], device)
        self.data = dict(data)
        logmu_all = behaviour_log_probs(bc.policy, data["obs"], data["avail"])
        self.data["logmu_all"] = logmu_all
        self.logp_mu = logmu_all.gather(-1, data["actions"][..., None]).squeeze(-1).t().contiguous()
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.learner = learner.InSPO(self.cfg, bc.policy, sizes["state_dim"], device, self.gen)
        self.rows = data["obs"].shape[0]

    def batch(self) -> Batch:
        idx = torch.randint(self.rows, (self.cfg.batch_size,), generator=self.gen, device=self.gen.device)
        return Batch(**{k: self.data[k][idx] for k in BATCH_FIELDS}, logp_mu=self.logp_mu[:, idx])

    def updates(self, count: int, sync) -> float:
        """Seconds spent in ``count`` updates (batch sampling excluded)."""
        spent = 0.0
        for _ in range(count):
            b = self.batch()
            sync()
            t = time.perf_counter()
            self.learner.update(b)
            sync()
            spent += time.perf_counter() - t
        return spent


def _module_at(rev: str, path: str, name: str):
    source = subprocess.run(["git", "-C", str(CHECKOUT), "show", f"{rev}:{path}"], capture_output=True, text=True,
                            check=True).stdout
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def _exists_at(rev: str, path: str) -> bool:
    return subprocess.run(["git", "-C", str(CHECKOUT), "cat-file", "-e", f"{rev}:{path}"],
                          capture_output=True).returncode == 0


def baseline_learner(rev: str) -> SimpleNamespace:
    """The ``BehaviourCloning`` and ``InSPO`` classes of git revision ``rev``, importing that revision's helper
    modules of ``inspo.algos`` (the rest of inspo, the kernels included, as installed)."""
    # In dependency order; revisions before the learner contract have no batch, bc or learner module (their
    # inspo.py holds Batch and BehaviourCloning).
    swapped = [name for name in ("networks", "common", "batch", "bc", "learner")
               if _exists_at(rev, f"python/inspo/algos/{name}.py")]
    current = {name: sys.modules[f"inspo.algos.{name}"] for name in swapped}
    try:
        helpers = {}
        for name in swapped:  # what its `from inspo.algos.<name> import ...` binds
            helpers[name] = sys.modules[f"inspo.algos.{name}"] = _module_at(
                rev, f"python/inspo/algos/{name}.py", f"inspo_baseline_{name}")
        learner = _module_at(rev, "python/inspo/algos/inspo.py", "inspo_baseline")
        bc = helpers.get("bc", learner)
        return SimpleNamespace(BehaviourCloning=bc.BehaviourCloning, InSPO=learner.InSPO)
    finally:
        sys.modules.update({f"inspo.algos.{name}": module for name, module in current.items()})


def variant_name(backend: str, precision: str) -> str:
    """``fused``, ``torch`` in float32; ``fused+bf16``, ``torch+bf16`` with bfloat16 matrix products."""
    return backend if precision == "fp32" else f"{backend}+{precision}"


def variants(args, overrides: dict) -> dict[str, tuple[str, SimpleNamespace, dict]]:
    """What a case times, by name: ``(backend, learner classes, config overrides)``. A new kind of case (e.g. a
    population) is one more entry here; every entry gets updates/s, GFLOP/s and its fraction of the ceiling of its
    ``precision`` override."""
    out = {variant_name(b, p): (b, CURRENT, {**overrides, "precision": p}) for p in args.precisions for b in BACKENDS}
    if args.compile:
        out["fused+compile"] = ("fused", CURRENT, {**overrides, "compile": True})
    if args.baseline is not None:
        base = baseline_learner(args.baseline)
        out.update({f"{backend}@base": (backend, base, overrides) for backend in BACKENDS})
    return out


def measure(case: str, args, sync) -> dict:
    data, sizes, overrides = case_setup(case, args.rows, args.device)
    runners = {name: Runner(data, sizes, extra, backend, args.device, learner)
               for name, (backend, learner, extra) in variants(args, overrides).items()}
    once = {}
    for backend, r in runners.items():
        r.updates(args.warmup, sync)
        once[backend] = r.updates(2, sync) / 2
    per_repeat = max(2, round(args.repeat_seconds / min(once.values())))
    peak = {}
    samples = {name: [] for name in runners}
    for _ in range(args.repeats):
        for backend, r in runners.items():
            if args.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(args.device)
            samples[backend].append(r.updates(per_repeat, sync) / per_repeat)
            if args.device.type == "cuda":
                peak[backend] = max(peak.get(backend, 0), torch.cuda.max_memory_allocated(args.device))
    if args.profile:
        for backend, r in runners.items():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                r.updates(3, sync)
            print(f"--- {case} {backend}: torch.profiler, 3 updates, by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    cfg = runners["fused"].cfg
    gemms = roofline.inspo_update_gemms(**sizes, hidden=cfg.hidden, batch_size=cfg.batch_size,
                                        local_critic_steps=cfg.local_critic_steps,
                                        sequential=cfg.order != "simultaneous")
    gflop = roofline.flops(gemms) / 1e9
    ceilings = {p: roofline.ceiling(gemms, dtype, args.device) for p, dtype in CEILING_DTYPES.items()}
    out = {"case": case, **sizes, "hidden": cfg.hidden, "batch_size": cfg.batch_size,
           "updates_per_repeat": per_repeat, "repeats": args.repeats, "loadavg": os.getloadavg()[0],
           "gflop_per_update": gflop, "ceiling_gflops": ceilings, "backends": {}}
    for name, s in samples.items():
        med = statistics.median(s)
        precision = runners[name].cfg.precision
        out["backends"][name] = {"median_s": med, "min_s": min(s), "max_s": max(s), "updates_per_s": 1 / med,
                                 "peak_bytes": peak.get(name), "precision": precision, "gflops": gflop / med,
                                 "ceiling_fraction": gflop / med / ceilings[precision]}
    out["ratio"] = out["backends"]["torch"]["median_s"] / out["backends"]["fused"]["median_s"]
    out["parts"] = parts(runners, args.repeats, sync)
    return out


def parts(runners: dict, repeats: int, sync) -> dict:
    """Milliseconds of the two halves of an update on one batch, per backend and precision (median over ``repeats``
    rounds, taking turns): the critic step (the ``critic_update`` op against autograd on ``critic_losses``) and the
    sequential pass (the ``sequential_update`` op, with the log-prob stack before it, against the Python loop on the
    reference kernels)."""
    names = [name for name in runners if "@" not in name and "compile" not in name]
    batches = {name: runners[name].batch() for name in names}
    qbars = {name: runners[name].learner.critic_step(batches[name])[0] for name in names}
    calls = {"critic": lambda L, b, q: L.critic_step(b), "pass": lambda L, b, q: L.policy_pass(b, q)}
    times = {name: {part: [] for part in calls} for name in names}
    for _ in range(repeats):
        for name in names:
            learner = runners[name].learner
            for part, call in calls.items():
                sync()
                t = time.perf_counter()
                with precision.autocast(learner.cfg.precision, learner.cfg.device):  # as InSPO.update runs them
                    call(learner, batches[name], qbars[name])
                sync()
                times[name][part].append(time.perf_counter() - t)
    return {name: {part: statistics.median(ts) * 1e3 for part, ts in by_part.items()}
            for name, by_part in times.items()}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024  # kB


def child_memory(case: str, variant: str, args) -> int:
    """Peak resident-set growth (bytes) during 5 updates above the resident set after warm-up, in a fresh process:
    what an update allocates on top of the data, networks and optimiser states. Linux's high-water mark is reset
    first (writing 5 to clear_refs), so that loading the data and computing log mu over it do not count."""
    data, sizes, overrides = case_setup(case, args.rows, args.device)
    backend, learner, extra = variants(args, overrides)[variant]
    r = Runner(data, sizes, extra, backend, args.device, learner)
    r.updates(args.warmup, lambda: None)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    r.updates(5, lambda: None)
    return _status_bytes("VmHWM") - before


def memory_in_children(case: str, args) -> dict:
    peaks = {}
    for p in args.precisions:
        for backend in BACKENDS:
            name = variant_name(backend, p)
            cmd = [sys.executable, "-m", "inspo.benchmarks.train", "--child", case, name, "--rows", str(args.rows),
                   "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", str(args.device),
                   "--precisions", p]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            peaks[name] = int(done.stdout.strip().splitlines()[-1])
    return peaks


def main(argv=None, prog: str = "inspo bench train") -> int:
    args = parse_args(argv, prog)
    torch.set_num_threads(args.threads)
    if args.child:
        print(child_memory(*args.child, args))
        return 0
    sync = (lambda: torch.cuda.synchronize(args.device)) if args.device.type == "cuda" else (lambda: None)
    started = time.time()
    report = {**new_report(prog, argv, args, args.device), "results": []}
    for case in args.cases:
        r = measure(case, args, sync)
        if args.device.type == "cpu" and not args.no_memory:
            for backend, peak in memory_in_children(case, args).items():
                r["backends"][backend]["peak_bytes"] = peak
        report["results"].append(r)
        print(f"{case:>6}: " + "  ".join(f"{b} {v['updates_per_s']:.1f}/s ({100 * v['ceiling_fraction']:.0f}%)"
                                         for b, v in r["backends"].items())
              + f"  ratio {r['ratio']:.2f}x", flush=True)
    if args.population:
        report["population"] = [
            measure_population(case, args.population, args.threads, args.repeats, args.repeat_seconds,
                               rows=args.rows, device=str(args.device))
            for case in args.cases if case in ("bridge", "smax")]
        for r in report["population"]:
            print(f"{r['case']:>6}: population of {r['members']}: {r['stacked']['updates_per_s']:.1f} upd/s, "
                  f"{r['ratio']:.2f}x the runs one after another", flush=True)
    close_report(report, started)
    stem = f"train_{args.device.type}" + (f"_{args.suffix}" if args.suffix else "")
    publish(args.out, stem, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
