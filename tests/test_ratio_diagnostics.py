"""The teammate-ratio diagnostics: the effective sample size on hand-computed cases, the rows they read, and a
learner's diagnostics drawing nothing and changing nothing (training is the same with and without them)."""
from __future__ import annotations

import math

import pytest
import torch

import inspo
from inspo.algos import LEARNERS
from inspo.algos.inspo import InSPO
from inspo.algos.learner import Learner
from inspo.algos.ratio_diagnostics import effective_sample_size, teammate_ratio_diagnostics
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.training_data import diagnostic_rows


def test_effective_sample_size_hand_computed() -> None:
    weights = torch.tensor([[1.0, 1.0, 1.0, 1.0],  # uniform: every row counts
                            [5.0, 0.0, 0.0, 0.0],  # one row holds all the weight: 1/B
                            [1.0, 2.0, 3.0, 0.0]])  # (1+2+3)^2 / (4 (1+4+9)) = 36/56
    assert effective_sample_size(weights).tolist() == pytest.approx([1.0, 0.25, 36 / 56], abs=1e-15)
    with pytest.raises(ValueError, match=r"\[\.\.\., B\] with B >= 1"):
        effective_sample_size(torch.tensor(2.0))


def test_teammate_ratio_diagnostics_hand_computed() -> None:
    # Two agents, two rows; log pi - log mu is [0, log 3] for agent 0 and [0, 0] for agent 1. Agent 0's teammate
    # ratio is agent 1's: [1, 1], ESS 1; agent 1's is [1, 3]: ESS (1+3)^2 / (2 (1+9)) = 0.8.
    logp_mu = torch.log(torch.tensor([[0.5, 0.2], [0.4, 0.1]], dtype=torch.float64))
    logp_pi = logp_mu + torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)
    got = teammate_ratio_diagnostics(logp_pi, logp_mu, rho_max=100.0)
    assert got == pytest.approx({"rho_ess_min": 0.8, "rho_ess_mean": 0.9, "rho_clipped": 0.0}, abs=1e-12)
    # Clipped at 2, agent 1's ratios are [1, 2]: ESS 9 / (2 * 5) = 0.9; one of the four ratios was above 2.
    got = teammate_ratio_diagnostics(logp_pi, logp_mu, rho_max=2.0)
    assert got == pytest.approx({"rho_ess_min": 0.9, "rho_ess_mean": 0.95, "rho_clipped": 0.25}, abs=1e-12)


def test_teammate_ratio_diagnostics_survive_ratios_below_float32() -> None:
    # Ratios of exp(-200) underflow to 0 in float32; in float64 the two rows keep their proportion 1 : e^-1.
    logp_mu = torch.zeros(2, 2)
    logp_pi = torch.tensor([[-200.0, -201.0], [0.0, 0.0]])
    ess = teammate_ratio_diagnostics(logp_pi, logp_mu, rho_max=100.0)["rho_ess_min"]
    e = math.exp(-1.0)
    assert ess == pytest.approx((1 + e) ** 2 / (2 * (1 + e * e)), rel=1e-12)


def test_diagnostic_rows_are_evenly_spaced() -> None:
    assert diagnostic_rows(10, 4, torch.device("cpu")).tolist() == [0, 3, 6, 9]
    assert diagnostic_rows(3, 5, torch.device("cpu")).tolist() == [0, 0, 1, 2, 2]
    with pytest.raises(ValueError, match="n_rows=0"):
        diagnostic_rows(0, 4, torch.device("cpu"))


def test_only_inspo_reports_diagnostics() -> None:
    assert Learner.diagnostics(None, None) == {}  # the base's: nothing, whatever the batch
    assert {name for name, cls in LEARNERS.items() if cls.diagnostics is not Learner.diagnostics} == {"inspo"}


@pytest.fixture(scope="module")
def xor_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    ds = generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0)
    return str(save_dataset(ds, tmp_path_factory.mktemp("data") / "xor"))


def test_training_records_the_diagnostics_without_changing_the_run(xor_data: str, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    cfg = TrainConfig(dataset=xor_data, gamma=0.0, bc_steps=50, iters=200, batch_size=64, hidden=32, eval_every=100,
                      rho_max=2.0, seed=3)
    with_them = inspo.train(cfg)
    # At iteration 0 pi is mu: every ratio is 1 (up to the rounding of two log-softmax paths). Later the XOR data
    # pull the teammates away from mu.
    first, last = with_them.curve[0], with_them.curve[-1]
    assert (first["rho_ess_min"], first["rho_ess_mean"]) == (pytest.approx(1.0, abs=1e-9),) * 2
    assert first["rho_clipped"] == 0.0
    assert 1 / 64 <= last["rho_ess_min"] <= last["rho_ess_mean"] < 1.0
    assert 0.0 <= last["rho_clipped"] <= 1.0

    # The same run with diagnostics that report nothing: the same parameters to the last bit, the same returns.
    monkeypatch.setattr(InSPO, "diagnostics", lambda self, b: {})
    without = inspo.train(cfg)
    assert [r["return"] for r in without.curve] == [r["return"] for r in with_them.curve]
    assert "rho_ess_min" not in without.curve[-1]
    mine, theirs = with_them.policy.network.state_dict(), without.policy.network.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
