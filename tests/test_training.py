"""The training API and CLI: backend parity, metrics and checkpoints on disk, evaluation, config validation, presets."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import inspo
from inspo.cli import build_parser, main
from inspo.config import PRESETS, CFCQLConfig, ICQConfig, TrainConfig, config_from_args
from inspo.data import generate_matrix, import_pymarl, save_dataset
from inspo.policy import load_policy

# A small run: enough iterations for the critics and policies to move far from their initial values.
SMALL = {"bc_steps": 50, "iters": 200, "batch_size": 64, "hidden": 32, "eval_every": 100}


@pytest.fixture(scope="module")
def mne_two_rounds(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Imbalanced M-NE data played for 2 rounds, so that the TD target bootstraps through V(s')."""
    ds = generate_matrix("mne", "mne-imbalanced", 400, seed=3, episode_limit=2)
    return str(save_dataset(ds, tmp_path_factory.mktemp("data") / "mne2"))


@pytest.fixture(scope="module")
def xor_one_round(tmp_path_factory: pytest.TempPathFactory) -> str:
    ds = generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0)
    return str(save_dataset(ds, tmp_path_factory.mktemp("data") / "xor"))


def _state_dicts_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-11, msg=name)


# Every call path of the kernels in the trainer: per-agent ratios with resampling (the default), and the
# all-agents ratio call of the simultaneous ablation with rho multiplied into the weights.
@pytest.mark.parametrize("variant", [{}, {"order": "simultaneous", "weighting": "weighted"}],
                         ids=["sequential-resample", "simultaneous-weighted"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_fused_backend_matches_pytorch_reference(mne_two_rounds: str, tmp_path: Path, variant: dict,
                                                 device: str) -> None:
    if device == "cuda" and not (torch.cuda.is_available() and inspo.built_with_cuda()):
        pytest.skip("needs a CUDA device and inspo built with its CUDA kernels")
    results, policies = {}, {}
    for backend in ("fused", "torch"):
        cfg = TrainConfig(dataset=mne_two_rounds, backend=backend, dtype="float64", gamma=0.9, alpha=1.0, beta=0.5,
                          seed=7, device=device, out=str(tmp_path / backend), **SMALL, **variant)
        results[backend] = inspo.train(cfg)
        policies[backend] = load_policy(results[backend].checkpoint).network.state_dict()
    fused, ref = results["fused"], results["torch"]
    # The curve holds every loss (Q, V, local critics, policy) and the exact return at each evaluation.
    assert [r.keys() for r in fused.curve] == [r.keys() for r in ref.curve]
    for f_rec, r_rec in zip(fused.curve, ref.curve):
        for key in f_rec:
            assert f_rec[key] == pytest.approx(r_rec[key], rel=1e-9, abs=1e-11), key
    _state_dicts_close(policies["fused"], policies["torch"])
    # The comparison is only meaningful if training moved the policy away from behaviour cloning.
    assert abs(fused.final_return - fused.curve[0]["return"]) > 0.1


def test_train_writes_metrics_and_checkpoints(xor_one_round: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(dataset=xor_one_round, gamma=0.0, out=str(out), **SMALL)
    result = inspo.train(cfg)

    assert {"metrics.json", "final.pt", "best.pt"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == cfg.to_dict()
    assert metrics["env"] == "xor"
    assert [r["iteration"] for r in metrics["curve"]] == [0, 100, 200]
    assert all(math.isfinite(r["return"]) for r in metrics["curve"])
    assert metrics["final_return"] == result.final_return == metrics["curve"][-1]["return"]
    assert metrics["best_return"] == max(r["return"] for r in metrics["curve"])
    # The data's own mean return: 2/3 for {AA, AB, BA} sampled evenly (payoffs 0, 1, 1).
    assert metrics["behaviour_return"] == pytest.approx(2 / 3, abs=0.1)
    assert metrics["wall_time"] > 0 and metrics["updates_per_second"] > 0 and metrics["cpu_time"] > 0
    assert metrics["checkpoint"] == str(out / "final.pt") and metrics["metrics_path"] == str(out / "metrics.json")

    # Matrix games are evaluated exactly, so a reloaded policy must give the recorded numbers to the last bit.
    assert inspo.evaluate(out / "final.pt")["mean"] == result.final_return
    assert inspo.evaluate(out / "best.pt")["mean"] == result.best_return


def test_evaluate_reproduces_stochastic_return(shared_data: Path, tmp_path: Path) -> None:
    data = save_dataset(import_pymarl(shared_data / "bridge_optimal", "bridge-alberdice"), tmp_path / "bridge")
    cfg = TrainConfig(dataset=str(data), bc_steps=100, iters=20, eval_every=20, eval_episodes=30,
                      eval_episode_limit=20, seed=5, out=str(tmp_path / "run"))
    result = inspo.train(cfg)
    # Sampled episodes: same seed, same episodes; another seed, other episodes.
    same = inspo.evaluate(result.checkpoint, episodes=30, seed=5)
    assert same["mean"] == result.final_return and same["std"] > 0
    assert inspo.evaluate(result.checkpoint, episodes=30, seed=6)["mean"] != result.final_return


def test_cli_train_and_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["datasets", "generate", "--env", "xor", "--preset", "xor-aa-ab-ba", "--episodes", "300",
                 "--out", str(data)]) == 0
    capsys.readouterr()
    assert main(["train", "--preset", "no-rho", "--dataset", str(data), "--iters", "60", "--bc-steps", "30",
                 "--eval-every", "30", "--gamma", "0", "--batch-size", "64", "--out", str(run)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoint"] == str(run / "final.pt")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["use_rho"] is False and metrics["config"]["iters"] == 60
    assert summary["final_return"] == metrics["final_return"]

    assert main(["evaluate", str(run / "final.pt")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["mean"] == metrics["final_return"]


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"lr_policy": -1e-3}, "lr_policy"),
    ({"iters": -1}, "iters"),
    ({"alpha": 0.0, "beta": 0.0}, "tau"),
    ({"gamma": 1.5}, "gamma"),
    ({"polyak": 0.0}, "polyak"),
    ({"order": "reverse"}, "order"),
    ({"weighting": "both"}, "weighting"),
    ({"backend": "jax"}, "backend"),
    ({"dtype": "float16"}, "dtype"),
    ({"eval_episode_limit": 0}, "eval_episode_limit"),
])
def test_impossible_values_raise_before_any_work(tmp_path: Path, change: dict, message: str) -> None:
    # The dataset does not exist: an error about the value (not about the data) shows validation comes first.
    values = {"dataset": str(tmp_path / "missing"), **change}
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)

    cfg = TrainConfig(dataset=str(tmp_path / "missing"), out=str(tmp_path / "run"))
    for key, value in change.items():
        setattr(cfg, key, value)
    with pytest.raises(ValueError, match=message):
        inspo.train(cfg)
    assert not (tmp_path / "run").exists()


def test_method_settings_nest_and_keep_their_flat_names(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="d", icq=ICQConfig(critic_temp=10.0), cfcql={"cql_alpha": 2.0})
    assert cfg.cfcql == CFCQLConfig(cql_alpha=2.0)
    assert cfg.to_dict()["icq"] == {"critic_temp": 10.0, "mixer": "paper"}
    assert cfg.to_dict()["cfcql"] == {"cql_alpha": 2.0, "lambda_temp": 5.0, "policy_temp": 1e-3}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # A config written before the settings were nested (metrics.json, --config files) loads into the nested form.
    flat = {k: v for k, v in cfg.to_dict().items() if k not in ("icq", "cfcql")}
    flat.update(icq_critic_temp=10.0, cql_alpha=2.0, cfcql_lambda_temp=5.0, cfcql_policy_temp=1e-3)
    assert TrainConfig.from_dict(flat) == cfg
    # ... and so do the flags, over a --config file in either form.
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": "d", "cql_alpha": 3.0, "cfcql": {"lambda_temp": 1.0}}))
    args = build_parser().parse_args(["train", "--config", str(config), "--cfcql-policy-temp", "0.5",
                                      "--icq-critic-temp", "7", "--env-option", "episode_limit=20"])
    parsed = config_from_args(args)
    assert parsed.cfcql == CFCQLConfig(cql_alpha=3.0, lambda_temp=1.0, policy_temp=0.5)
    assert parsed.icq == ICQConfig(critic_temp=7.0) and parsed.env_options == {"episode_limit": 20}
    args = build_parser().parse_args(["train", "--dataset", "d", "--cql-alpha", "0.25", "--no-use-rho",
                                      "--eval-episode-limit", "3"])
    parsed = config_from_args(args)
    assert (parsed.cfcql.cql_alpha, parsed.use_rho, parsed.eval_episode_limit) == (0.25, False, 3)
    with pytest.raises(ValueError, match=r"unknown config.icq keys \['temp'\]"):
        TrainConfig(dataset="d", icq={"temp": 1.0})


def test_every_config_field_is_a_flag() -> None:
    from inspo import flags
    from inspo.online import OnlineConfig

    train_dests = vars(build_parser().parse_args(["train", "--dataset", "d"]))
    assert {f.name for f in flags.flags_of(TrainConfig)} <= set(train_dests)
    assert {"icq_critic_temp", "cql_alpha", "cfcql_lambda_temp", "cfcql_policy_temp"} <= set(train_dests)
    args = build_parser().parse_args(["online", "train", "--env", "smax:3m", "--out", "o", "--clip", "0.1",
                                      "--gae-lambda", "0.9", "--agent-state", "--value-norm"])
    assert {f.name for f in dataclasses.fields(OnlineConfig)} <= set(vars(args))
    cfg = flags.from_values(OnlineConfig, flags.values_from_args(OnlineConfig, args))
    assert cfg == OnlineConfig(env="smax:3m", clip=0.1, gae_lambda=0.9, agent_state=True, value_norm=True)


def test_unknown_config_keys_raise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"unknown config keys \['learning_rate'\]"):
        TrainConfig.from_dict({"dataset": "d", "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.preset("no-such-ablation", dataset="d")

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": "d", "learning_rate": 1e-3}))
    # A bad config is bad usage: one line on stderr and exit code 2 (inspo.errors.EXIT_USAGE).
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main(["train", "--dataset", "d", "--batch-size", "0", "--out", str(tmp_path / "run")]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# InSPO, BC and the docs/design.md section 1 ablations against the defaults: exactly these fields differ.
INTENDED = {
    "inspo": {},
    "bc": {"algo": "bc"},
    "simultaneous": {"order": "simultaneous"},
    "fixed-order": {"order": "fixed"},
    "no-entropy": {"beta": 0.0},
    "no-rho": {"use_rho": False},
}


def test_presets_differ_as_intended() -> None:
    assert set(INTENDED) <= set(PRESETS)
    default = TrainConfig(dataset="d").to_dict()
    for name, fields in INTENDED.items():
        cfg = TrainConfig.preset(name, dataset="d").to_dict()
        assert cfg == {**default, **fields}, name
    # Overrides win over the preset, and a preset never leaks into the defaults of the next config.
    assert TrainConfig.preset("no-rho", dataset="d", use_rho=True).use_rho is True
    assert TrainConfig(dataset="d").use_rho is True
