"""Training configuration: one dataclass (with one small dataclass per baseline's own settings), validated before
any work starts, and its command-line flags (``inspo train``, ``inspo tune``)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspo import flags
from inspo.errors import InspoError

ALGOS = ("inspo", "bc", "icq", "omiga", "cfcql")
ORDERS = ("random", "fixed", "simultaneous")
WEIGHTINGS = ("resample", "weighted")
BACKENDS = ("fused", "torch")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "bf16")
"""``TrainConfig.precision``: the dtype of the updates' matrix products (:mod:`inspo.precision`)."""
EVALS = ("env", "none")
"""What a run evaluates its policy on (``TrainConfig.eval``): the dataset's environment, or nothing."""
ICQ_MIXERS = ("paper", "normalised")
"""``ICQConfig.mixer``: the paper's unbounded mixer weights, or its released code's, normalised to sum to one."""
LOGGERS = ("csv", "tensorboard", "wandb")
"""The loggers ``TrainConfig.logger`` may name (:mod:`inspo.loggers`)."""
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
MEMBER_FIELDS = ("lr_policy", "lr_critic", "alpha", "beta", "gamma", "polyak", "rho_max", "z_max", "critic_alpha")
"""The hyper-parameters that ``TrainConfig.per_member`` may set per member of a population."""
POPULATION_FIELDS = ("seeds", "per_member")
"""The TrainConfig fields that make a population (:meth:`TrainConfig.members`)."""

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
class ICQConfig:
    """MA-ICQ's own settings (``algo="icq"``, :mod:`inspo.algos.icq`)."""

    critic_temp: float = field(default=1000.0, metadata={
        "help": "MA-ICQ: temperature of the in-sample softmax weights of the critic's target"})
    mixer: str = field(default="paper", metadata={"choices": ICQ_MIXERS, "help": (
        "MA-ICQ: the mixer's per-agent weights as in the paper's text (|hypernet(s)|, unbounded) or as in its "
        "released code (normalised to sum to one in every state)")})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        flags.check_types(self, "config.icq")
        if not self.critic_temp > 0:
            raise ValueError(f"config.icq.critic_temp must be > 0, got {self.critic_temp!r}")


@dataclass
class CFCQLConfig:
    """CFCQL's own settings (``algo="cfcql"``, :mod:`inspo.algos.cfcql`)."""

    cql_alpha: float = field(default=1.0, metadata={
        "flat_name": "cql_alpha", "help": "CFCQL: weight of the counterfactual conservative penalty"})
    lambda_temp: float = field(default=5.0, metadata={
        "help": "CFCQL: temperature of the agent weights lambda (0: uniform)"})
    policy_temp: float = field(default=1e-3, metadata={
        "help": "CFCQL: temperature of the policy read off the utilities (logits Q_i / temp)"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        flags.check_types(self, "config.cfcql")
        if not self.policy_temp > 0:
            raise ValueError(f"config.cfcql.policy_temp must be > 0, got {self.policy_temp!r}")
        for name in ("cql_alpha", "lambda_temp"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"config.cfcql.{name} must be >= 0, got {getattr(self, name)!r}")


_METHOD_CONFIGS: dict[str, type] = {"icq": ICQConfig, "cfcql": CFCQLConfig}
"""TrainConfig fields holding one method's own settings -> their dataclass."""


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``dataset`` is a directory in the project format (docs/design.md 4).

    The baselines (``algo`` in icq, omiga, cfcql) read ``alpha`` as their own behaviour-regularisation temperature
    (MA-ICQ's actor and OMIGA's KL strength) and their own settings in ``icq`` (:class:`ICQConfig`) and ``cfcql``
    (:class:`CFCQLConfig`); see their modules. Their flags and flat keys keep the names they had before they were
    grouped: ``--icq-critic-temp``, ``--cql-alpha``, ``--cfcql-lambda-temp``, ``--cfcql-policy-temp``.

    ``eval="none"`` trains without ever building the dataset's environment (for data of an environment that is not
    installed here): the training is the same as with ``eval="env"``, but the curve holds the losses at the
    evaluation points and no returns, no ``best.pt`` is written (there is nothing to rank policies by), and
    ``final.pt`` records the dataset's environment, so that ``inspo evaluate final.pt`` plays it where it is
    installed.

    ``threads`` sets torch's intra-op threads for the run: the networks are small, and one thread avoids the
    synchronisation cost (and, on a busy machine, the oversubscription) of more; None keeps torch's setting.

    ``dtype`` is the dtype of everything a run keeps (parameters, optimiser states, data, losses); ``precision``
    only that of the updates' matrix products: ``"fp32"`` runs them in ``dtype``, ``"bf16"`` in bfloat16 (linear
    layers under autocast, the update ops with ``matmul_dtype=torch.bfloat16``) with float32 master weights, Adam
    states, losses and softmax / log-sum-exp statistics; it needs ``dtype="float32"`` (:mod:`inspo.precision`).

    ``logger`` names the loggers that write into ``out`` while the run goes (:mod:`inspo.loggers`), comma-separated:
    ``csv`` (the default), ``tensorboard``, ``wandb``; ``""`` or ``"none"`` for none. They log every evaluation
    and every ``log_every`` steps. A run without ``out`` logs nothing: its curve is in its result.

    ``seeds`` and ``per_member`` make the config a *population* (:meth:`members`): P independent runs trained in
    one process by :func:`inspo.population_training.train_population`, member p with seed ``seeds[p]`` and
    ``per_member[key][p]`` for each key (a list of length 1 serves every member; without ``seeds`` every member
    has ``seed``). Member p's run is exactly the single run of ``members()[p]``, written into its own folder.

    ``ddp`` trains data-parallel over the ranks of a ``torch.distributed`` process group (gloo on CPU, nccl on
    CUDA, one GPU per rank): every rank samples the same global batch of ``batch_size`` rows (which must divide by
    the number of ranks), computes the forward/backward of its contiguous share of the rows, and gradients are
    averaged before every optimiser step, so that the ranks stay identical and follow the single-process run (to
    float rounding). Only rank 0 evaluates and writes files. Launch with
    ``torchrun --nproc-per-node K -m inspo.cli train --ddp ...``, or from Python call ``inspo.train`` with the same
    config on every rank (after ``torch.distributed.init_process_group``, or under torchrun). Every ``algo``
    supports it.
    """

    dataset: str = field(metadata={"help": "dataset directory (written by inspo datasets generate or import)"})
    env_options: dict[str, Any] = field(default_factory=dict, metadata={
        "flag": "--env-option", "help": "environment option for evaluation"})
    algo: str = field(default="inspo", metadata={"choices": ALGOS})
    iters: int = 3000
    bc_steps: int = 2000
    batch_size: int = 256
    hidden: int = 64
    lr_policy: float = 3e-4
    lr_critic: float = 1e-3
    alpha: float = 0.2
    beta: float = 0.0
    critic_alpha: float | None = field(default=None, metadata={
        "help": "InSPO ablation: the alpha of the joint critic's in-sample soft value V, whose temperature becomes "
                "critic_alpha + beta while the policy's stays alpha + beta; default: alpha, the paper's method, where "
                "critic and policy share one temperature (larger: V nearer the data's mean value, smaller: nearer "
                "its in-sample maximum)"})
    gamma: float = 0.99
    polyak: float = 0.005
    rho_max: float = 100.0
    z_max: float = 10.0
    order: str = field(default="random", metadata={"choices": ORDERS})
    weighting: str = field(default="resample", metadata={"choices": WEIGHTINGS})
    use_rho: bool = True
    local_critic_steps: int = 1
    shared_policy: bool = False
    normalize_state: bool = field(default=False, metadata={
        "help": "standardise the global state, which only the critics and mixers read, per feature by the "
                "dataset's mean and std (features on very different scales, e.g. SMAX's positions and health, "
                "can make a value-decomposition critic diverge); the policies act on observations and are unchanged"})
    icq: ICQConfig = field(default_factory=ICQConfig)
    cfcql: CFCQLConfig = field(default_factory=CFCQLConfig)
    backend: str = field(default="fused", metadata={"choices": BACKENDS})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda (the current GPU) or cuda:N"})
    threads: int | None = 1
    ddp: bool = field(default=False, metadata={
        "help": "data-parallel training over torch.distributed ranks; launch: torchrun --nproc-per-node K "
                "-m inspo.cli train --ddp ... (batch size divisible by K; rank 0 evaluates and writes files)"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile InSPO's critic losses (the part of an iteration outside the kernels and the "
                "sequential-update op); compiling takes tens of seconds at the start of the run"})
    dtype: str = field(default="float32", metadata={
        "choices": DTYPES, "help": "dtype of the parameters, optimiser states, data and losses"})
    precision: str = field(default="fp32", metadata={
        "choices": PRECISIONS, "help": "matrix products of the updates: fp32 (in --dtype) or bf16 (bfloat16 "
                                       "layers, float32 master weights, Adam states, losses and statistics; "
                                       "needs --dtype float32)"})
    seed: int = 0
    seeds: list[int] | None = field(default=None, metadata={
        "help": "train a population, one member per seed, in one process: e.g. 0-7 or 0,3,5 (replaces --seed); "
                "member runs go to <out>/seed_<s>, or <out>/member_<p> with --per-member"})
    per_member: dict[str, list[float]] = field(default_factory=dict, metadata={
        "help": "population: one value per member of a float hyper-parameter, KEY=V1,V2,... (or one value for "
                "all), e.g. alpha=0.1,0.3,1; KEY one of " + ", ".join(MEMBER_FIELDS) + "; lists are as long as "
                "--seeds (or of length 1)"})
    eval_every: int = 500
    eval_episodes: int = 100
    eval_episode_limit: int | None = None
    eval_greedy: bool = False
    eval: str = field(default="env", metadata={
        "choices": EVALS,
        "help": "env: play the policy in the dataset's environment every --eval-every iterations; none: never build "
                "the environment (it need not be installed): the curve records losses only, no best.pt is written, "
                "and final.pt is evaluated later with inspo evaluate final.pt --env ENV"})
    checkpoint_every: int = 500
    check_every: int = field(default=1, metadata={
        "help": "check the losses for NaN/inf every this many iterations: the check is the iteration's only read "
                "from the device, and the run stops at the first check after a non-finite loss"})
    cuda_graph: bool = field(default=False, metadata={
        "help": "capture one InSPO iteration (batch sampling, critic step, sequential pass) as a CUDA graph and "
                "replay it (device cuda, one process, the fused or torch backend without compile)"})
    out: str | None = None
    logger: str = field(default="csv", metadata={
        "help": "comma-separated loggers written into --out as the run goes: csv (out/progress.csv), tensorboard "
                "(out/tb/), wandb (offline unless WANDB_MODE is set); none for none"})
    log_every: int = field(default=100, metadata={
        "help": "steps between two logged rows of losses (each evaluation is logged too)"})

    def __post_init__(self) -> None:
        for name, cls in _METHOD_CONFIGS.items():  # a mapping (e.g. from JSON) becomes the method's dataclass
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, flags.from_values(cls, value, f"config.{name}"))
        if isinstance(self.per_member, dict):  # ``--per-member alpha=0.1,0.3`` arrives as a string
            self.per_member = {k: _member_values(k, v) for k, v in self.per_member.items()}
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value (a value of the wrong type included)."""
        flags.check_types(self, "config")
        for name in _METHOD_CONFIGS:
            getattr(self, name).validate()
        positive = ("batch_size", "hidden", "lr_policy", "lr_critic", "rho_max", "z_max", "eval_episodes",
                    "eval_every", "local_critic_steps", "checkpoint_every", "check_every", "log_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"config.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("iters", "bc_steps", "alpha", "beta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"config.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.algo == "inspo" and not self.alpha + self.beta > 0:
            raise ValueError(f"config.alpha + config.beta must be > 0 (tau), got {self.alpha} + {self.beta}")
        if self.critic_alpha is not None:
            if self.algo != "inspo":
                raise ValueError(f"config.critic_alpha is InSPO's (the joint critic's own alpha), got it with "
                                 f"algo {self.algo!r}: leave it unset (None)")
            if not (self.critic_alpha >= 0 and self.critic_alpha + self.beta > 0):
                raise ValueError(f"config.critic_alpha must be >= 0 with critic_alpha + beta > 0 (the critic's "
                                 f"temperature), got {self.critic_alpha} + {self.beta}")
        if self.algo in ("icq", "omiga") and not self.alpha > 0:
            raise ValueError(f"config.alpha must be > 0 for {self.algo} (its temperature), got {self.alpha}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"config.gamma must be in [0, 1], got {self.gamma}")
        if not 0 < self.polyak <= 1:
            raise ValueError(f"config.polyak must be in (0, 1], got {self.polyak}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"config.threads must be >= 1 or None (keep torch's setting), got {self.threads}")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"config.device must be cpu, cuda or cuda:N (N a GPU index), got {self.device!r}")
        self.loggers()
        if self.cuda_graph and (not self.device.startswith("cuda") or self.algo != "inspo" or self.ddp
                                or self.compile or self.shared_policy):
            raise ValueError(f"config.cuda_graph needs algo='inspo' on a CUDA device in one process without compile "
                             f"or shared_policy, got algo={self.algo!r} device={self.device!r} ddp={self.ddp} "
                             f"compile={self.compile} shared_policy={self.shared_policy}")
        if self.precision == "bf16" and self.dtype != "float32":
            raise ValueError(f"config.precision 'bf16' keeps float32 master weights: it needs dtype 'float32', got "
                             f"dtype {self.dtype!r} (use precision 'fp32' for float64 training)")
        if self.eval_episode_limit is not None and self.eval_episode_limit < 1:
            raise ValueError(f"config.eval_episode_limit must be >= 1 or None, got {self.eval_episode_limit}")
        if self.is_population():
            self.members()

    def is_population(self) -> bool:
        """Whether the config trains a population (``seeds`` or ``per_member`` given), even of one member."""
        return self.seeds is not None or bool(self.per_member)

    def population_size(self) -> int:
        """The number of members P (1 for a single run); ValueError naming lists of other lengths than P or 1."""
        lengths = {f"config.per_member[{k!r}]": len(v) for k, v in self.per_member.items()}
        if self.seeds is not None:
            lengths = {"config.seeds": len(self.seeds), **lengths}
        empty = [name for name, n in lengths.items() if n == 0]
        if empty:
            raise ValueError(f"{empty[0]} is empty; expected at least one value")
        size = max(lengths.values(), default=1)
        wrong = {name: n for name, n in lengths.items() if n not in (1, size)}
        if wrong:
            raise ValueError(f"population lists of different lengths: {lengths}; every list gives one value per "
                             f"member (or one value for all), so they must have the same length or length 1")
        return size

    def members(self) -> list[TrainConfig]:
        """Member p's single-run config, for every member of a population (``[self]`` for a single run): its seed,
        its ``per_member`` values, no ``seeds``/``per_member``, and ``out`` = ``<out>/seed_<s>`` (populations over
        seeds alone) or ``<out>/member_<p>`` (with ``per_member``). ValueError naming the member and its bad value."""
        if not self.is_population():
            return [self]
        size = self.population_size()
        unknown = sorted(set(self.per_member) - set(MEMBER_FIELDS))
        if unknown:
            raise ValueError(f"config.per_member names {unknown}; expected hyper-parameters among "
                             f"{list(MEMBER_FIELDS)}")
        if self.ddp or self.cuda_graph:
            raise ValueError(f"a population (config.seeds or config.per_member) trains in one process without a CUDA "
                             f"graph; got ddp={self.ddp} cuda_graph={self.cuda_graph}")
        pick = lambda values, p: values[p if len(values) > 1 else 0]  # noqa: E731
        seeds = [pick(self.seeds or [self.seed], p) for p in range(size)]
        if not self.per_member and len(set(seeds)) < size:
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ValueError(f"config.seeds names seed(s) {twice} more than once: those members would be the same run")
        members = []
        for p, seed in enumerate(seeds):
            values = {k: pick(v, p) for k, v in self.per_member.items()}
            folder = f"member_{p}" if self.per_member else f"seed_{seed}"
            try:
                members.append(dataclasses.replace(self, seed=seed, seeds=None, per_member={}, **values,
                                                   out=None if self.out is None else str(Path(self.out) / folder)))
            except ValueError as exc:
                raise ValueError(f"population member {p} (seed {seed}, {values}): {exc}") from None
        return members

    def loggers(self) -> tuple[str, ...]:
        """The logger names of ``logger`` (comma-separated; ``""`` or ``"none"``: none), each once; ValueError
        naming an unknown one."""
        names = tuple(dict.fromkeys(n.strip() for n in self.logger.split(",") if n.strip()))
        if names == ("none",):
            return ()
        unknown = [n for n in names if n not in LOGGERS]
        if unknown:
            raise ValueError(f"config.logger names unknown logger(s) {unknown} in {self.logger!r}; expected a "
                             f"comma-separated list of {list(LOGGERS)}, or 'none'")
        return names

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (e.g. JSON): the nested form of :meth:`to_dict` or the flat keys of the methods'
        settings (``icq_critic_temp``, ``cql_alpha``, ...; on top of the nested ones); unknown keys are an error,
        not silently ignored."""
        return flags.from_values(cls, values)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named method or ablation from :data:`PRESETS`, with ``overrides`` on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Every field, the methods' settings as nested mappings (what :meth:`from_dict` reads back)."""
        return dataclasses.asdict(self)


def _member_values(key: str, values: Any) -> Any:
    """``per_member[key]`` as a list: a comma-separated string (from ``--per-member KEY=V1,V2``) or a single number
    become one; anything else is left for the type check to name."""
    if isinstance(values, str):
        try:
            return flags.parse_list(values, float)
        except ValueError as exc:
            raise ValueError(f"config.per_member[{key!r}]: {exc}") from None
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return [values]
    return values


def add_config_flags(p: argparse.ArgumentParser, population: bool = False) -> None:
    """``--preset``, ``--config`` and one flag per TrainConfig field (``--lr-policy`` for ``lr_policy``; see
    :mod:`inspo.flags`), so the command line never lags the config; those of :data:`POPULATION_FIELDS`
    (``--seeds``, ``--per-member``) only with ``population`` (commands that train one config at a time have their
    own ``--seeds``)."""
    p.add_argument("--preset", choices=sorted(PRESETS), default="inspo",
                   help="method or ablation (default: inspo); flags override it")
    p.add_argument("--config", help="JSON file with TrainConfig fields; flags override it")
    flags.add_flags(p, TrainConfig, exclude=() if population else POPULATION_FIELDS)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a ``--config`` JSON file; InspoError naming the file when it is not a JSON object."""
    file = Path(path)
    try:
        values = json.loads(file.read_text())
    except FileNotFoundError:
        raise InspoError(f"config file {file} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InspoError(f"config file {file} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise InspoError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    if not isinstance(values, dict):
        raise InspoError(f"config file {file} holds a JSON {type(values).__name__}; expected an object of "
                         f"TrainConfig fields, e.g. {{\"dataset\": \"runs/data/xor\", \"iters\": 3000}}")
    return values


def config_from_args(args: argparse.Namespace, population: bool = False) -> TrainConfig:
    """The TrainConfig of parsed :func:`add_config_flags` flags (``population``: as given there): the preset, then
    the ``--config`` file, then the flags given. Raises InspoError (naming the file, key or flag) when the result
    is not a valid config."""
    values: dict[str, Any] = dict(PRESETS[args.preset])
    source = f"config file {args.config}: " if args.config else ""
    if args.config:
        values.update(read_config_file(args.config))
    try:
        values = flags.values_from_args(TrainConfig, args, values,
                                        exclude=() if population else POPULATION_FIELDS)
        if "dataset" not in values:
            raise InspoError("--dataset DIR is required (or a --config file that sets it)")
        return TrainConfig.from_dict(values)
    except InspoError:
        raise
    except (ValueError, TypeError) as exc:  # TypeError: a mapping where the dataclass takes other arguments
        raise InspoError(f"{source}{exc}") from None
