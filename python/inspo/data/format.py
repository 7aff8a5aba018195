"""The project's dataset format: a directory of `.npy` files (one per field, flat over transitions) plus a
`manifest.json` that describes the environment, the sizes, the return statistics, the behaviour policy, the
origin of the data and the SHA-256 of every file (docs/design.md section 4).

Field layout, T transitions, N agents, A actions per agent:

| field | shape | dtype |
|---|---|---|
| obs, next_obs | [T, N, obs_dim] | float32 |
| state, next_state | [T, state_dim] | float32 |
| avail, next_avail | [T, N, A] | bool |
| actions | [T, N] | int64 |
| reward | [T] | float32 |
| terminated, truncated, episode_start | [T] | bool |

Episodes are stored back to back; `episode_start[t]` marks the first transition of an episode and the last one
has `terminated` (the task ended: no bootstrapping) or `truncated` (the step limit cut it) set.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inspo import jsonio
from inspo.data.manifest import FORMAT_NAME, FORMAT_VERSION, MANIFEST, DatasetError, manifest_digest, read_manifest
from inspo.envs import EnvInfo, MultiAgentEnv, RecordedEnv, make
from inspo.errors import MissingExtra

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FIELDS",
    "Dataset",
    "DatasetError",
    "check_recorded_env",
    "save_dataset",
    "load_dataset",
    "manifest_digest",
]


def _shipped_data() -> Path:
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file():  # a source checkout (or an editable install of one)
        return checkout / "data"
    return Path(str(resources.files("inspo") / "_shipped"))  # a wheel: package data


SHIPPED_DATA = _shipped_data()
"""The datasets and SMAX policies shipped with inspo: `data/` of a source checkout, the package data of a wheel."""


def dataset_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or for a bare name that is no folder here (``bridge_mix``), the shipped dataset of that name."""
    root = Path(path)
    shipped = SHIPPED_DATA / root.name
    if not root.exists() and root.name == str(path) and (shipped / MANIFEST).is_file():
        return shipped
    return root

FIELDS: dict[str, tuple[np.dtype, tuple[str, ...]]] = {
    "obs": (np.dtype(np.float32), ("T", "n_agents", "obs_dim")),
    "state": (np.dtype(np.float32), ("T", "state_dim")),
    "avail": (np.dtype(bool), ("T", "n_agents", "n_actions")),
    "actions": (np.dtype(np.int64), ("T", "n_agents")),
    "reward": (np.dtype(np.float32), ("T",)),
    "terminated": (np.dtype(bool), ("T",)),
    "truncated": (np.dtype(bool), ("T",)),
    "next_obs": (np.dtype(np.float32), ("T", "n_agents", "obs_dim")),
    "next_state": (np.dtype(np.float32), ("T", "state_dim")),
    "next_avail": (np.dtype(bool), ("T", "n_agents", "n_actions")),
    "episode_start": (np.dtype(bool), ("T",)),
}
"""Field name -> (dtype, symbolic shape); the symbols other than T are `EnvInfo` attributes."""

_FLOAT_FIELDS = tuple(name for name, (dtype, _) in FIELDS.items() if dtype.kind == "f")
_CONTINUED = (("next_obs", "obs"), ("next_state", "state"), ("next_avail", "avail"))
_HASH_CHUNK = 1 << 20


EnvLike = str | MultiAgentEnv | EnvInfo


@dataclass(frozen=True, eq=False)
class Dataset:
    """Transitions of one environment plus the manifest that describes them.

    Build one with `Dataset.create` (it fills in the manifest), or read one with `load_dataset` (arrays are
    memory-mapped read-only, and the manifest then also lists the files and their checksums).
    """

    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray
    actions: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray
    next_state: np.ndarray
    next_avail: np.ndarray
    episode_start: np.ndarray
    manifest: Mapping[str, Any]

    @classmethod
    def create(
        cls,
        arrays: Mapping[str, npt.ArrayLike],
        env: MultiAgentEnv | RecordedEnv,
        *,
        behaviour: Mapping[str, Any] | str,
        seed: int | None,
        source: str,
        verify: bool = True,
    ) -> Dataset:
        """Assemble a dataset from one array per field (converted to the format's dtypes) recorded on `env`.

        `behaviour` describes the policy that collected the data, `seed` the generator seed (None if unknown),
        `source` where the data came from. With `verify`, the content is checked (see `Dataset.validate`).
        """
        missing = sorted(set(FIELDS) - set(arrays))
        extra = sorted(set(arrays) - set(FIELDS))
        if missing or extra:
            raise DatasetError(f"dataset fields mismatch: missing {missing}, unexpected {extra}")
        data = {name: _as_field(name, arrays[name]) for name in FIELDS}
        starts = np.flatnonzero(data["episode_start"])
        returns = _episode_returns(data["reward"], starts)
        info = env.info
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "env": {"id": info.name, "options": env.options, "spec": asdict(info)},
            "counts": {"transitions": int(data["reward"].shape[0]), "episodes": int(starts.size)},
            "returns": _return_stats(returns),
            "behaviour": behaviour,
            "seed": seed,
            "source": source,
        }
        # A JSON round trip up front: what is held in memory is exactly what a save/load gives back.
        ds = cls(**data, manifest=json.loads(json.dumps(manifest)))
        if verify:
            ds.validate()
        return ds

    @property
    def env_info(self) -> EnvInfo:
        """The spec of the environment the data was recorded on."""
        return EnvInfo(**self.manifest["env"]["spec"])

    @property
    def recorded_env(self) -> RecordedEnv:
        """The environment the data was recorded on, as the manifest describes it (without building it)."""
        return RecordedEnv(self.env_info, dict(self.manifest["env"]["options"]))

    @property
    def n_agents(self) -> int:
        """Number of agents."""
        return int(self.actions.shape[1])

    @property
    def n_actions(self) -> int:
        """Number of actions per agent."""
        return int(self.avail.shape[2])

    @property
    def n_episodes(self) -> int:
        """Number of episodes."""
        return int(np.count_nonzero(self.episode_start))

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Field name -> array, in the format's field order."""
        return {name: getattr(self, name) for name in FIELDS}

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, float64 `[n_episodes]`."""
        return _episode_returns(self.reward, np.flatnonzero(self.episode_start))

    def validate(self, env: EnvLike | None = None) -> None:
        """Check that the arrays are consistent with each other and with the manifest (and with `env`).

        Raises `DatasetError` naming the field and the first offending index.
        """
        _check_content(self)
        if env is not None:
            _check_env(self.manifest, env)


def _check_env(manifest: Mapping[str, Any], env: EnvLike) -> None:
    """Refuse data recorded on another environment than `env` (a name, an environment or its `EnvInfo`).

    The step limit may differ (data are typically collected with a longer limit than evaluation uses).
    """
    recorded = EnvInfo(**manifest["env"]["spec"])
    if isinstance(env, str):
        if env != recorded.name:
            raise DatasetError(f"dataset was recorded on environment '{recorded.name}', not on '{env}'")
        info = _recorded_env(manifest).info
    else:
        info = env if isinstance(env, EnvInfo) else env.info
    diffs = [
        f"{f.name}: dataset {getattr(recorded, f.name)!r} vs environment {getattr(info, f.name)!r}"
        for f in fields(EnvInfo)
        if f.name != "episode_limit" and getattr(recorded, f.name) != getattr(info, f.name)
    ]
    if diffs:
        raise DatasetError(
            f"dataset recorded on '{recorded.name}' does not match environment '{info.name}': " + "; ".join(diffs)
        )


def check_recorded_env(manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest whose environment cannot be built here with its recorded options, or does not match the
    recorded spec (what `load_dataset` checks unless `recorded_env=False`)."""
    _check_env(manifest, manifest["env"]["id"])


def _recorded_env(manifest: Mapping[str, Any]) -> MultiAgentEnv:
    """The environment the manifest says the data were recorded on, built from its id and options."""
    env = manifest["env"]
    try:
        return make(env["id"], **env["options"])
    except MissingExtra:
        raise  # its message already says what to install
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"the manifest's env.id {env['id']!r} with env.options {env['options']} cannot be "
                           f"built: {exc}") from None


def save_dataset(ds: Dataset, path: str | os.PathLike[str], *, overwrite: bool = False, verify: bool = True) -> Path:
    """Write `ds` to the directory `path` atomically and return the path.

    The files are written into a temporary sibling directory that is renamed into place only when complete,
    so readers never see a half-written dataset. An existing non-empty directory is replaced only with
    `overwrite=True`. With `verify`, the content is checked before anything is written.
    """
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise FileExistsError(f"cannot write dataset to {target}: it exists and is not a directory")
        if any(target.iterdir()) and not overwrite:
            raise FileExistsError(f"{target} already exists and is not empty; pass overwrite=True to replace it")
    if verify:
        ds.validate()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        files = {}
        for name, array in ds.arrays().items():
            file = tmp / f"{name}.npy"
            with open(file, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            files[file.name] = {
                "sha256": _sha256(file),
                "shape": list(array.shape),
                "dtype": array.dtype.str,
                "bytes": file.stat().st_size,
            }
        manifest = {key: value for key, value in ds.manifest.items() if key not in ("files", "manifest_sha256")}
        manifest["files"] = files
        manifest = jsonio.finite(manifest)  # statistics of unverified data may be NaN: standard JSON says null
        manifest["manifest_sha256"] = manifest_digest(manifest)
        with open(tmp / MANIFEST, "w") as fh:
            json.dump(manifest, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_dataset(path: str | os.PathLike[str], env: EnvLike | None = None, *, verify: bool = True,
                 recorded_env: bool = True) -> Dataset:
    """Read a dataset written by `save_dataset`; arrays are memory-mapped read-only.

    Always checked: the manifest (`inspo.data.manifest`), the presence of every file, and each file's size, shape
    and dtype against the manifest. With `verify` (the default) also every file's SHA-256, the content
    (`Dataset.validate`) and that the recorded environment can be built with the recorded options and matches the
    data: every check that training makes before it starts (`inspo datasets verify` runs this). With
    `recorded_env=False` the recorded environment need not be known or installed here (its manifest entry describes
    it; training with `eval="none"`): it is neither looked up nor built. If `env` is given, the dataset must have
    been recorded on a matching environment. A bare name that is no folder here names a shipped dataset
    (`dataset_path`).
    """
    root = dataset_path(path)
    manifest = read_manifest(root, known_env=recorded_env)
    entries = manifest["files"]
    arrays = {}
    for name in FIELDS:
        file = root / f"{name}.npy"
        entry = entries.get(file.name)
        if entry is None:
            raise DatasetError(f"{root / MANIFEST} does not list {file.name}")
        if not file.is_file():
            raise DatasetError(f"dataset file {file} is missing")
        _check_file(file, entry)
        if verify:
            digest = _sha256(file)
            if digest != entry["sha256"]:
                raise DatasetError(
                    f"checksum mismatch for {file}: sha256 {digest}, manifest says {entry['sha256']} "
                    "(the file is corrupted or was modified)"
                )
        arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
    ds = Dataset(**arrays, manifest=manifest)
    if verify:
        _check_content(ds)
        if recorded_env:
            check_recorded_env(manifest)
    if env is not None:
        _check_env(manifest, env)
    return ds


def dataset_digest(path: str | os.PathLike[str]) -> str:
    """The ``manifest_sha256`` of the dataset at ``path`` (as :func:`load_dataset` takes it, with its cheap checks):
    the content key by which runs, searches, cloning lengths and caches name their data."""
    return load_dataset(path, verify=False).manifest["manifest_sha256"]


def _check_file(file: Path, entry: Mapping[str, Any]) -> None:
    """Size, shape and dtype of one `.npy` file against its manifest entry, reading only the header."""
    size = file.stat().st_size
    if size != entry["bytes"]:
        raise DatasetError(f"{file} has {size} bytes, the manifest says {entry['bytes']} (truncated or modified)")
    with open(file, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError or TokenError
            raise DatasetError(f"{file} is not a valid .npy file: {exc!r}") from exc
        header_bytes = fh.tell()
    if list(shape) != list(entry["shape"]) or dtype.str != entry["dtype"]:
        raise DatasetError(
            f"{file} holds {dtype.str} {list(shape)}, the manifest says {entry['dtype']} {entry['shape']}"
        )
    expected = header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise DatasetError(f"{file} is truncated: {size} bytes, its header implies {expected}")


def _check_content(ds: Dataset) -> None:
    arrays = ds.arrays()
    spec = ds.env_info
    if arrays["reward"].ndim != 1:
        raise DatasetError(f"field 'reward' has shape {arrays['reward'].shape}, expected (T,)")
    n = int(arrays["reward"].shape[0])
    dims = {"T": n, **asdict(spec)}
    for name, (dtype, symbols) in FIELDS.items():
        array = arrays[name]
        if array.dtype != dtype:
            raise DatasetError(f"field '{name}' has dtype {array.dtype}, expected {dtype}")
        expected = tuple(dims[s] for s in symbols)
        if array.shape != expected:
            raise DatasetError(
                f"field '{name}' has shape {array.shape}, expected {expected} ({', '.join(symbols)})"
            )
    if n == 0:
        raise DatasetError("dataset has no transitions")
    for name, (dtype, _) in FIELDS.items():
        # A .npy file can hold bool bytes other than 0 and 1, which numpy reads as True but the kernels need not.
        if dtype == np.dtype(bool) and arrays[name].view(np.uint8).max() > 1:
            index = _first(arrays[name].view(np.uint8) > 1)
            raise DatasetError(f"field '{name}' holds the byte {arrays[name].view(np.uint8)[index]} at index {index}; "
                               f"a bool array must hold only 0 and 1")
    for name in _FLOAT_FIELDS:
        bad = ~np.isfinite(arrays[name])
        if bad.any():
            index = _first(bad)
            raise DatasetError(f"field '{name}' has a non-finite value {arrays[name][index]} at index {index}")
    actions, avail = arrays["actions"], arrays["avail"]
    out_of_range = (actions < 0) | (actions >= spec.n_actions)
    if out_of_range.any():
        index = _first(out_of_range)
        raise DatasetError(
            f"field 'actions' at index {index}: action {actions[index]} is out of range [0, {spec.n_actions})"
        )
    chosen = np.take_along_axis(avail, actions[..., None], axis=-1)[..., 0]
    if not chosen.all():
        index = _first(~chosen)
        raise DatasetError(
            f"field 'actions' at index {index}: action {actions[index]} is unavailable "
            f"(avail{list(index)} = {avail[index].astype(int).tolist()})"
        )
    _check_episodes(arrays, spec)
    _check_manifest_counts(ds)


def _check_episodes(arrays: Mapping[str, np.ndarray], spec: EnvInfo) -> None:
    start, ends = arrays["episode_start"], arrays["terminated"] | arrays["truncated"]
    if not start[0]:
        raise DatasetError("field 'episode_start' at index 0 is False: the first transition must start an episode")
    if not ends[-1]:
        raise DatasetError(
            f"the last episode is incomplete: neither 'terminated' nor 'truncated' is set at index {len(ends) - 1}"
        )
    mismatch = start[1:] != ends[:-1]
    if mismatch.any():
        t = int(np.argmax(mismatch))
        raise DatasetError(
            f"episode boundaries inconsistent at index {t}: terminated or truncated is {bool(ends[t])} "
            f"but 'episode_start' at index {t + 1} is {bool(start[t + 1])}"
        )
    inner = ~ends[:-1]
    for next_name, name in _CONTINUED:
        differs = np.any((arrays[next_name][:-1] != arrays[name][1:]).reshape(len(inner), -1), axis=1) & inner
        if differs.any():
            t = int(np.argmax(differs))
            raise DatasetError(
                f"field '{next_name}' at index {t} differs from '{name}' at index {t + 1} within one episode"
            )
    starts = np.flatnonzero(start)
    lengths = np.diff(np.append(starts, len(start)))
    too_long = lengths > spec.episode_limit
    if too_long.any():
        k = int(np.argmax(too_long))
        raise DatasetError(
            f"episode starting at index {starts[k]} has {lengths[k]} steps, more than the env's "
            f"episode_limit {spec.episode_limit}"
        )


def _check_manifest_counts(ds: Dataset) -> None:
    counts = ds.manifest["counts"]
    actual = {"transitions": len(ds), "episodes": ds.n_episodes}
    for key, value in actual.items():
        if counts.get(key) != value:
            raise DatasetError(f"manifest counts.{key} is {counts.get(key)!r} but the data hold {value}")
    stats = _return_stats(ds.episode_returns())
    for key, value in stats.items():
        recorded = ds.manifest["returns"].get(key)
        if not isinstance(recorded, (int, float)) or not np.isclose(recorded, value, rtol=1e-9, atol=1e-9):
            raise DatasetError(f"manifest returns.{key} is {recorded!r} but the data give {value}")


def _as_field(name: str, value: npt.ArrayLike) -> np.ndarray:
    """Convert to the field's dtype, refusing conversions that would silently round (floats to ints/bools)."""
    array = np.asarray(value)
    dtype = FIELDS[name][0]
    if dtype.kind in "bi" and array.dtype.kind not in "bui":
        raise DatasetError(f"field '{name}' must hold integers or booleans, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


def _episode_returns(reward: np.ndarray, starts: np.ndarray) -> np.ndarray:
    if starts.size == 0:
        return np.zeros(0)
    return np.add.reduceat(np.asarray(reward, dtype=np.float64), starts)


def _return_stats(returns: np.ndarray) -> dict[str, float | None]:
    if returns.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
    }


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True entry of `mask` (C order)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished `tmp` directory to `target`; an existing `target` is moved aside first and deleted
    only after the rename, so a failure never leaves neither version in place."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old)
