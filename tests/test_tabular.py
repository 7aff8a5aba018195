"""Exact tabular InSPO (inspo.tabular): the known answers of docs/design.md section 3 and hand-derived cases."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from inspo.tabular import MNE_PAYOFF, XOR_PAYOFF, mne_imbalanced_probs, solve

SEEDS = range(5)
TOL = 0.02

XOR_AA_AB_BA = np.array([[1.0, 1.0], [1.0, 0.0]])
XOR_UNIFORM = np.ones((2, 2))
XOR_AB_BA = np.array([[0.0, 1.0], [1.0, 0.0]])
MNE_BALANCED = np.ones((3, 3))

# (id, payoff, data, alpha, beta, orders, expected J): every row of the docs/design.md section 3 table. "Sequential" is
# the
# the design's random order; the fixed order is checked too because it reaches the same answers on these games.
TABLE = [
    ("xor-aa-ab-ba-sequential", XOR_PAYOFF, XOR_AA_AB_BA, 0.2, 0.0, ("random", "fixed"), 0.98),
    ("xor-aa-ab-ba-simultaneous", XOR_PAYOFF, XOR_AA_AB_BA, 0.2, 0.0, ("simultaneous",), 0.01),
    ("xor-uniform-sequential", XOR_PAYOFF, XOR_UNIFORM, 0.2, 0.0, ("random", "fixed"), 0.99),
    ("xor-uniform-simultaneous", XOR_PAYOFF, XOR_UNIFORM, 0.2, 0.0, ("simultaneous",), -1.96),
    ("xor-ab-ba-any", XOR_PAYOFF, XOR_AB_BA, 0.2, 0.0, ("random", "fixed", "simultaneous"), 0.0),
    ("xor-ab-ba-any-entropy", XOR_PAYOFF, XOR_AB_BA, 0.2, 0.2, ("random", "fixed", "simultaneous"), 0.0),
    ("mne-imbalanced-beta0", MNE_PAYOFF, mne_imbalanced_probs(), 1.0, 0.0, ("random", "fixed"), 5.00),
    ("mne-imbalanced-beta1", MNE_PAYOFF, mne_imbalanced_probs(), 1.0, 1.0, ("random", "fixed"), 9.98),
    ("mne-balanced-beta0", MNE_PAYOFF, MNE_BALANCED, 1.0, 0.0, ("random", "fixed"), 10.0),
]


@pytest.mark.parametrize("payoff, data, alpha, beta, orders, expected", [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_spec_table(payoff, data, alpha, beta, orders, expected):
    for order in orders:
        for seed in SEEDS:
            policies, j = solve(payoff, data, alpha, beta, iters=200, order=order, seed=seed)
            assert abs(j - expected) <= TOL, f"order={order} seed={seed}: J={j:.4f}, expected {expected}"
            for pi in policies:
                assert np.all(np.isfinite(pi)) and np.all(pi >= 0) and math.isclose(pi.sum(), 1.0)


def test_simultaneous_is_a_two_cycle():
    # Simultaneous updates on XOR best-respond to the teammate's previous policy, so the joint policy flips between
    # all-A (J = 0) and all-B (J = -1.96) every iteration: the table's -1.96 is the even-iteration phase (200 iters).
    # Sequential updates converge instead.
    assert solve(XOR_PAYOFF, XOR_UNIFORM, 0.2, 0.0, iters=199, order="simultaneous")[1] == pytest.approx(0.0, abs=TOL)
    assert solve(XOR_PAYOFF, XOR_UNIFORM, 0.2, 0.0, iters=200, order="simultaneous")[1] == pytest.approx(-1.96, abs=TOL)
    assert solve(XOR_PAYOFF, XOR_UNIFORM, 0.2, 0.0, iters=199, order="random")[1] == pytest.approx(0.99, abs=TOL)


def test_one_fixed_order_iteration_by_hand():
    # XOR on {AA, AB, BA}, alpha = 0.2, beta = 0 (tau = 0.2), fixed order, one iteration. The 1e-3 start noise moves
    # these numbers by well under the tolerance.
    # Agent 0 sees agent 1 at mu, so rho = 1 and p_0 = mu_0 = (2/3, 1/3); Qtilde_0 = (mean(0, 1), 1) = (0.5, 1):
    #   pi_0(B)/pi_0(A) = (1/2) exp(0.5 / 0.2).
    ratio0 = 0.5 * math.exp(2.5)
    pi0_b = ratio0 / (1 + ratio0)
    # Agent 1 resamples the rows with rho = pi_0(a_0) / mu_0(a_0): AA and AB get pi_0(A)/(2/3), BA gets pi_0(B)/(1/3).
    w_aa = w_ab = (1 - pi0_b) / (2 / 3)
    w_ba = pi0_b / (1 / 3)
    p1_b = w_ab / (w_aa + w_ab + w_ba)
    q1_a = (0.0 * w_aa + 1.0 * w_ba) / (w_aa + w_ba)
    ratio1 = p1_b / (1 - p1_b) * math.exp((1.0 - q1_a) / 0.2)
    pi1_b = ratio1 / (1 + ratio1)
    # With the behaviour marginal mu_1 = (2/3, 1/3) as reference instead of p_1, agent 1 would keep far more mass on B.
    bc_ratio1 = 0.5 * math.exp((1.0 - q1_a) / 0.2)
    assert bc_ratio1 / (1 + bc_ratio1) > pi1_b + 0.3

    policies, _ = solve(XOR_PAYOFF, XOR_AA_AB_BA, 0.2, 0.0, iters=1, order="fixed", seed=0)
    assert policies[0][1] == pytest.approx(pi0_b, abs=5e-3)
    assert policies[1][1] == pytest.approx(pi1_b, abs=5e-3)


# A 3-agent "one volunteer" game: each agent plays A (0) or B (1); the team scores 1 if exactly one agent plays B,
# 0 if nobody does and -2 if two or more do (the 3-agent analogue of XOR). The data holds the four joint actions with
# at most one B, equally often, so mu_i = (3/4, 1/4) and no row shows what two volunteers cost.
VOLUNTEER_PAYOFF = np.zeros((2, 2, 2))
VOLUNTEER_DATA = np.zeros((2, 2, 2))
for _a in itertools.product((0, 1), repeat=3):
    VOLUNTEER_PAYOFF[_a] = {0: 0.0, 1: 1.0}.get(sum(_a), -2.0)
    VOLUNTEER_DATA[_a] = 1.0 if sum(_a) <= 1 else 0.0


def _volunteers(policies):
    return [i for i, pi in enumerate(policies) if pi[1] > 0.99]


def test_three_agents_sequential_elects_one_volunteer():
    # Against teammates at mu every agent sees Qtilde(B) = 1 > Qtilde(A) = (0 + 1 + 1)/3, so whoever moves first turns
    # to B. The others then resample mostly the row where that agent plays B, where their own A already scores 1, so
    # they stay on A. Fixed point (alpha = 0.2, beta = 0): the volunteer k resamples AAA and its own-B row about
    # equally, Qtilde_k = (~0, 1), so pi_k(B) ~ 1/(1 + e^-5) = 0.993; the others get
    # pi(B) ~ pi_k(A) / (3 pi_k(B)) ~ 0.0025; J ~ 0.993 - 4 * 0.0025 ~ 0.98.
    for seed in SEEDS:
        for order in ("random", "fixed"):
            policies, j = solve(VOLUNTEER_PAYOFF, VOLUNTEER_DATA, 0.2, 0.0, order=order, seed=seed)
            assert j == pytest.approx(0.98, abs=TOL), f"order={order} seed={seed}"
            volunteers = _volunteers(policies)
            assert len(volunteers) == 1
            assert all(pi[1] < 0.005 for i, pi in enumerate(policies) if i != volunteers[0])
            if order == "fixed":
                assert volunteers == [0]


def test_three_agents_random_order_varies_the_volunteer():
    chosen = {_volunteers(solve(VOLUNTEER_PAYOFF, VOLUNTEER_DATA, 0.2, 0.0, seed=seed)[0])[0] for seed in SEEDS}
    assert len(chosen) > 1


def test_three_agents_simultaneous_never_coordinates():
    # First iteration, every agent against teammates at mu: pi(B)/pi(A) = (1/4)/(3/4) * exp((1 - 2/3) / 0.2).
    ratio = math.exp(5 / 3) / 3
    policies, _ = solve(VOLUNTEER_PAYOFF, VOLUNTEER_DATA, 0.2, 0.0, iters=1, order="simultaneous")
    for pi in policies:
        assert pi[1] == pytest.approx(ratio / (1 + ratio), abs=5e-3)
    # All three agents are updated identically, so they volunteer together (all B, J ~ -2) and then all retreat
    # (all A, J ~ 0), a 2-cycle like XOR's; the coordinated J ~ 0.98 is never reached.
    _, j_odd = solve(VOLUNTEER_PAYOFF, VOLUNTEER_DATA, 0.2, 0.0, iters=199, order="simultaneous")
    policies, j_even = solve(VOLUNTEER_PAYOFF, VOLUNTEER_DATA, 0.2, 0.0, iters=200, order="simultaneous")
    assert j_odd == pytest.approx(-2.0, abs=TOL)
    assert j_even == pytest.approx(0.0, abs=TOL)
    assert all(pi[0] > 0.99 for pi in policies)


def test_zero_resampled_mass_gets_zero_probability():
    # Only (A, B) in the data: every action outside it has no resampled mass and must get probability 0 (not NaN),
    # also for alpha = 0, where the reference term p^(alpha/tau) = p^0 would otherwise not exclude it.
    data = np.array([[0.0, 1.0], [0.0, 0.0]])
    for alpha, beta in ((0.2, 0.0), (0.0, 1.0), (0.5, 0.5)):
        policies, j = solve(XOR_PAYOFF, data, alpha, beta, iters=20)
        np.testing.assert_array_equal(policies[0], [1.0, 0.0])
        np.testing.assert_array_equal(policies[1], [0.0, 1.0])
        assert j == 1.0


def test_single_agent_closed_form():
    # One agent: rho = 1, p = D, Qtilde = payoff, so one update gives pi ∝ D^(alpha/tau) exp(payoff/tau) on the data's
    # support, and the unlogged best action (payoff 3) gets nothing: learning stays in-sample.
    payoff, data = np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 0.0])
    policies, j = solve(payoff, data, 0.0, 1.0, iters=1)
    np.testing.assert_allclose(policies[0], [1 / (1 + math.e), math.e / (1 + math.e), 0.0])
    assert j == pytest.approx(float(policies[0] @ payoff))
    policies, _ = solve(payoff, data, 1.0, 1.0, iters=1)
    logits = 0.5 * np.log([0.75, 0.25]) + payoff[:2] / 2.0
    np.testing.assert_allclose(policies[0][:2], np.exp(logits) / np.exp(logits).sum())
    assert policies[0][2] == 0.0


def test_large_payoffs_stay_finite():
    policies, j = solve(1000.0 * XOR_PAYOFF, XOR_UNIFORM, 0.2, 0.0)
    assert all(np.all(np.isfinite(pi)) for pi in policies)
    assert j == pytest.approx(1000.0, rel=1e-6)


def test_initial_policies_are_mu_plus_small_noise():
    policies, _ = solve(MNE_PAYOFF, mne_imbalanced_probs(), 1.0, 0.0, iters=0)
    mu = mne_imbalanced_probs().sum(axis=1)
    for pi in policies:
        assert np.abs(pi - mu).max() < 2e-3
        assert not np.array_equal(pi, mu)


def test_deterministic_per_seed():
    for order in ("random", "fixed", "simultaneous"):
        a, ja = solve(VOLUNTEER_PAYOFF, VOLUNTEER_DATA, 0.2, 0.1, iters=30, order=order, seed=3)
        b, jb = solve(VOLUNTEER_PAYOFF, VOLUNTEER_DATA, 0.2, 0.1, iters=30, order=order, seed=3)
        assert ja == jb
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    start3, _ = solve(MNE_PAYOFF, MNE_BALANCED, 1.0, 0.0, iters=0, seed=3)
    start4, _ = solve(MNE_PAYOFF, MNE_BALANCED, 1.0, 0.0, iters=0, seed=4)
    assert not np.array_equal(start3[0], start4[0])


def test_data_is_normalised():
    a, ja = solve(MNE_PAYOFF, 89.0 * mne_imbalanced_probs(), 1.0, 1.0, iters=20)
    b, jb = solve(MNE_PAYOFF, mne_imbalanced_probs(), 1.0, 1.0, iters=20)
    assert ja == pytest.approx(jb)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y)


def test_game_constants():
    np.testing.assert_array_equal(XOR_PAYOFF, [[0, 1], [1, -2]])
    np.testing.assert_array_equal(MNE_PAYOFF, [[10, -5, -5], [-5, 2, 0], [-5, 0, 5]])
    with pytest.raises(ValueError):
        XOR_PAYOFF[0, 0] = 5.0
    probs = mne_imbalanced_probs()
    assert probs.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(probs * 89, [[2, 1, 1], [1, 1, 1], [1, 1, 80]])
    probs[0, 0] = 0.0
    assert mne_imbalanced_probs()[0, 0] == pytest.approx(2 / 89)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(joint_action_probs=np.ones((2, 3))), ValueError, r"shape of payoff \(2, 2\), got \(2, 3\)"),
    (dict(payoff=np.float64(1.0), joint_action_probs=np.float64(1.0)), ValueError, "one axis per agent"),
    (dict(payoff=np.zeros((2, 0)), joint_action_probs=np.zeros((2, 0))), ValueError, "at least one action"),
    (dict(payoff=[[0.0, np.nan], [1.0, -2.0]]), ValueError, "payoff must be finite"),
    (dict(joint_action_probs=[[1.0, np.inf], [1.0, 0.0]]), ValueError, "joint_action_probs must be finite"),
    (dict(joint_action_probs=[[1.0, -0.5], [1.0, 0.0]]), ValueError, "nonnegative, got minimum -0.5"),
    (dict(joint_action_probs=np.zeros((2, 2))), ValueError, "positive sum, got 0.0"),
    (dict(alpha=-0.1), ValueError, "alpha must be a finite number >= 0, got -0.1"),
    (dict(alpha=math.inf), ValueError, "alpha must be a finite number >= 0, got inf"),
    (dict(beta=-1.0), ValueError, "beta must be a finite number >= 0, got -1.0"),
    (dict(alpha=0.0, beta=0.0), ValueError, r"alpha \+ beta .* must be > 0, got alpha=0.0, beta=0.0"),
    (dict(alpha="0.2"), TypeError, "alpha must be a real number, got '0.2'"),
    (dict(iters=-1), ValueError, "iters must be >= 0, got -1"),
    (dict(iters=2.5), TypeError, "iters must be an integer, got 2.5"),
    (dict(order="sequential"), ValueError,
     r"order must be one of \('random', 'fixed', 'simultaneous'\), got 'sequential'"),
])
def test_validation(kwargs, error, match):
    args = dict(payoff=XOR_PAYOFF, joint_action_probs=XOR_AA_AB_BA, alpha=0.2, beta=0.0, iters=5, order="random")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        solve(**args)
