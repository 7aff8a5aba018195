"""What a study made in several sittings needs from ``inspo reproduce``: partial tables from the run cache
(``--partial``), hyper-parameters per dataset and method (``--hyper``), each SMAX dataset's held-out cloning length
in the baselines suite (``--bc-steps auto``), and the ``study`` suite's fixed protocol."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from inspo.bc_length import BCLengthSettings
from inspo.cli import main
from inspo.config import TrainConfig
from inspo.reproduce import runner
from inspo.reproduce.baselines import BASELINES, reproduce_baselines
from inspo.reproduce.study import STUDY, _search, _tuning_markdown

RECORDS = ("runs/**/metrics.json", "tune/*/*/tune.json", "tune/*/*/trials/*/result.json", "bc_length/*.json")
"""The files of ``<out>/cache`` that ``results/.gitignore`` keeps: what says that a run, search or measurement is
done."""
TINY = ["reproduce", "baselines", "--env", "xor", "--datasets", "xor-ab-ba", "--iters", "4", "--bc-steps", "2",
        "--episodes", "50"]


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tables are the subject here; the figures are tested in test_reproduce.py.
    monkeypatch.setattr("inspo.reproduce.baselines.grouped_bar_chart", lambda *a, **k: None)


def test_partial_table_shows_the_cached_runs_and_lists_the_missing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   this_machine: str) -> None:
    out = tmp_path / "results"
    assert main([*TINY, "--seeds", "2", "--out", str(out)]) == 0
    full = json.loads((out / "baselines_xor.json").read_text())
    shutil.rmtree(out / "cache" / "runs" / "baselines" / "xor-ab-ba" / "inspo" / "seed1")
    capsys.readouterr()

    monkeypatch.setattr(runner, "train", lambda cfg, **_: pytest.fail(f"--partial trained {cfg.algo}"))
    assert main([*TINY, "--seeds", "2", "--partial", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads((out / "baselines_xor.json").read_text())
    assert record["partial"] and record["missing"] == ["xor-ab-ba inspo: seed 1"]
    assert "## Not made yet\n\n- xor-ab-ba inspo: seed 1" in text
    assert "9 of 10 runs read from the run cache" in text and "partial table: 1 runs not made yet" in text
    assert f"made on {this_machine} (9 runs)" in text and record["machines"] == {this_machine: 9}
    inspo_row = next(r for r in record["rows"] if r["method"] == "inspo")
    assert inspo_row["seeds_done"] == [0] and "| InSPO |" in text and "| 1 of 2 |" in text
    # Each learner's mean return at the evaluated iterations (BC trains no learner): here InSPO's one seed's.
    curves = text.split("Mean return over the seeds, by iteration:")[1].split("## Not made yet")[0]
    at = {int(it): value for it, value in inspo_row["curves"][0]}
    assert "| iteration | 0 | 1 | 2 | 3 | 4 |" in curves and "| BC |" not in curves
    assert "| InSPO | " + " | ".join(f"{at[it]:.3f}" for it in range(5)) + " |" in curves
    full_inspo = next(r for r in full["rows"] if r["method"] == "inspo")
    assert inspo_row["final"]["values"] == full_inspo["final"]["values"][:1]
    # The other methods' rows are those of the full table.
    for got, want in zip(record["rows"][:4], full["rows"][:4], strict=True):
        assert got["final"] == want["final"] and got["seeds_done"] == [0, 1]
    # The data are there, no run is.
    shutil.rmtree(out / "cache" / "runs")
    assert main([*TINY, "--seeds", "2", "--partial", "--out", str(out)]) == 2
    assert "no run of this table is in the run cache" in capsys.readouterr().err


def test_a_partial_table_counts_the_runs_of_data_not_made_yet(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main([*TINY, "--seeds", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--datasets", "xor-ab-ba", "xor-uniform", "--seeds", "1", "--partial", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert json.loads((out / "baselines_xor.json").read_text())["unmade_datasets"] == ["xor-uniform"]
    # Five methods, one seed: xor-ab-ba's five runs are there, xor-uniform's five are not, nor are its data.
    assert "5 of 10 runs read from the run cache" in text and "partial table: 5 runs not made yet" in text
    assert "- xor-uniform (no dataset or cloning length yet)" in text


def test_partial_table_of_an_empty_cache_makes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--seeds", "1", "--partial", "--out", str(tmp_path / "results")]) == 2
    assert "none of this table's datasets (with its cloning length) is in" in capsys.readouterr().err
    assert not (tmp_path / "results" / "baselines_xor.md").exists()
    assert not (tmp_path / "results" / "cache" / "data").exists()  # no dataset generated either


def test_hyper_file_sets_fields_of_one_method_on_one_dataset(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    hyper = tmp_path / "hyper.json"
    hyper.write_text(json.dumps({"xor-ab-ba": {"inspo": {"alpha": 0.5, "rho_max": 2.0}, "icq": {}}}))
    out = tmp_path / "results"
    assert main([*TINY, "--seeds", "1", "--hyper", str(hyper), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads((out / "baselines_xor.json").read_text())
    alphas = {r["method"]: (r["config"]["alpha"], r["config"]["rho_max"]) for r in record["rows"]}
    assert alphas["inspo"] == (0.5, 2.0) and alphas["icq"] == alphas["bc"] == (0.2, 100.0)
    assert record["hyper"] == {"xor-ab-ba": {"inspo": {"alpha": 0.5, "rho_max": 2.0}, "icq": {}}}
    assert "tuned over them: xor-ab-ba InSPO: alpha=0.5, rho_max=2.0." in text
    run = json.loads((out / "cache" / "runs" / "baselines" / "xor-ab-ba" / "inspo" / "seed0" / "metrics.json")
                     .read_text())
    assert run["config"]["alpha"] == 0.5


@pytest.mark.parametrize("hyper, message", [
    ({"xor-nope": {"inspo": {"alpha": 0.5}}}, "'xor-nope' is not a dataset of xor"),
    ({"xor-ab-ba": {"ppo": {"alpha": 0.5}}}, "'ppo' is not one of bc, icq, omiga, cfcql, inspo"),
    ({"xor-ab-ba": {"inspo": {"iters": 9, "seed": 3}}}, "iters, seed belong to the protocol"),
    ({"xor-ab-ba": {"inspo": {"alpha": -1.0}}}, "alpha"),
    ({"xor-ab-ba": {"inspo": {"alhpa": 1.0}}}, "alhpa"),
    ([1, 2], "expected {dataset or map: {method: {field: value}}}, got list"),
])
def test_bad_hyper_files_are_refused_before_training(hyper: object, message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hyper.json"
    path.write_text(json.dumps(hyper))
    assert main([*TINY, "--seeds", "1", "--hyper", str(path), "--out", str(tmp_path / "results")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_hyper_and_partial_are_for_baselines_and_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "matrix", "--partial", "--out", str(tmp_path)]) == 2
    assert "--partial is for the baselines and study suites, not 'matrix'" in capsys.readouterr().err
    (tmp_path / "h.json").write_text("{}")
    assert main(["reproduce", "study", "--hyper", str(tmp_path / "h.json"), "--out", str(tmp_path)]) == 2
    assert "--hyper is for the baselines suite, not 'study' (the study tunes its own)" in capsys.readouterr().err
    (tmp_path / "h.json").write_text("{not json")
    assert main([*TINY, "--hyper", str(tmp_path / "h.json"), "--out", str(tmp_path)]) == 2
    assert "h.json: not valid JSON" in capsys.readouterr().err


def test_study_protocol_is_fixed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (STUDY.iters * 256, STUDY.episodes, len(STUDY.seeds)) == (10_240_000, 5000, 5)
    assert STUDY.tune_seed not in STUDY.seeds and set(STUDY.tune_fields) == {"icq", "omiga", "cfcql", "inspo"}
    assert len(STUDY.maps) * len(STUDY.qualities) == 16
    for flag in (["--iters", "5"], ["--bc-steps", "9"], ["--episodes", "9"], ["--eval-episodes", "9"]):
        assert main(["reproduce", "study", *flag, "--out", str(tmp_path)]) == 2
        assert "the study's budget, cloning, episodes and evaluation are its protocol" in capsys.readouterr().err
    assert main(["reproduce", "study", "--maps", "2s3z", "--partial", "--out", str(tmp_path)]) == 2
    assert "a partial table reads the run cache's records only for data made here" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("jaxmarl") is None,
                    reason="SMAX needs the optional extra: pip install 'inspo[smax]'")
def test_baselines_on_smax_clone_for_each_datasets_heldout_length(tmp_path: Path) -> None:
    suite = replace(BASELINES, methods=("bc", "icq"),
                    bc_length=BCLengthSettings(max_steps=6, every=2, patience=2, heldout_every=2))
    out = tmp_path / "res"
    record = reproduce_baselines("smax", [0], out, iters=2, bc_steps="auto", datasets=["3m-random"], episodes=8,
                                 eval_episodes=4, suite=suite, hyper={"3m": {"icq": {"alpha": 0.7}}})
    length = record["bc_lengths"]["3m-random"]
    assert (length["train_episodes"], length["heldout_episodes"]) == (4, 4)
    assert [(r["method"], r["bc_steps"], r["config"]["alpha"]) for r in record["rows"]] == [
        ("bc", length["steps"], 0.2), ("icq", length["steps"], 0.7)]  # the map's entry reaches its datasets
    assert all(r["bc_heldout_nll"] == length["heldout_nll"] for r in record["rows"])
    text = (out / "baselines_smax.md").read_text()
    assert f"cloning length {length['steps']} steps (held-out NLL {length['heldout_nll']:.4f})" in text
    if importlib.util.find_spec("matplotlib") is not None:  # the learning curves, one colour per method
        assert (out / "baselines_smax.png").read_bytes().startswith(b"\x89PNG")
    # A partial table of the same study reads everything back, the cloning length included.
    again = reproduce_baselines("smax", [0], out, iters=2, bc_steps="auto", datasets=["3m-random"], episodes=8,
                                eval_episodes=4, suite=suite, hyper={"3m": {"icq": {"alpha": 0.7}}}, partial=True)
    assert again["missing"] == [] and [r["final"] for r in again["rows"]] == [r["final"] for r in record["rows"]]
    with pytest.raises(ValueError, match="bc_steps 'auto' .* is for SMAX; got env 'xor'"):
        reproduce_baselines("xor", [0], out, bc_steps="auto")
    # A misspelt map would silently tune nothing: it is refused before anything runs.
    with pytest.raises(ValueError, match="'2s3' is not a dataset of smax or a SMAX map"):
        reproduce_baselines("smax", [0], tmp_path / "other", datasets=["3m-random"], hyper={"2s3": {"icq": {}}})
    assert not (tmp_path / "other").exists()


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("jax", "jaxmarl", "smac")),
                    reason="needs the optional extras smax (jax, jaxmarl) and tune (SMAC3)")
def test_methods_trains_and_tabulates_a_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hyper = tmp_path / "hyper.json"  # entries of methods left out are allowed, and left out of the record
    hyper.write_text(json.dumps({"xor-ab-ba": {"inspo": {"alpha": 0.5}, "icq": {"alpha": 0.1}}}))
    out = tmp_path / "results"
    assert main([*TINY, "--seeds", "1", "--methods", "inspo", "bc", "--hyper", str(hyper), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads((out / "baselines_xor.json").read_text())
    assert record["methods"] == ["bc", "inspo"] and [r["method"] for r in record["rows"]] == ["bc", "inspo"]
    assert record["hyper"] == {"xor-ab-ba": {"inspo": {"alpha": 0.5}}}
    assert "--seeds 1 --iters 4 --bc-steps 2 --episodes 50 --datasets xor-ab-ba --methods bc inspo --out" in text
    assert sorted(p.parts[-3] for p in (out / "cache" / "runs").rglob("metrics.json")) == ["bc", "inspo"]
    # The whole table, from the cache: the other methods are still to be made.
    assert main([*TINY, "--seeds", "1", "--partial", "--hyper", str(hyper), "--out", str(out)]) == 0
    missing = json.loads((out / "baselines_xor.json").read_text())["missing"]
    assert missing == [f"xor-ab-ba {m}: seed 0" for m in ("icq", "omiga", "cfcql")]
    capsys.readouterr()
    assert main(["reproduce", "matrix", "--methods", "inspo", "--out", str(tmp_path / "m")]) == 2
    assert "--methods is for the baselines and study suites, not 'matrix'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*TINY, "--methods", "ppo", "--out", str(tmp_path / "m")])
    assert "invalid choice: 'ppo'" in capsys.readouterr().err


def test_study_tunes_each_method_then_trains_the_table_with_the_incumbents(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from inspo.reproduce.study import reproduce_study

    protocol = replace(STUDY, maps=("3m",), qualities=("random",), seeds=(0,), episodes=8, iters=2, evaluations=1,
                       eval_episodes=2, tune_quality="random", tune_trials=2, tune_iters=2, tune_evaluations=1,
                       tune_eval_episodes=2, tune_fields={"icq": ("alpha",)})
    suite = replace(BASELINES, methods=("bc", "icq"),
                    bc_length=BCLengthSettings(max_steps=4, every=2, patience=1, heldout_every=2))
    monkeypatch.chdir(tmp_path)  # --out as a user gives it: relative to the working folder
    out = Path("study")
    out.mkdir()  # incumbents found in earlier sittings, of other methods and maps, stay
    earlier = {"3m": {"omiga": {"alpha": 0.1}}, "2s3z": {"icq": {"alpha": 0.3}}}
    (out / "smax_study_hyper.json").write_text(json.dumps(earlier))
    record = reproduce_study(out, protocol.maps, protocol.qualities, protocol.seeds, protocol=protocol, suite=suite,
                             command="inspo reproduce study --maps 3m", jobs=2)
    search = json.loads((out / "cache" / "tune" / "3m" / "icq" / "tune.json").read_text())
    assert len(search["trials"]) == 2 and search["base_config"]["seed"] == STUDY.tune_seed
    assert search["base_config"]["bc_steps"] == record["bc_lengths"]["3m-random"]["steps"]
    incumbent = search["incumbent"]["params"]
    hyper = json.loads((out / "smax_study_hyper.json").read_text())
    assert hyper == {"3m": {"omiga": {"alpha": 0.1}, "icq": incumbent}, "2s3z": {"icq": {"alpha": 0.3}}}
    icq = next(r for r in record["rows"] if r["method"] == "icq")
    assert icq["config"]["alpha"] == incumbent["alpha"] and record["hyper"] == {"3m": {"icq": incumbent}}
    # Every critic of the study reads the standardised world state, in the searches and in the table.
    assert search["base_config"]["normalize_state"] and all(r["config"]["normalize_state"] for r in record["rows"])
    tuning = (out / "smax_study_tuning.md").read_text()
    assert "| 3m | MA-ICQ | alpha | 2 |" in tuning and f"alpha={incumbent['alpha']}" in tuning
    assert (out / "smax_study_table.md").is_file()

    # The records that the repository keeps name no folder of this machine (local dask workers included) ...
    records = [p for pattern in RECORDS for p in (out / "cache").glob(pattern)]
    assert {p.parts[2] for p in records} == {"runs", "tune", "bc_length"}
    assert not [p for p in records if str(tmp_path) in p.read_text()]
    # ... and they are all a fresh checkout on another machine needs: with the datasets, checkpoints and SMAC3's
    # history gone, the study makes the data again and neither tunes nor trains.
    for path in sorted((out / "cache").rglob("*"), reverse=True):
        if path.is_file() and path not in records:
            path.unlink()
    monkeypatch.setattr("inspo.tune.tune", lambda *a, **k: pytest.fail("tuned again"))
    monkeypatch.setattr(runner, "train", lambda cfg, **_: pytest.fail(f"trained {cfg.algo} again"))
    for partial in (False, True):
        again = reproduce_study(out, protocol.maps, protocol.qualities, protocol.seeds, protocol=protocol,
                                suite=suite, partial=partial)
        assert [r["final"] for r in again["rows"]] == [r["final"] for r in record["rows"]] and not again["missing"]
    # A finished search from another protocol is not taken for this one's.
    for other in (replace(protocol, tune_iters=3), replace(protocol, normalize_state=False)):
        with pytest.raises(ValueError, match="holds a finished search from other settings than this study's"):
            reproduce_study(out, protocol.maps, protocol.qualities, protocol.seeds, protocol=other, suite=suite)
    assert (out / "smax_study_table.md").read_text().startswith(
        "# The SMAX study: BC, MA-ICQ, OMIGA, CFCQL and InSPO, each tuned with the same budget\n")


def test_a_search_recorded_before_a_field_or_elsewhere_is_the_same_search(tmp_path: Path) -> None:
    # Recorded in another checkout (its paths) by a version without critic_alpha: the same search at its default.
    base = TrainConfig(dataset="here/data", out="here/tune", iters=10)
    recorded = {k: v for k, v in base.to_dict().items() if k != "critic_alpha"}
    found = {"base_config": {**recorded, "dataset": "elsewhere/data", "out": "elsewhere/tune"}, "n_trials": 1,
             "trials": [{"trial": 1}], "incumbent": {"params": {}}, "dataset_sha256": "sha"}
    (tmp_path / "tune.json").write_text(json.dumps(found))
    assert _search(tmp_path, base, "sha") == found
    for other, sha in ((replace(base, critic_alpha=0.5), "sha"), (replace(base, iters=11), "sha"), (base, "other")):
        with pytest.raises(ValueError, match="holds a finished search from other settings"):
            _search(tmp_path, other, sha)


def test_tuning_summary_counts_the_trials_of_every_sitting() -> None:
    # A search resumed in a second sitting: its wall_time is that sitting's (one trial), its trials hold them all.
    trials = [{"trial": i, "return": 1.0, "params": {"alpha": 0.2}, "time": 300.0} for i in range(4)]
    found = {"space": {"alpha": {}}, "trials": trials, "wall_time": 300.0,
             "incumbent": {"return": 1.5, "params": {"alpha": 0.3}}, "default": {"return": 1.0}}
    text = _tuning_markdown({"2s3z": {"inspo": found}}, STUDY, "inspo reproduce study")
    assert "| 2s3z | InSPO | alpha | 4 | 1.000 | 1.500 | alpha=0.3 | 20 |" in text


@pytest.mark.skipif(not (Path(__file__).parents[1] / ".git").exists(), reason="needs the project's git checkout")
def test_repository_keeps_the_records_of_the_run_cache_and_nothing_else() -> None:
    root = Path(__file__).parents[1]
    kept = ["results/cache/runs/baselines/2s3z-expert/icq/seed0/metrics.json",
            "results/cache/tune/2s3z/icq/tune.json", "results/cache/tune/2s3z/icq/trials/0001/result.json",
            "results/cache/bc_length/82f92cf47989-685a58f9aeb765fc.json"]
    left = ["results/cache/runs/baselines/2s3z-expert/icq/seed0/checkpoint.pt",
            "results/cache/runs/baselines/2s3z-expert/icq/seed0/progress.csv",
            "results/cache/tune/2s3z/icq/trials/0001/config.json", "results/cache/tune/2s3z/icq/incumbent.json",
            "results/cache/tune/2s3z/icq/smac3/inspo-tune/0/runhistory.json",
            "results/cache/data/smax/2s3z-expert-n5000-seed0-p82f8ff79ff/obs.npy"]
    for path in kept + left:
        found = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=root)
        assert found.returncode == (1 if path in kept else 0), path  # check-ignore: 0 ignored, 1 not
