"""``inspo tune``: the search space (float, integer, categorical), the optional-dependency error, and tiny SMAC3
searches on the XOR game: plain, with integer and categorical parameters, interrupted and resumed, multi-fidelity."""
from __future__ import annotations

import io
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import inspo
from _nested import approx_nested
from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.tune import tune
from inspo.tune_space import SPACE, Choice, Param, parse_range, resolve_space, trial_values

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
    (["iters"], None, "no default range for 'iters'; give one with --range iters=LO:HI"),
    (["seed"], None, "sets how a trial runs or is measured"),
    (["dataset"], None, "sets how a trial runs or is measured"),
    (["hidden"], {"hidden": Param(8.5, 64.0)}, "integer field: its range needs integer bounds"),
    (["order"], {"order": Param(1.0, 2.0)}, "order is categorical"),
    (["order"], {"order": Choice(("fixed", "sideways"))}, r"'sideways' is not one of \('random'"),
    (["use_rho"], {"use_rho": Choice(("maybe",))}, "'maybe' is not a bool"),
    (["hidden"], {"hidden": Choice(("32", "64"))}, "hidden is numeric"),
    (["polyak"], None, "no default range"),
    (["beta"], {"beta": Param(0.01, 1.0, log=True)}, "log-scale range must be > 0"),
])
def test_space_errors_name_the_problem(params: list[str], ranges: dict[str, Param | Choice] | None,
                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_space(TrainConfig(dataset="d"), params, ranges)


def test_integer_and_categorical_parameters() -> None:
    base = TrainConfig(dataset="d")
    space = resolve_space(base, ["hidden", "batch_size", "local_critic_steps", "order", "weighting", "use_rho"],
                          dict([parse_range("hidden=32:256:log"), parse_range("order=fixed,simultaneous"),
                                parse_range("use_rho=false")]))
    assert space["hidden"] == Param(32, 256, log=True, integer=True)
    assert space["batch_size"] == SPACE["batch_size"] and space["local_critic_steps"].integer
    # The base value joins the choices (it is the search's default), read by the field's type.
    assert space["order"] == Choice(("random", "fixed", "simultaneous"))
    assert space["weighting"] == Choice(("resample", "weighted"))
    assert space["use_rho"] == Choice((True, False))
    assert parse_range("alpha=0.1:1") == ("alpha", Param(0.1, 1.0))
    assert parse_range("lr-policy=1e-4:1e-2:log") == ("lr_policy", Param(1e-4, 1e-2, log=True))
    for bad in ("alpha", "alpha=", "alpha=1:2:cubic", "alpha=a:b"):
        with pytest.raises(ValueError, match="expected NAME=LO:HI"):
            parse_range(bad)


def test_trial_values_are_rounded_and_keep_the_base_exact() -> None:
    import numpy as np

    base = {"alpha": 0.2, "lr_policy": 3e-4, "hidden": 64, "use_rho": True}
    space = {"alpha": SPACE["alpha"], "lr_policy": SPACE["lr_policy"], "hidden": SPACE["hidden"],
             "use_rho": SPACE["use_rho"]}
    values = trial_values(base, {"alpha": 0.2000000000001, "lr_policy": 0.00123456789, "hidden": np.int64(97),
                                 "use_rho": np.False_}, space)
    assert values == {"alpha": 0.2, "lr_policy": 0.001235, "hidden": 97, "use_rho": False}
    assert type(values["hidden"]) is int and type(values["use_rho"]) is bool  # JSON ints and bools


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
    assert summary["package"]["version"] == inspo.__version__
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
    # The trials clone the data's policy once per cloning setting (lr_policy; alpha acts after the cloning).
    assert len(list((out / "clones").glob("*.pt"))) == len({t["params"]["lr_policy"] for t in summary["trials"]})

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


# A smaller budget for the searches below: ~1 s a training.
SMALL = {**BUDGET, "iters": 40, "bc_steps": 20, "eval_every": 20}


def test_integer_and_categorical_trial_values_are_saved_as_such(xor_data: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    out = tmp_path / "search"
    rc = main(["tune", "--dataset", str(xor_data), "--trials", "4", "--params", "hidden,order,use_rho",
               "--range", "hidden=16:64:log", "--range", "order=random,fixed", "--iters", "40", "--bc-steps", "20",
               "--batch-size", "64", "--eval-every", "20", "--eval-episode-limit", "1", "--out", str(out)])
    assert rc == 0
    capsys.readouterr()
    summary = json.loads((out / "tune.json").read_text())
    assert summary["space"]["hidden"] == {"type": "int", "lower": 16, "upper": 64, "log": True, "default": 64}
    assert summary["space"]["order"]["choices"] == ["random", "fixed"]
    for t in summary["trials"]:
        saved = json.loads((out / "trials" / f"{t['trial']:04d}" / "config.json").read_text())
        assert type(saved["hidden"]) is int and 16 <= saved["hidden"] <= 64
        assert saved["order"] in ("random", "fixed") and type(saved["use_rho"]) is bool
    # A trial's config trains as it is.
    assert main(["train", "--config", str(out / "trials" / "0001" / "config.json"), "--out",
                 str(tmp_path / "run")]) == 0


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, k: int) -> list[int]:
    """Make the (k+1)-th training raise KeyboardInterrupt (Ctrl-C during a trial); count the trainings."""
    import inspo.training

    real, calls = inspo.training.train, []

    def train(cfg: TrainConfig, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == k + 1:
            raise KeyboardInterrupt
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(inspo.training, "train", train)
    return calls


def _trials(out: Path) -> list[tuple[object, ...]]:
    summary = json.loads((out / "tune.json").read_text())
    return [(t["params"]["lr_policy"], t["params"]["hidden"], t["return"]) for t in summary["trials"]]


def test_an_interrupted_search_resumes_to_the_uninterrupted_result(xor_data: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    base = TrainConfig(dataset=str(xor_data), **SMALL)
    n, k = 6, 3
    whole = tune(base, tmp_path / "whole", trials=n, params=["lr_policy", "hidden"])

    # A search of n - 2 trials (the same initial design as n: a quarter of the trials), interrupted during trial k.
    out = tmp_path / "resumed"
    calls = _interrupt_after(monkeypatch, k)
    flags = ["tune", "--dataset", str(xor_data), "--trials", str(n - 2), "--params", "lr_policy,hidden", "--iters",
             "40", "--bc-steps", "20", "--batch-size", "64", "--eval-every", "20", "--eval-episode-limit", "1"]
    assert main([*flags, "--out", str(out)]) == 130
    assert "inspo tune --resume --out" in capsys.readouterr().err
    assert len(json.loads((out / "tune.json").read_text())["trials"]) == k
    # An existing search is neither replaced nor continued by accident.
    with pytest.raises(FileExistsError, match="--resume to continue it"):
        tune(base, out, trials=n, params=["lr_policy", "hidden"])

    # What a repository keeps of a search (results/.gitignore) is enough to resume it: tune.json and the finished
    # trials' result.json, without SMAC3's history, the base config or the trials' configs.
    shutil.rmtree(out / "smac3")
    (out / "base_config.json").unlink()
    for path in out.glob("trials/*/config.json"):
        path.unlink()
    calls.clear()
    assert main(["tune", "--resume", "--out", str(out)]) == 0  # every setting from tune.json
    printed = json.loads(capsys.readouterr().out)
    assert len(calls) == n - 2 - k and printed["replayed"] == k  # the finished trials are not trained again
    assert printed["trials"] == n - 2
    calls.clear()
    assert main(["tune", "--resume", "--out", str(out), "--trials", str(n)]) == 0  # and on to n trials
    printed = json.loads(capsys.readouterr().out)
    assert len(calls) == 2 and printed["replayed"] == n - 2
    assert _trials(out) == _trials(tmp_path / "whole")
    assert printed["incumbent"] == whole.incumbent and printed["incumbent_return"] == whole.incumbent_return
    assert json.loads((out / "incumbent.json").read_text()) == whole.incumbent_config

    # A resume with another space or base config is refused, naming the difference.
    with pytest.raises(ValueError, match=r"base_config.alpha: 0.2 in the search, 0.5 now"):
        tune(TrainConfig(dataset=str(xor_data), **{**SMALL, "alpha": 0.5}), out, trials=n,
             params=["lr_policy", "hidden"], resume=True)
    with pytest.raises(ValueError, match=r"space.alpha: '<absent>' in the search"):
        tune(base, out, trials=n, params=["lr_policy", "hidden", "alpha"], resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        tune(base, tmp_path / "empty", trials=n, resume=True)
    with pytest.raises(ValueError, match="contradict"):
        tune(base, out, trials=n, params=["lr_policy", "hidden"], resume=True, overwrite=True)


def test_a_search_does_not_resume_on_other_data_at_the_same_path(tmp_path: Path) -> None:
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    data = tmp_path / "data"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0), data)
    base = TrainConfig(dataset=str(data), **SMALL)
    tune(base, tmp_path / "search", trials=2, params=["lr_policy"])
    recorded = json.loads((tmp_path / "search" / "tune.json").read_text())["dataset_sha256"]
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=1), data, overwrite=True)  # e.g. made elsewhere
    with pytest.raises(ValueError, match=f"dataset_sha256: '{recorded}' in the search, '[0-9a-f]{{64}}' now"):
        tune(base, tmp_path / "search", trials=3, params=["lr_policy"], resume=True)


def test_a_search_recorded_before_a_field_was_added_resumes(xor_data: Path, tmp_path: Path) -> None:
    """A base config recorded without a field added since (critic_alpha) is the same search at the field's default;
    a different value of it is another search."""
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    base = TrainConfig(dataset=str(xor_data), **SMALL)
    tune(base, tmp_path / "search", trials=2, params=["lr_policy"])
    path = tmp_path / "search" / "tune.json"
    older = json.loads(path.read_text())
    del older["base_config"]["critic_alpha"]
    path.write_text(json.dumps(older))
    result = tune(base, tmp_path / "search", trials=3, params=["lr_policy"], resume=True)
    assert len(result.trials) == 3 and json.loads(path.read_text())["base_config"]["critic_alpha"] is None
    with pytest.raises(ValueError, match=r"base_config.critic_alpha: None in the search, 0.5 now"):
        tune(replace(base, critic_alpha=0.5), tmp_path / "search", trials=4, params=["lr_policy"], resume=True)


def test_multi_fidelity_search_over_the_iteration_budget(xor_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    base = TrainConfig(dataset=str(xor_data), **{**SMALL, "iters": 90, "eval_every": 30})
    # Budgets 30 and 90: Hyperband's first bracket trains configurations for 30 iterations, the best for 90.
    result = tune(base, tmp_path / "search", trials=5, params=["lr_policy"], fidelity="iters", min_iters=30)
    summary = json.loads((tmp_path / "search" / "tune.json").read_text())
    assert summary["smac"]["facade"] == "MultiFidelityFacade"
    assert summary["fidelity"] == {"name": "iters", "min": 30, "max": 90, "eta": 3}
    budgets = [t["iters"] for t in result.trials]
    assert budgets[0] == 30 and set(budgets) == {30, 90}
    for t in result.trials:  # each trial's config trains for its own budget
        saved = json.loads((tmp_path / "search" / "trials" / f"{t['trial']:04d}" / "config.json").read_text())
        assert saved["iters"] == t["iters"]
    assert summary["incumbent"]["iters"] == 90  # compared at the full budget only
    assert result.incumbent_return == max(t["return"] for t in result.trials if t["iters"] == 90)
    assert result.incumbent_config["iters"] == 90  # the incumbent is to be trained on the full budget
    with pytest.raises(ValueError, match=r"--min-iters must be in \[1, --iters / 3\] = \[1, 30\]"):
        tune(base, tmp_path / "other", trials=6, fidelity="iters", min_iters=50)


def test_critic_alpha_is_searched_from_alpha_when_unset(xor_data: Path, tmp_path: Path) -> None:
    """Unset (None), InSPO's critic_alpha is alpha: a search over it starts from that value, the same run."""
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    base = TrainConfig(dataset=str(xor_data), **{**SMALL, "iters": 30, "eval_every": 30, "alpha": 0.3})
    result = tune(base, tmp_path / "search", trials=3, params=["critic_alpha"])
    default = [t for t in result.trials if t["default"]]
    assert len(default) == 1 and default[0]["params"] == {"critic_alpha": 0.3}
    assert len({t["params"]["critic_alpha"] for t in result.trials}) == 3
    with pytest.raises(ValueError, match="cannot tune 'critic_alpha' from its unset"):
        resolve_space(TrainConfig(dataset="d"), ["critic_alpha"])


def test_a_search_leaves_absl_logging_stream_open(xor_data: Path, tmp_path: Path) -> None:
    """SMAC3's logging setup closes every logging handler; absl's (loaded with jax or flashbax) would then close the
    stream it writes to, e.g. a notebook's or a test's captured stderr."""
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    absl_logging = pytest.importorskip("absl.logging")
    handler = absl_logging.get_absl_handler().python_handler
    stream, before = io.StringIO(), handler.stream
    handler.setStream(stream)
    try:
        assert main(["tune", "--env", "xor", "--dataset", str(xor_data), "--trials", "2", "--params", "alpha",
                     *BUDGET_FLAGS, "--out", str(tmp_path / "search")]) == 0
    finally:
        handler.setStream(before)
    assert not stream.closed


def test_trials_trained_as_populations_cost_what_they_cost_alone(xor_data: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("smac", reason="SMAC3 is the optional extra 'tune': pip install 'inspo[tune]'")
    import inspo.population_training
    from inspo.training import train

    sizes: list[int] = []
    real = inspo.population_training.train_members

    def train_members(members: list[TrainConfig], **kwargs: object) -> object:
        sizes.append(len(members))
        return real(members, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inspo.population_training, "train_members", train_members)
    base = TrainConfig(dataset=str(xor_data), **SMALL)
    result = tune(base, tmp_path / "search", trials=4, params=["lr_policy", "alpha"], seeds=2, population=2)
    assert sizes == [4, 4]  # two rounds of two trials, each trial's two seeds as members
    assert json.loads((tmp_path / "search" / "tune.json").read_text())["population"] == 2
    assert len(result.trials) == 4 and all(t["status"] == "success" for t in result.trials)
    for t in result.trials:
        alone = [train(TrainConfig(dataset=str(xor_data), **{**SMALL, **t["params"], "seed": s})).final_return
                 for s in (0, 1)]
        assert t["return"] == approx_nested(sum(alone) / 2), t  # stacked members: float32 in other kernels


def test_trials_of_a_population_share_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import inspo.population_training
    import inspo.tune_population

    clock = iter([100.0, 112.0])  # the population starts at 100 s and ends at 112 s
    monkeypatch.setattr(inspo.tune_population, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(inspo.population_training, "train_members",
                        lambda members, **_: types.SimpleNamespace(members=members))
    objective = types.SimpleNamespace(clones=None, configs=lambda params, iters: [params["lr_policy"]],
                                      score=lambda params, members: (-members[0], {}))
    trials = [({"lr_policy": lr}, 10) for lr in (1e-3, 2e-3, 3e-3)]
    outcomes = inspo.tune_population.train_trials(objective, trials)
    assert [o["time"] for o in outcomes] == [4.0, 4.0, 4.0]  # 12 s in all, not 12 s per trial
    assert [o["cost"] for o in outcomes] == [-1e-3, -2e-3, -3e-3]


def test_a_round_of_trials_trains_in_populations_of_like_trials() -> None:
    from inspo.tune_population import _populations

    trials = [({"lr_policy": 0.1, "hidden": 32}, 40), ({"lr_policy": 0.2, "hidden": 64}, 40),
              ({"lr_policy": 0.3, "hidden": 32}, 40), ({"lr_policy": 0.4, "hidden": 32}, 90),
              ({"lr_policy": 0.5, "hidden": 32}, 40)]
    # hidden and the budget are shared by a population's members, the learning rate is a member's own
    assert _populations(trials, size=2) == [[0, 2], [4], [1], [3]]
