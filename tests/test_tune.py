"""``inspo tune``: the search space, the optional-dependency error, and a tiny SMAC3 search on the XOR game."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.tune import SPACE, Param, resolve_space, trial_values, tune

# 200 updates on one-step XOR episodes: a few seconds a training on one thread. At this budget the default
# learning rate is too small to leave the data's mode, so there is something to find.
BUDGET = {"iters": 150, "bc_steps": 50, "batch_size": 64, "eval_every": 75, "eval_episode_limit": 1, "threads": 1}
BUDGET_FLAGS = ["--iters", "150", "--bc-steps", "50", "--batch-size", "64", "--eval-every", "75",
                "--eval-episode-limit", "1"]  # threads: 1 is the default


@pytest.fixture(scope="module")
def xor_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XOR data on {AA, AB, BA}, where sequential InSPO can reach the optimum."""
    path = tmp_path_factory.mktemp("tune") / "xor-aa-ab-ba"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0), path)
    return path


def test_space_defaults_follow_the_algo_and_hold_the_base_values(xor_data: Path) -> None:
    base = TrainConfig(dataset=str(xor_data))
    space = resolve_space(base)
    assert list(space) == ["alpha", "beta", "lr_policy", "lr_critic", "rho_max", "z_max"]
    assert space["alpha"] == SPACE["alpha"] and space["beta"].log is False
    assert list(resolve_space(TrainConfig(dataset="d", algo="bc"))) == ["lr_policy"]
    # A range that misses the base value is widened to hold it: the base config is the search's default.
    widened = resolve_space(TrainConfig(dataset="d", alpha=50.0), ["alpha"])
    assert widened["alpha"].upper == 50.0
    # --range adds a field (or replaces a range).
    extra = resolve_space(base, ["alpha"], {"gamma": Param(0.9, 0.999)})
    assert list(extra) == ["alpha", "gamma"]


@pytest.mark.parametrize(("params", "ranges", "message"), [
    (["nonsense"], None, "not a TrainConfig field"),
    (["iters"], None, "only float fields"),
    (["polyak"], None, "no default range"),
    (["beta"], {"beta": Param(0.01, 1.0, log=True)}, "log-scale range must be > 0"),
])
def test_space_errors_name_the_problem(params: list[str], ranges: dict[str, Param] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_space(TrainConfig(dataset="d"), params, ranges)


def test_trial_values_are_rounded_and_keep_the_base_exact() -> None:
    base = {"alpha": 0.2, "lr_policy": 3e-4}
    assert trial_values(base, {"alpha": 0.2000000000001, "lr_policy": 0.00123456789}) == {
        "alpha": 0.2, "lr_policy": 0.001235}


def test_missing_smac_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "smac", None)  # import smac now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'inspo\[tune\]'"):
        tune(TrainConfig(dataset="d"), tmp_path / "out", trials=2)


def test_tiny_search_finds_a_config_at_least_as_good_as_the_default(xor_data: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    out = tmp_path / "search"
    rc = main(["tune", "--env", "xor", "--dataset", str(xor_data), "--trials", "5", "--params", "lr_policy,alpha",
               *BUDGET_FLAGS, "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["trials"] == 5 and printed["failed"] == 0
    assert set(printed["incumbent"]) == {"lr_policy", "alpha"}

    # Every trial's config (usable as it is) and result are on disk, and tune.json lists them all.
    summary = json.loads((out / "tune.json").read_text())
    assert [t["trial"] for t in summary["trials"]] == list(range(5))
    assert sum(t["default"] for t in summary["trials"]) == 1  # the base config is one of the trials
    for t in summary["trials"]:
        trial_dir = out / "trials" / f"{t['trial']:04d}"
        cfg = TrainConfig.from_dict(json.loads((trial_dir / "config.json").read_text()))
        assert (cfg.lr_policy, cfg.alpha) == (t["params"]["lr_policy"], t["params"]["alpha"])
        result = json.loads((trial_dir / "result.json").read_text())
        assert result["status"] == "success" and result["runs"][0]["curve"]
    assert summary["incumbent"]["return"] == max(t["return"] for t in summary["trials"])
    assert len({(t["params"]["lr_policy"], t["params"]["alpha"]) for t in summary["trials"]}) > 1

    # The incumbent, trained by `inspo train --config`, against the default config on the same budget.
    run = tmp_path / "incumbent-run"
    assert main(["train", "--config", str(out / "incumbent.json"), "--out", str(run)]) == 0
    capsys.readouterr()
    incumbent = json.loads((run / "metrics.json").read_text())
    from inspo.training import train

    default = train(TrainConfig(dataset=str(xor_data), **BUDGET))
    assert incumbent["final_return"] == pytest.approx(printed["incumbent_return"], abs=1e-9)  # reproducible
    assert default.final_return == pytest.approx(printed["default_return"], abs=1e-9)
    assert incumbent["final_return"] >= default.final_return


@pytest.mark.slow
def test_parallel_trials_through_dask(xor_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    pytest.importorskip("dask.distributed", reason="dask.distributed comes with the extra 'tune'")
    base = TrainConfig(dataset=str(xor_data), **{**BUDGET, "iters": 50, "bc_steps": 50, "eval_every": 50})
    result = tune(base, tmp_path / "search", trials=4, workers=2, params=["lr_policy"])
    assert len(result.trials) == 4 and all(t["status"] == "success" for t in result.trials)
    assert result.default_return is not None and result.incumbent_return >= result.default_return
    assert TrainConfig.from_dict(json.loads((tmp_path / "search" / "incumbent.json").read_text())).lr_policy == \
        result.incumbent["lr_policy"]
