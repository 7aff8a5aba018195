"""Populations (``inspo train --seeds``, ``--per-member``): member p of a population trained in one process ends in
exactly the state of the single run with its config (every tensor of its training state, its curve and its RNG
states), writes the files that single run writes, resumes exactly after a kill (from its own folder too), and bad
population lists are one clear error."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from _pausing import paused_train
from inspo import checkpoint, population_training
from inspo.algos import InSPO, population
from inspo.algos.stacked import StackedBC, StackedInSPO
from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.flags import parse_list
from inspo.population_training import train_members, train_population
from inspo.run_record import resumed_cpu_time
from inspo.training import train

TINY = {"iters": 24, "bc_steps": 10, "batch_size": 32, "hidden": 16, "eval_every": 12, "eval_episode_limit": 2,
        "checkpoint_every": 5, "dtype": "float64", "gamma": 0.9, "beta": 0.3}
TOL = 1e-10


@pytest.fixture(scope="module")
def mne_two_rounds(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Imbalanced M-NE data played for 2 rounds, so that the TD target bootstraps through V(s')."""
    ds = generate_matrix("mne", "mne-imbalanced", 200, seed=3, episode_limit=2)
    return str(save_dataset(ds, tmp_path_factory.mktemp("data") / "mne2"))


# The population implementations under test; the stacked ones join this list where they apply.


def _stacked(learners: list[Any]) -> Any:
    """make_population, asserting that it stacks InSPO members (the other algorithms go one after another)."""
    made = population.make_population(learners)
    inspo_only = all(type(learner) is InSPO for learner in learners)
    assert isinstance(made, StackedInSPO if inspo_only else population.LoopPopulation), type(made)
    return made


def _stacked_bc(members: list[Any]) -> Any:
    made = population.make_bc_population(members)
    assert isinstance(made, StackedBC), type(made)
    return made


# The members one after another, and as make_population / make_bc_population pick them (stacked where they can be).
POPULATIONS = {"loop": (population.LoopPopulation, population.LoopBC), "stacked": (_stacked, _stacked_bc)}


@pytest.fixture(params=sorted(POPULATIONS))
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    learners, bcs = POPULATIONS[request.param]
    monkeypatch.setattr(population_training, "make_population", learners)
    monkeypatch.setattr(population_training, "make_bc_population", bcs)
    return request.param


def _leaves(x: Any, path: str = "", skip: tuple[str, ...] = ("/update_time", "/wall_time", "/cpu_time", "/out")
            ) -> dict[str, Any]:
    """Every leaf of a nested checkpoint, by path, but those ending in ``skip`` (by default times and the run's
    folder: they differ by nature)."""
    if isinstance(x, dict):
        return {k: v for key, value in x.items() for k, v in _leaves(value, f"{path}/{key}", skip).items()}
    if isinstance(x, (list, tuple)):
        return {k: v for i, value in enumerate(x) for k, v in _leaves(value, f"{path}/{i}", skip).items()}
    return {} if path.endswith(skip) else {path: x}


def _assert_close(expected: Any, got: Any, what: str, skip: tuple[str, ...] = ()) -> None:
    """Nested values agree: tensors and floats to ``TOL``, everything else exactly (``skip``: more leaves left
    out)."""
    skip = ("/update_time", "/wall_time", "/cpu_time", "/out", *skip)
    expected, got = _leaves(expected, skip=skip), _leaves(got, skip=skip)
    assert expected.keys() == got.keys(), what
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(got[key], value, rtol=0, atol=TOL, msg=f"{what}{key}")
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=0, abs=TOL, nan_ok=True), f"{what}{key}"
        else:
            assert got[key] == value, f"{what}{key}"


def assert_same_state(single: Path, member: Path, resumed: bool = False) -> None:
    """The training states and final policies in two run folders agree to ``TOL``: networks, optimiser states,
    generator and global RNG states, curves (returns and losses at every evaluation), step and logged rows; and
    so do their metrics (but for timings). A ``resumed`` run's global RNG state is left out: resuming rebuilds
    the learner (drawing its initial parameters before loading the saved ones), as a resumed single run does."""
    for name in ("checkpoint.pt", "final.pt"):
        _assert_close(checkpoint.load(single / name), checkpoint.load(member / name), name,
                      skip=("/torch_rng",) if resumed else ())
    expected, got = (json.loads((folder / "metrics.json").read_text()) for folder in (single, member))
    for entry in ("curve", "config", "final_return", "best_return", "bc_nll", "dataset_sha256"):
        _assert_close(expected[entry], got[entry], f"metrics.json {entry}")


VARIANTS = {
    "random-order": {},
    "fixed-order": {"order": "fixed"},
    "simultaneous": {"order": "simultaneous"},
    "weighted": {"weighting": "weighted"},
    "no-rho": {"use_rho": False},
    "beta-0": {"beta": 0.0},
    "bc": {"algo": "bc"},
    "omiga": {"algo": "omiga"},
}


def _flags(values: dict[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        out += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_population_members_equal_single_runs(mne_two_rounds: str, tmp_path: Path, kind: str, variant: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    settings = {**TINY, **VARIANTS[variant]}
    assert main(["train", "--dataset", mne_two_rounds, *_flags(settings), "--seeds", "0-2",
                 "--out", str(tmp_path / "pop")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [m["seed"] for m in printed["per_member"]] == [0, 1, 2]
    finals = []
    for seed in range(3):
        single = tmp_path / f"single_{seed}"
        finals.append(train(TrainConfig(dataset=mne_two_rounds, seed=seed, out=str(single), **settings))
                      .final_return)
        assert_same_state(single, tmp_path / "pop" / f"seed_{seed}")
    summary = json.loads((tmp_path / "pop" / "population.json").read_text())
    assert summary["status"] == "done" and summary["differences"] == {"seed": [0, 1, 2]}
    assert [m["final_return"] for m in summary["per_member"]] == pytest.approx(finals, rel=0, abs=TOL)
    assert summary["final_return"]["mean"] == pytest.approx(sum(finals) / 3, rel=0, abs=TOL)
    assert printed["final_return"] == pytest.approx(summary["final_return"]["mean"], rel=0, abs=1e-12)
    if variant == "random-order":  # the members really differ: seeds are not ignored
        assert len({round(f, 8) for f in finals}) > 1
    # The members trained in one process: each is charged an equal share of its CPU time.
    shares = {json.loads((tmp_path / "pop" / f"seed_{s}" / "metrics.json").read_text())["cpu_time"] for s in range(3)}
    assert len(shares) == 1 and shares.pop() > 0


def test_resumed_cpu_time_counts_every_member() -> None:
    assert resumed_cpu_time({"cpu_time": 2.0, "wall_time": 9.0}, members=3) == 6.0
    # A checkpoint written before CPU time was recorded: its wall time on one thread is the estimate.
    assert resumed_cpu_time({"wall_time": 9.0}, members=3) == 9.0


def test_per_member_hyper_parameters_equal_single_runs(mne_two_rounds: str, tmp_path: Path, kind: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pop"
    argv = ["train", "--dataset", mne_two_rounds, *_flags(TINY), "--seeds", "4,7", "--per-member",
            "alpha=0.1,0.5", "--per-member", "lr_critic=3e-3", "--per-member", "rho_max=5,50", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    cfg = TrainConfig.from_dict(json.loads((out / "population.json").read_text())["config"])
    assert cfg.seeds == [4, 7] and cfg.per_member == {"alpha": [0.1, 0.5], "lr_critic": [3e-3], "rho_max": [5, 50]}
    for p, (seed, alpha, rho_max) in enumerate([(4, 0.1, 5.0), (7, 0.5, 50.0)]):
        single = tmp_path / f"single_{p}"
        train(TrainConfig(dataset=mne_two_rounds, **{**TINY, "seed": seed, "alpha": alpha, "lr_critic": 3e-3,
                                                     "rho_max": rho_max}, out=str(single)))
        assert_same_state(single, out / f"member_{p}")
    summary = json.loads((out / "population.json").read_text())
    assert summary["differences"] == {"seed": [4, 7], "alpha": [0.1, 0.5], "rho_max": [5.0, 50.0]}
    # The folder holds a population: a second one is refused unless it continues or replaces it.
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def _run(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "inspo.cli", "train", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("write", [5, 11], ids=["behaviour-cloning", "learner"])
def test_killed_population_resumes_exactly(mne_two_rounds: str, tmp_path: Path, write: int) -> None:
    args = ["--dataset", mne_two_rounds, *_flags(TINY), "--seeds", "0-2"]
    full = tmp_path / "full"
    train_population(TrainConfig.from_dict({"dataset": mne_two_rounds, **TINY, "seeds": [0, 1, 2],
                                            "out": str(full)}))
    out = tmp_path / "killed"
    proc = paused_train(write, *args, "--out", str(out))
    proc.send_signal(signal.SIGKILL)  # in member 1's write of round 2 (write 5) or 4 (write 11), every 5 steps
    proc.communicate()
    rounds = (write - 1) // 3 + 1
    steps = [checkpoint.load(out / f"seed_{s}" / "checkpoint.pt")["run"]["step"] for s in range(3)]
    assert steps == [5 * rounds, 5 * (rounds - 1), 5 * (rounds - 1)]  # member 0 is one checkpoint ahead
    # A member's folder is a single run's: it resumes alone, from its own last checkpoint.
    alone = tmp_path / "alone"
    shutil.copytree(out / "seed_1", alone)
    _run("--resume", str(alone))
    assert_same_state(full / "seed_1", alone, resumed=True)
    _run("--resume", str(out))
    for seed in range(3):
        assert_same_state(full / f"seed_{seed}", out / f"seed_{seed}", resumed=True)
    assert json.loads((out / "population.json").read_text())["status"] == "done"
    assert not list(out.glob("*/.checkpoint.pt.*")), "the resumed run left the killed write's temporary"


def test_members_configs_and_folders() -> None:
    cfg = TrainConfig(dataset="d", seeds=[3, 5], out="runs/p")
    assert [(m.seed, m.out, m.seeds, m.per_member) for m in cfg.members()] == \
        [(3, "runs/p/seed_3", None, {}), (5, "runs/p/seed_5", None, {})]
    cfg = TrainConfig(dataset="d", per_member={"beta": "0,0.5"}, seed=2, out="runs/p")
    assert [(m.seed, m.beta, m.out) for m in cfg.members()] == [(2, 0.0, "runs/p/member_0"),
                                                                 (2, 0.5, "runs/p/member_1")]
    assert TrainConfig(dataset="d").members() == [TrainConfig(dataset="d")]
    assert parse_list("0-3,7", int) == [0, 1, 2, 3, 7] and parse_list("1e-3, 2", float) == [1e-3, 2.0]


@pytest.mark.parametrize("configs, message", [
    ([], "at least one member config"),
    ([TrainConfig(dataset="d"), TrainConfig(dataset="d", seed=1, hidden=32)],
     r"members 0 and 1 differ in hidden \(64 and 32\); .* only in seed, out, lr_policy"),
    ([TrainConfig(dataset="d"), TrainConfig(dataset="e", seed=1)], r"differ in dataset \('d' and 'e'\)"),
    ([TrainConfig(dataset="d", seeds=[0, 1])], "member 0 must be a single run"),
    ([TrainConfig(dataset="d", out="a"), TrainConfig(dataset="d", seed=1)], "every population member has an out"),
    ([TrainConfig(dataset="d", out="a"), TrainConfig(dataset="d", seed=1, out="a/")], "share an out folder"),
])
def test_members_that_cannot_train_together_are_a_clear_error(configs: list[TrainConfig], message: str) -> None:
    from inspo.population_training import train_members

    with pytest.raises(ValueError, match=message):
        train_members(configs)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "3-1"], "the range '3-1' is empty"),
    (["--seeds", "0,x"], "'x' is not one"),
    (["--seeds", "0,1,0"], r"seed\(s\) \[0\] more than once"),
    (["--seeds", "0-2", "--per-member", "alpha=0.1,0.2"], "population lists of different lengths"),
    (["--per-member", "lr=0.1,0.2"], r"config.per_member names \['lr'\]"),
    (["--per-member", "alpha=0.1,oops"], "'oops' is not one"),
    (["--seeds", "0,1", "--per-member", "alpha=0.1,-1"], r"member 1 \(seed 1.*config.alpha must be >= 0, got -1"),
    (["--seeds", "0,1", "--ddp"], "a population .* trains in one process"),
])
def test_bad_population_lists_are_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  argv: list[str], message: str) -> None:
    out = tmp_path / "run"
    try:
        code = main(["train", "--dataset", "d", *argv, "--out", str(out)])
    except SystemExit as exc:  # argparse's own errors (a flag's value it cannot parse)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_nonfinite_loss_names_the_member(mne_two_rounds: str, tmp_path: Path, kind: str) -> None:
    # Member 1's critic learning rate of 1e5 overflows its joint critic within the first few iterations.
    cfg = TrainConfig(dataset=mne_two_rounds, **{**TINY, "iters": 200, "checkpoint_every": 1}, seeds=[0, 5],
                      per_member={"lr_critic": [1e-3, 1e5]}, out=str(tmp_path / "nan"))
    with pytest.raises(FloatingPointError, match=r"population member 1 \(seed 5\): non-finite \w+ .* at iteration"):
        train_population(cfg)


def test_population_without_evaluation_equals_single_runs(mne_two_rounds: str, tmp_path: Path) -> None:
    # With eval="none" the curve holds losses alone; the population's progress note must not look for a return.
    settings = {**TINY, "eval": "none"}
    members = [TrainConfig(dataset=mne_two_rounds, seed=s, out=str(tmp_path / f"pop_{s}"), **settings) for s in (0, 1)]
    train_members(members)
    for seed in (0, 1):
        train(TrainConfig(dataset=mne_two_rounds, seed=seed, out=str(tmp_path / f"single_{seed}"), **settings))
        assert_same_state(tmp_path / f"single_{seed}", tmp_path / f"pop_{seed}")
    curve = json.loads((tmp_path / "pop_0" / "metrics.json").read_text())["curve"]
    assert curve and all("return" not in point for point in curve)
