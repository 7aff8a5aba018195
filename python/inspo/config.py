"""Training configuration: one dataclass, validated before any work starts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ALGOS = ("inspo", "bc", "icq", "omiga", "cfcql")
ORDERS = ("random", "fixed", "simultaneous")
WEIGHTINGS = ("resample", "weighted")
BACKENDS = ("fused", "torch")

PRESETS: dict[str, dict[str, Any]] = {
    "inspo": {},
    "bc": {"algo": "bc"},
    "icq": {"algo": "icq"},
    "omiga": {"algo": "omiga"},
    "cfcql": {"algo": "cfcql"},
    "simultaneous": {"order": "simultaneous"},
    "fixed-order": {"order": "fixed"},
    "no-entropy": {"beta": 0.0},
    "no-rho": {"use_rho": False},
}
"""Named methods and ablations: overrides applied on top of the defaults (or of a user's config)."""


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``dataset`` is a directory in the project format (SPEC 4).

    The baselines (``algo`` in icq, omiga, cfcql) read ``alpha`` as their own behaviour-regularisation temperature
    (MA-ICQ's actor and OMIGA's KL strength) and the fields prefixed ``icq_``/``cql_``/``cfcql_``; see their modules.

    ``threads`` sets torch's intra-op threads for the run: the networks are small, and one thread avoids the
    synchronisation cost (and, on a busy machine, the oversubscription) of more; None keeps torch's setting.

    ``ddp`` trains data-parallel over the ranks of a ``torch.distributed`` process group (gloo on CPU, nccl on
    CUDA, one GPU per rank): every rank samples the same global batch of ``batch_size`` rows (which must divide by
    the number of ranks), computes the forward/backward of its contiguous share of the rows, and gradients are
    averaged before every optimiser step, so that the ranks stay identical and follow the single-process run (to
    float rounding). Only rank 0 evaluates and writes files. Launch with
    ``torchrun --nproc-per-node K -m inspo.cli train --ddp ...``, or from Python call ``inspo.train`` with the same
    config on every rank (after ``torch.distributed.init_process_group``, or under torchrun). Every ``algo``
    supports it.
    """

    dataset: str
    env_options: dict[str, Any] = field(default_factory=dict)
    algo: str = "inspo"
    iters: int = 3000
    bc_steps: int = 2000
    batch_size: int = 256
    hidden: int = 64
    lr_policy: float = 3e-4
    lr_critic: float = 1e-3
    alpha: float = 0.2
    beta: float = 0.0
    gamma: float = 0.99
    polyak: float = 0.005
    rho_max: float = 100.0
    z_max: float = 10.0
    order: str = "random"
    weighting: str = "resample"
    use_rho: bool = True
    local_critic_steps: int = 1
    shared_policy: bool = False
    icq_critic_temp: float = 1000.0
    cql_alpha: float = 1.0
    cfcql_lambda_temp: float = 5.0
    cfcql_policy_temp: float = 1e-3
    backend: str = "fused"
    device: str = "cpu"
    threads: int | None = 1
    ddp: bool = field(default=False, metadata={
        "help": "data-parallel training over torch.distributed ranks; launch: torchrun --nproc-per-node K "
                "-m inspo.cli train --ddp ... (batch size divisible by K; rank 0 evaluates and writes files)"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile InSPO's critic losses (the part of an iteration outside the kernels and the "
                "sequential-update op); compiling takes tens of seconds at the start of the run"})
    dtype: str = "float32"
    seed: int = 0
    eval_every: int = 500
    eval_episodes: int = 100
    eval_episode_limit: int | None = None
    eval_greedy: bool = False
    checkpoint_every: int = 500
    out: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        choices = {"algo": ALGOS, "order": ORDERS, "weighting": WEIGHTINGS, "backend": BACKENDS,
                   "dtype": ("float32", "float64")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive = ("batch_size", "hidden", "lr_policy", "lr_critic", "rho_max", "eval_episodes", "eval_every",
                    "local_critic_steps", "checkpoint_every", "icq_critic_temp", "cfcql_policy_temp")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"config.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("iters", "bc_steps", "alpha", "beta", "cql_alpha", "cfcql_lambda_temp"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"config.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.algo == "inspo" and not self.alpha + self.beta > 0:
            raise ValueError(f"config.alpha + config.beta must be > 0 (tau), got {self.alpha} + {self.beta}")
        if self.algo in ("icq", "omiga") and not self.alpha > 0:
            raise ValueError(f"config.alpha must be > 0 for {self.algo} (its temperature), got {self.alpha}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"config.gamma must be in [0, 1], got {self.gamma}")
        if not 0 < self.polyak <= 1:
            raise ValueError(f"config.polyak must be in (0, 1], got {self.polyak}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"config.threads must be >= 1 or None (keep torch's setting), got {self.threads}")
        if self.eval_episode_limit is not None and self.eval_episode_limit < 1:
            raise ValueError(f"config.eval_episode_limit must be >= 1 or None, got {self.eval_episode_limit}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (e.g. JSON); unknown keys are an error, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named method or ablation from :data:`PRESETS`, with ``overrides`` on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
