"""``inspo reproduce``: the matrix, Bridge and baselines suites write their tables, records and plots; the run
cache; the errors of a bad environment or dataset; tables without matplotlib; the suites' defaults."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

import inspo
from _nested import approx_nested
from inspo.cli import main
from inspo.reproduce import runner

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_XOR = ["reproduce", "baselines", "--env", "xor", "--seeds", "1", "--iters", "4", "--bc-steps", "2",
            "--episodes", "50"]


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path


@pytest.fixture(autouse=True)
def _has_matplotlib() -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra 'plot': pip install 'inspo[plot]'")


def test_cli_reproduce_matrix_writes_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main(["reproduce", "matrix", "--seeds", "1", "--iters", "4", "--bc-steps", "2", "--episodes", "50",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # no temporary files left
    assert {p.name for p in out.iterdir()} == {"matrix.md", "matrix.json", "matrix.png", "cache"}
    assert printed == (out / "matrix.md").read_text()
    assert "inspo reproduce matrix --seeds 1 --iters 4" in printed and "![matrix](matrix.png)" in printed
    _check_png(out / "matrix.png")
    record = json.loads((out / "matrix.json").read_text())
    assert record["package"]["version"] == inspo.__version__  # which inspo made the table
    assert len(record["rows"]) == printed.count("\n| ") - 1  # one table line per row, after the header
    for row in record["rows"]:
        # The exact solver must give the docs/design.md section 3 numbers whatever the neural budget.
        if row["spec_j"] is not None:
            assert row["tabular"]["mean"] == pytest.approx(row["spec_j"], abs=0.02), row["setting"]
        assert math.isfinite(row["neural_final"]["mean"]) and row["config"]["iters"] == 4


def test_cli_reproduce_bridge_writes_tables(shared_data: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main(["reproduce", "bridge", "--data", str(shared_data), "--datasets", "bridge_optimal", "--seeds", "1",
                 "--iters", "2", "--bc-steps", "2", "--eval-episodes", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out == (out / "bridge.md").read_text()
    _check_png(out / "bridge.png")
    rows = json.loads((out / "bridge.json").read_text())["rows"]
    assert [(r["dataset"], r["method"]) for r in rows] == [("bridge_optimal", "inspo"), ("bridge_optimal", "bc")]
    assert rows[0]["optimum"] == pytest.approx(-1.2355, abs=1e-4)
    assert rows[0]["data_return"] == pytest.approx(-1.262, abs=1e-3)


def test_cli_reproduce_baselines_xor(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, this_machine: str) -> None:
    out = tmp_path / "results"
    assert main([*TINY_XOR, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"baselines_xor.md", "baselines_xor.json", "baselines_xor.png", "cache"}
    assert printed == (out / "baselines_xor.md").read_text()
    assert f"inspo reproduce baselines --env xor --seeds 1 --iters 4 --bc-steps 2 --episodes 50 --out {out}" in printed
    _check_png(out / "baselines_xor.png")
    record = json.loads((out / "baselines_xor.json").read_text())
    datasets = ("xor-aa-ab-ba", "xor-uniform", "xor-ab-ba")
    assert [(r["dataset"], r["method"]) for r in record["rows"]] == [
        (d, m) for d in datasets for m in ("bc", "icq", "omiga", "cfcql", "inspo")]
    for row in record["rows"]:
        numbers = [row["final"]["mean"], row["final"]["std"], row["best"]["mean"], row["data_return"], row["optimum"]]
        assert all(math.isfinite(x) for x in numbers), row
        assert row["optimum"] == 1.0 and row["config"]["iters"] == 4 and row["config"]["gamma"] == 0.0
        assert row["config"]["algo"] == row["method"] and len(row["curves"]) == 1
    # {AB, BA} data always score 1: their data return is known exactly.
    assert record["rows"][-1]["data_return"] == 1.0
    assert "## xor-ab-ba" in printed and "| InSPO |" in printed
    # Runs trained here and runs read from the cache name the same machine: this one.
    assert record["machines"] == {this_machine: 15} and f"made on {this_machine} (15 runs)" in printed
    # One behaviour clone per dataset, made by the first method and reused by the other four (inspo.clones).
    assert len(list((out / "cache" / "clones").glob("*.pt"))) == len(datasets)

    # The second time every run comes from the run cache: nothing is trained, the numbers are the same.
    monkeypatch.setattr(runner, "train", lambda cfg, **_: pytest.fail(f"trained {cfg.algo} again"))
    assert main([*TINY_XOR, "--out", str(out)]) == 0
    assert "15 of 15 runs read from the run cache" in capsys.readouterr().out
    again = json.loads((out / "baselines_xor.json").read_text())
    assert [r["final"] for r in again["rows"]] == [r["final"] for r in record["rows"]]
    assert again["machines"] == record["machines"]


def test_cache_misses_a_changed_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main([*TINY_XOR, "--datasets", "xor-ab-ba", "--out", str(out)]) == 0
    assert "no run cached" in capsys.readouterr().out
    # Another budget is another setting: the run folders are the same, their metrics.json do not match.
    more = [*TINY_XOR, "--datasets", "xor-ab-ba", "--out", str(out)]
    more[more.index("--iters") + 1] = "5"
    assert main(more) == 0
    assert "no run cached" in capsys.readouterr().out
    rows = json.loads((out / "baselines_xor.json").read_text())["rows"]
    assert [r["dataset"] for r in rows] == ["xor-ab-ba"] * 5 and {r["config"]["iters"] for r in rows} == {5}


def test_a_field_added_later_keeps_the_cache_and_the_headers() -> None:
    """A run recorded before ``critic_alpha`` existed matches a config that leaves it unset; headers name it only
    where it is set."""
    config = inspo.TrainConfig(dataset="d").to_dict()
    recorded = {k: v for k, v in config.items() if k != "critic_alpha"}
    assert runner.settings(recorded, "sha", "0.1.0") == runner.settings(config, "sha", "0.1.0")
    assert runner.settings({**config, "critic_alpha": 0.5}, "sha", "0.1.0") != runner.settings(config, "sha", "0.1.0")
    assert "critic_alpha" not in runner.hyper(config)
    assert runner.hyper({**config, "critic_alpha": 0.5}).endswith(", critic_alpha=0.5")


def test_a_finished_run_on_other_data_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "results"
    args = [*TINY_XOR, "--datasets", "xor-ab-ba", "--out", str(out)]
    assert main(args) == 0
    # As if another machine type had made this run on its own version of the data (docs/design.md 4.4).
    record = out / "cache" / "runs" / "baselines" / "xor-ab-ba" / "icq" / "seed0" / "metrics.json"
    other = {**json.loads(record.read_text()), "dataset_sha256": "ab" * 32}
    record.write_text(json.dumps(other))
    capsys.readouterr()
    monkeypatch.setattr(runner, "train", lambda cfg, **_: pytest.fail(f"trained {cfg.algo}"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{record.parent} holds a finished run on other data (manifest SHA-256 abababababab...)" in err
    assert "Traceback" not in err and json.loads(record.read_text()) == other


@pytest.mark.parametrize("args, message", [
    (["--env", "starcraft"], "invalid choice: 'starcraft'"),
    ([], "--env (one of xor, mne, bridge, all) is required by the baselines suite"),
    (["--env", "mne", "--datasets", "xor-uniform"], "xor-uniform: not a dataset of --env mne"),
])
def test_baselines_bad_env_or_dataset(args: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["reproduce", "baselines", *args, "--out", str(tmp_path)])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, nothing trained


def test_env_is_only_for_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "matrix", "--env", "xor", "--out", str(tmp_path)]) == 2
    assert "got suite 'matrix' with --env xor" in capsys.readouterr().err


def test_tables_without_matplotlib(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "results"
    assert main([*TINY_XOR, "--datasets", "xor-uniform", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert {p.name for p in out.iterdir()} == {"baselines_xor.md", "baselines_xor.json", "cache"}
    assert captured.out == (out / "baselines_xor.md").read_text() and ".png" not in captured.out
    assert captured.err.count("\n") == 1 and "baselines_xor.png not drawn" in captured.err
    assert "pip install 'inspo[plot]'" in captured.err


def test_suite_defaults_are_frozen_and_exported() -> None:
    import inspo.reproduce as reproduce

    assert all(hasattr(reproduce, name) for name in reproduce.__all__)
    # The public constants are views of each suite's one dataclass of defaults, not copies that could drift.
    assert reproduce.BRIDGE_SETTINGS is reproduce.BRIDGE.settings
    assert reproduce.BRIDGE_DATASETS == reproduce.BASELINE_ENVS["bridge"].datasets == ("bridge_mix", "bridge_optimal")
    assert reproduce.BASELINE_ENVS["bridge"].settings == {"eval_episode_limit": reproduce.BRIDGE.eval_limit}
    assert reproduce.BASELINE_ENVS["smax"].episodes == reproduce.SMAX.episodes
    assert reproduce.SMAX_MAPS is reproduce.SMAX.maps and reproduce.MATRIX_CASES is reproduce.MATRIX.cases
    for suite in (reproduce.MATRIX, reproduce.BRIDGE, reproduce.BASELINES, reproduce.SMAX):
        with pytest.raises(dataclasses.FrozenInstanceError):
            suite.seeds = (0,)  # type: ignore[misc]


def _without_timings(record: dict, folder: str) -> dict:
    """A table's record (or a run's metrics.json) without what two makings of it may not share: dates, wall and CPU
    times, speeds, the output folder and the number of CPUs."""
    text = json.dumps(record).replace(folder, "<out>")
    drop = {"date", "wall_time", "wall_time_s", "cpu_time", "cpu_time_s", "compute_cpu_hours", "cpu_count",
            "updates_per_second", "command"}

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(text))  # type: ignore[return-value]


def test_populations_make_the_table_of_runs_trained_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    flags = [*TINY_XOR, "--datasets", "xor-ab-ba"]
    flags[flags.index("--seeds") + 1] = "3"
    assert main([*flags, "--no-populations", "--out", str(tmp_path / "alone")]) == 0
    sizes: list[int] = []
    real = runner.train_members

    def train_members(configs: list[inspo.TrainConfig], **kwargs: object) -> object:
        sizes.append(len(configs))
        return real(configs, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "train_members", train_members)
    assert main([*flags, "--out", str(tmp_path / "together")]) == 0
    capsys.readouterr()
    assert sizes == [3] * 5  # one population of the three seeds per method
    tables = [_without_timings(json.loads((tmp_path / name / "baselines_xor.json").read_text()), name)
              for name in ("alone", "together")]
    assert tables[1] == approx_nested(tables[0])  # stacked members: float32 arithmetic in other kernels
    # Every run's folder ends as its single run's: the same files and the same metrics.json, timings aside.
    alone = sorted((tmp_path / "alone" / "cache" / "runs").rglob("metrics.json"))
    assert len(alone) == 15
    for path in alone:
        other = tmp_path / "together" / path.relative_to(tmp_path / "alone")
        assert sorted(p.name for p in other.parent.iterdir()) == sorted(p.name for p in path.parent.iterdir())
        assert (_without_timings(json.loads(other.read_text()), "together")
                == approx_nested(_without_timings(json.loads(path.read_text()), "alone"))), path
