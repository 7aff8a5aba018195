"""Bad input of every kind ends in one clear error: exit code 2 (README, "Exit codes"), one line on stderr naming the
file, key or flag, no traceback, and nothing written.

The first half holds one regression test per class of input that used to end in a traceback (or a wrong answer);
the second half lets hypothesis generate corruptions of dataset manifests, of ``--config`` files and of command
lines. Everything runs in-process through :func:`inspo.cli.main`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import sys
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inspo import checkpoint, flags
from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import DatasetError, generate_matrix, load_dataset, save_dataset
from inspo.data.format import manifest_digest
from inspo.errors import EXIT_INTERRUPTED, EXIT_USAGE
from inspo.training import train

HYPOTHESIS = settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- helpers ------------------------------------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``inspo argv`` (argparse's own errors exit through SystemExit)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2, and stderr is exactly one line, no traceback, holding every needle."""
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one line on stderr, got:\n{err}"
    for needle in needles:
        assert needle in err, err


def rewrite_manifest(src: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Copy dataset ``src`` to ``dst`` with its manifest changed and its ``manifest_sha256`` recomputed, as a
    careless editor would: the digest check alone cannot catch it."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    change(manifest)
    if isinstance(manifest, dict):
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_dataset(generate_matrix("xor", "xor-uniform", 20, seed=0), tmp_path_factory.mktemp("data") / "xor")


@pytest.fixture(scope="module")
def run_dir(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run without behaviour cloning (its bc_nll is NaN), with final.pt and checkpoint.pt."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(dataset=str(dataset), iters=2, bc_steps=0, batch_size=8, eval_every=1, eval_episodes=2,
                      out=str(out)))
    return out


# -- 1. manifests edited after writing ----------------------------------------------------------------------------
MANIFEST_EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "file entry of the wrong type": (lambda m: m["files"].__setitem__("obs.npy", 5), "'files.obs.npy'"),
    "file entry without bytes": (lambda m: m["files"]["obs.npy"].pop("bytes"), "lacks ['bytes']"),
    "shape null": (lambda m: m["files"]["reward.npy"].__setitem__("shape", None), "'files.reward.npy.shape'"),
    "options not a mapping": (lambda m: m["env"].__setitem__("options", [1]), "'env.options'"),
    "counts a float": (lambda m: m["counts"].__setitem__("episodes", 20.5), "'counts.episodes'"),
    "spec an integer": (lambda m: m["env"].__setitem__("spec", 3), "'env.spec'"),
    "unknown top-level key": (lambda m: m.__setitem__("extra", 1), "unknown ['extra']"),
    "unknown env id": (lambda m: (m["env"].__setitem__("id", "nope"), m["env"]["spec"].__setitem__("name", "nope")),
                       "unknown environment 'nope'"),
    "unknown env option": (lambda m: m["env"]["options"].__setitem__("speed", 2), "no option 'speed'"),
}


@pytest.mark.parametrize("edit", sorted(MANIFEST_EDITS))
def test_edited_manifest_is_one_clear_error(edit: str, dataset: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    change, needle = MANIFEST_EDITS[edit]
    rewrite_manifest(dataset, tmp_path / "bad", change)
    with pytest.raises(DatasetError):
        load_dataset(tmp_path / "bad")
    # verify runs the checks training runs (one function): what verify refuses, training refuses, and the reverse
    assert_one_clear_error(*run(capsys, ["datasets", "verify", str(tmp_path / "bad")])[::2], needle)
    code, _, err = run(capsys, ["train", "--dataset", str(tmp_path / "bad"), "--out", str(tmp_path / "run")])
    assert_one_clear_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_datasets_list_reports_every_bad_dataset_and_goes_on(dataset: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    rewrite_manifest(dataset, tmp_path / "a_bad", MANIFEST_EDITS["shape null"][0])
    rewrite_manifest(dataset, tmp_path / "b_bad", MANIFEST_EDITS["unknown env id"][0])
    shutil.copytree(dataset, tmp_path / "c_good")
    code, out, err = run(capsys, ["datasets", "list", str(tmp_path)])
    assert_one_clear_error(code, err, "2 of 3 datasets", "a_bad", "b_bad")
    lines = out.splitlines()
    assert "a_bad  INVALID: " in lines[0] and "'files.reward.npy.shape'" in lines[0]
    assert "b_bad  INVALID: " in lines[1] and "c_good  env=xor  episodes=20" in lines[2]


# -- 2. configs and flags -----------------------------------------------------------------------------------------
CONFIGS: dict[str, tuple[Any, str]] = {
    "a list": ([1, 2], "holds a JSON list"),
    "iters a string": ({"iters": "5"}, "config.iters must be an integer, got '5'"),
    "iters a float": ({"iters": 5.5}, "config.iters must be an integer, got 5.5"),
    "batch_size a boolean": ({"batch_size": True}, "config.batch_size must be an integer, got True"),
    "dataset a number": ({"dataset": 7}, "config.dataset must be a string"),
    "beyond 64 bits": ({"seed": 2**64}, "config.seed must be a 64-bit integer"),
    "z_max negative": ({"z_max": -1.0}, "config.z_max must be > 0"),
    "alpha not finite": ({"alpha": math.inf}, "config.alpha must be a finite number"),
    "nested a string": ({"icq": "hot"}, "config.icq must be a ICQConfig"),
    "nested field a string": ({"icq": {"critic_temp": "1"}}, "config.icq.critic_temp must be a number"),
    "nested field not a choice": ({"icq": {"mixer": "qmix"}},
                                  "config.icq.mixer must be one of ('paper', 'normalised'), got 'qmix'"),
    "flat nested field a boolean": ({"cql_alpha": False}, "config.cfcql.cql_alpha must be a number"),
    "env_options a list": ({"env_options": [1]}, "config.env_options must be a mapping"),
    "threads a float": ({"threads": 1.0}, "config.threads must be an integer"),
    "critic_alpha negative": ({"critic_alpha": -0.5}, "config.critic_alpha must be >= 0 with critic_alpha + beta > 0"),
    "critic_alpha for icq": ({"algo": "icq", "critic_alpha": 1.0}, "config.critic_alpha is InSPO's"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config_file_is_one_clear_error(case: str, dataset: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    values, needle = CONFIGS[case]
    if isinstance(values, dict):
        values = {"dataset": str(dataset), **values}
    (tmp_path / "c.json").write_text(json.dumps(values))
    code, _, err = run(capsys, ["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "run")])
    assert_one_clear_error(code, err, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--env-option", "speed=2"], "environment 'xor' has no option 'speed'; its options: episode_limit"),
    (["--env-option", "episode_limit=true"], "episode_limit must be a positive integer, got True"),
    (["--iters", "5.5"], "argument --iters: invalid int value: '5.5'"),
    (["--z-max", "0"], "config.z_max must be > 0"),
    (["--critic-alpha", "0"], "critic_alpha + beta > 0 (the critic's temperature), got 0.0 + 0.0"),
    (["--config", "no/such/file.json"], "config file no/such/file.json does not exist"),
])
def test_bad_train_flags_are_one_clear_error(argv: list[str], needle: str, dataset: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, ["train", "--dataset", str(dataset), "--out", str(tmp_path / "run"), *argv])
    assert_one_clear_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_out_beneath_a_file_is_refused_before_any_work(dataset: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, ["train", "--dataset", str(dataset), "--out", str(tmp_path / "file" / "run")])
    assert_one_clear_error(code, err, f"{tmp_path / 'file'} is a file")
    code, _, err = run(capsys, ["datasets", "generate", "--env", "xor", "--preset", "xor-ab", "--episodes", "5",
                                "--out", str(tmp_path / "file" / "ds")])
    assert_one_clear_error(code, err, f"{tmp_path / 'file'} is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_interrupt_before_the_training_loop_is_one_line_and_130(dataset: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("inspo.training.load_dataset", interrupted)
    code, _, err = run(capsys, ["train", "--dataset", str(dataset), "--out", str(tmp_path / "run")])
    assert code == EXIT_INTERRUPTED and err == "inspo train: error: interrupted (SIGINT)\n"


# -- 3. evaluate and resume: checkpoints of the wrong kind, and missing extras --------------------------------------
def test_evaluate_a_training_state_says_to_use_final_pt(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, ["evaluate", str(run_dir / "checkpoint.pt")])
    assert_one_clear_error(code, err, "is a training run's full state", str(run_dir / "final.pt"))


@pytest.mark.parametrize(("payload", "needle"), [
    (None, "payload cannot be loaded"),
    ({}, "lacks the section(s) ['format', 'env', 'env_options', 'policy_kwargs', 'policy']"),
    ([1, 2], "holds a list"),
    ("policy_kwargs", "cannot be rebuilt from policy_kwargs"),
])
def test_evaluate_a_broken_checkpoint_is_one_clear_error(payload: Any, needle: str, run_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.pt"
    if payload is None:  # a valid header over an empty payload
        path.write_bytes(b"inspo-checkpoint sha256=" + hashlib.sha256(b"").hexdigest().encode() + b"\n")
    elif payload == "policy_kwargs":
        ckpt = checkpoint.load(run_dir / "final.pt")
        checkpoint.save({**ckpt, "policy_kwargs": {**ckpt["policy_kwargs"], "hidden": 3}}, path)
    else:
        checkpoint.save(payload, path)
    assert_one_clear_error(*run(capsys, ["evaluate", str(path)])[::2], needle)


def test_resume_from_a_checkpoint_without_its_sections(run_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint.save({"config": {}}, tmp_path / "checkpoint.pt")
    code, _, err = run(capsys, ["train", "--resume", str(tmp_path)])
    assert_one_clear_error(code, err, "lacks the section(s) ['run', 'bc', 'learner', 'generator', 'torch_rng']")


def test_evaluate_without_an_optional_extra_names_the_pip_command(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "jax", None)  # `import jax` now fails as if jax were not installed
    # Environments built by earlier tests are cached per map; this one must import jax.
    from inspo.envs import smax

    monkeypatch.setattr(smax, "_backend", functools.lru_cache(maxsize=None)(smax._backend.__wrapped__))
    code, _, err = run(capsys, ["evaluate", str(run_dir / "final.pt"), "--env", "smax:3m"])
    assert_one_clear_error(code, err, "pip install 'inspo[smax]'")


# -- 4. strict JSON -----------------------------------------------------------------------------------------------
def _strict_json(text: str) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_refuses_zero_episodes_and_prints_strict_json(run_dir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, ["evaluate", str(run_dir / "final.pt"), "--episodes", "0"])
    assert_one_clear_error(code, err, "--episodes: expected an integer >= 1, got 0")
    code, out, _ = run(capsys, ["evaluate", str(run_dir / "final.pt"), "--episodes", "2"])
    assert code == 0 and _strict_json(out)["episodes"] == 2


def test_metrics_of_a_run_without_behaviour_cloning_are_strict_json(run_dir: Path) -> None:
    metrics = _strict_json((run_dir / "metrics.json").read_text())
    assert metrics["bc_nll"] is None  # NaN: no behaviour cloning ran


# -- 5. hypothesis: corrupted manifests ----------------------------------------------------------------------------
_FREE_FORM = {("behaviour",), ("env", "options")}
"""Mappings whose content the schema leaves to their writer: corrupted only as a whole."""
_NULLABLE = {("seed",), ("returns", "mean"), ("returns", "std"), ("returns", "min"), ("returns", "max")}


def _paths(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a manifest the schema types (not manifest_sha256, which the test recomputes)."""
    found = [path] if path else []
    if isinstance(value, dict) and path not in _FREE_FORM:
        for key, inner in value.items():
            if path or key != "manifest_sha256":
                found += _paths(inner, (*path, key))
    return found


def _kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return repr(value) if value is None else "bool"
    return {int: "int", float: "number", str: "str", list: "list", dict: "dict"}.get(type(value), "other")


def _still_valid(path: tuple[str, ...], old: Any, new: Any) -> bool:
    """Whether the schema accepts ``new`` in place of ``old`` at ``path`` (a change of value, not of type)."""
    if new is None:
        return path in _NULLABLE
    if path == ("behaviour",):
        return isinstance(new, (dict, str))
    if _kind(old) == "number":
        return _kind(new) in ("int", "number") and math.isfinite(new)
    return _kind(new) == _kind(old)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=6)


@HYPOTHESIS
@given(data=st.data())
def test_corrupted_manifests_are_one_clear_error(data: st.DataObject, dataset: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    path = data.draw(st.sampled_from(_paths(manifest)), label="path")
    action = data.draw(st.sampled_from(["replace", "delete", "add a key"]), label="action")
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    if action == "replace":
        new = data.draw(_JSON, label="new value")
        assume(not _still_valid(path, old, new))
    elif action == "add a key":
        assume(isinstance(old, dict) and path not in _FREE_FORM and path != ("files",))
        key = data.draw(st.text(max_size=8).filter(lambda k: k not in old), label="new key")

    def change(m: dict[str, Any]) -> None:
        target = m
        for k in path[:-1]:
            target = target[k]
        if action == "replace":
            target[path[-1]] = new
        elif action == "delete":
            del target[path[-1]]
        else:
            target[path[-1]][key] = 1

    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad"
        rewrite_manifest(dataset, bad, change)
        with pytest.raises(DatasetError):
            load_dataset(bad, verify=False)  # the schema alone refuses it
        assert_one_clear_error(*run(capsys, ["datasets", "verify", str(bad)])[::2])
        code, _, err = run(capsys, ["train", "--dataset", str(bad), "--out", str(Path(tmp) / "run")])
        assert_one_clear_error(code, err)
        assert not (Path(tmp) / "run").exists()


# -- 6. hypothesis: corrupted --config files -----------------------------------------------------------------------
_HINTS = typing.get_type_hints(TrainConfig)
_FLAT = {flag.name: flag for flag in flags.flags_of(TrainConfig)}


def _config_value_is_of_its_type(name: str, value: Any) -> bool:
    """Whether ``value`` has the type of config key ``name`` (then it might be valid, and the test skips it)."""
    outer, *inner = _FLAT[name].path
    hint = typing.get_type_hints(_HINTS[outer])[inner[0]] if inner else _HINTS[outer]
    return flags._type_error(hint, value) is None


@HYPOTHESIS
@given(data=st.data())
def test_corrupted_config_files_are_one_clear_error(data: st.DataObject, dataset: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    values: Any = {"dataset": str(dataset), "iters": 1, "bc_steps": 1, "eval_episodes": 1}
    action = data.draw(st.sampled_from(["wrong type", "unknown key", "not an object"]), label="action")
    if action == "wrong type":
        name = data.draw(st.sampled_from(sorted(set(_FLAT) - {"out"})), label="key")
        value = data.draw(_JSON, label="value")
        assume(not _config_value_is_of_its_type(name, value))
        values[name] = value
    elif action == "unknown key":
        key = data.draw(st.text(max_size=10).filter(lambda k: k not in _FLAT and k not in _HINTS), label="key")
        values[key] = data.draw(_JSON, label="value")
    else:
        values = data.draw(_JSON.filter(lambda v: not isinstance(v, dict)), label="document")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.json").write_text(json.dumps(values))  # NaN and Infinity included: Python reads them back
        out = Path(tmp) / "run"
        code, _, err = run(capsys, ["train", "--config", str(Path(tmp) / "c.json"), "--out", str(out)])
        assert_one_clear_error(code, err)
        assert not out.exists()


# -- 7. hypothesis: command lines ---------------------------------------------------------------------------------
_INT_FLAGS = sorted(f.option for f in flags.flags_of(TrainConfig) if f.kind is int)
_FLOAT_FLAGS = sorted(f.option for f in flags.flags_of(TrainConfig) if f.kind is float)


def _parses(text: str, kind: type) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


@HYPOTHESIS
@given(data=st.data())
def test_hostile_command_lines_are_one_clear_error(data: st.DataObject, dataset: Path, run_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
    case = data.draw(st.sampled_from(["int flag", "float flag", "env option", "dataset path", "checkpoint path",
                                      "episodes"]), label="case")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out")
        train_argv = ["train", "--dataset", str(dataset), "--out", out, "--iters", "1", "--bc-steps", "1"]
        if case in ("int flag", "float flag"):
            kind, options = (int, _INT_FLAGS) if case == "int flag" else (float, _FLOAT_FLAGS)
            value = data.draw(text, label="value")
            assume(not _parses(value, kind))
            argv = [*train_argv, data.draw(st.sampled_from(options), label="flag"), value]
        elif case == "env option":
            key = data.draw(text.filter(lambda k: "=" not in k and k != "episode_limit"), label="key")
            argv = [*train_argv, "--env-option", f"{key}=1"]
        elif case == "dataset path":
            argv = ["datasets", "verify", str(Path(tmp) / data.draw(text, label="path"))]
        elif case == "checkpoint path":
            argv = ["evaluate", str(Path(tmp) / data.draw(text, label="path"))]
        else:
            argv = ["evaluate", str(run_dir / "final.pt"), "--episodes",
                    str(data.draw(st.integers(max_value=0), label="episodes"))]
        code, _, err = run(capsys, argv)
        assert_one_clear_error(code, err)
        assert not Path(out).exists()


# -- bool memory that is not 0/1 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_read_any_nonzero_bool_byte_as_true(dtype: torch.dtype) -> None:
    """Memory viewed as bool may hold bytes other than 0 and 1: the CPU kernels agree with their references on the
    same mask written with 0 and 1 only (the vectorised paths used to read only the lowest bit)."""
    from inspo import ops, reference

    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 4, (64, 12), generator=gen, dtype=torch.uint8)
    raw[:, 0] = 2  # every row keeps an available action
    clean = raw.ne(0)
    actions = torch.multinomial(clean.double(), 1, generator=gen).squeeze(1)
    logits = torch.randn(64, 12, generator=gen, dtype=dtype)
    got = ops.masked_softmax_stats(logits, raw.view(torch.bool), actions)
    want = reference.masked_softmax_stats(logits, clean, actions)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    logp = torch.randn(5, 64, generator=gen, dtype=dtype)
    mask = torch.randint(0, 3, (5, 64), generator=gen, dtype=torch.uint8)
    got = ops.advantage_weights(logp[0], logp[1], logp, logp.flip(0), mask.view(torch.bool), -1, 1.0, 0.0)
    want = reference.advantage_weights(logp[0], logp[1], logp, logp.flip(0), mask.ne(0), -1, 1.0, 0.0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_dataset_with_bool_bytes_other_than_0_and_1_is_refused(tmp_path: Path) -> None:
    from inspo.data import Dataset

    ds = generate_matrix("xor", "xor-uniform", 20, seed=0)
    avail = ds.arrays()["avail"].copy()
    avail.view(np.uint8)[3, 0, 1] = 2
    with pytest.raises(DatasetError, match=r"field 'avail' holds the byte 2 at index \(3, 0, 1\)"):
        Dataset(**{**ds.arrays(), "avail": avail}, manifest=ds.manifest).validate()
