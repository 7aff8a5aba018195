"""The baselines (MA-ICQ, OMIGA, CFCQL) in the shared trainer: they train on XOR and Bridge and their losses go down,
they reach the outcomes that value decomposition predicts on the matrix games, and they resume exactly.

Known outcomes (alpha = 0.2, measured values in ``results/baselines.md``). Each method fits a *monotonic*
decomposition of the joint value, so on XOR {AA, AB, BA} every agent's utility ranks B above A (B scores 1 against
the teammate's logged A) and nothing in the decomposition can say that (B, B) is bad:
- MA-ICQ and OMIGA (linear mixer, in-sample actors ``pi_i ∝ mu_i exp(w_i A_i / alpha)``): the exact fit gives
  ``w_i (Q_i(B) - Q_i(A)) = 1`` for both agents, so both move to B: J -> about -1.9 (optimum 1; any symmetric
  product policy is <= 0.25);
- CFCQL (QMIX, greedy): the monotonic fit extrapolates ``Q_tot(B, B) >= 1`` and the greedy joint action is (B, B),
  J = -2, although the counterfactual penalty does push on (B, B).
On XOR with uniform data the best monotonic (and the additive) fit ranks A above B for both agents: every method
ends at (A, A), J = 0, where InSPO reaches 0.99.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import inspo
from _nested import flat_tensors
from inspo import checkpoint
from inspo.algos import LEARNERS
from inspo.algos.batch import Batch, behaviour_log_probs
from inspo.algos.networks import AgentPolicies
from inspo.config import TrainConfig
from inspo.data import generate_matrix, load_dataset, save_dataset
from inspo.envs import make
from inspo.policy import load_policy
from inspo.training import _BATCH_FIELDS, TrainingInterrupted, _to_device

# The learners are driven directly, not through inspo.train: one intra-op thread, as there.
pytestmark = pytest.mark.usefixtures("one_thread")

BASELINES = ("icq", "omiga", "cfcql")
# The loss that must go down in each run: the critic's regression (TD) loss. (CFCQL's conservative penalty sits near
# its floor log|A| from the start, so its total objective moves little on the matrix games.)
LOSS = {"icq": "q_loss", "omiga": "q_loss", "cfcql": "td_loss"}
BRIDGE = Path(__file__).resolve().parent.parent / "data" / "bridge_mix"
SMALL = {"bc_steps": 100, "batch_size": 128, "hidden": 32}
# Matrix games: one step (gamma = 0), exact evaluation after every iteration (cheap), a faster actor learning rate.
MATRIX = {**SMALL, "gamma": 0.0, "eval_every": 1, "lr_policy": 1e-3}




@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baselines")
    for preset in ("xor-aa-ab-ba", "xor-uniform"):
        save_dataset(generate_matrix("xor", preset, 500, seed=0), root / preset)
    return root


def _matrix_run(data_dir: Path, preset: str, algo: str, iters: int, out: Path) -> inspo.TrainResult:
    return inspo.train(TrainConfig(dataset=str(data_dir / preset), algo=algo, iters=iters, out=str(out), **MATRIX))


def _action_probs(result: inspo.TrainResult) -> np.ndarray:
    """The final policy's ``[N, A]`` action probabilities in the (constant) matrix-game state."""
    policy = load_policy(result.checkpoint).network
    obs = torch.tensor(make("xor").reset()[0])
    with torch.no_grad():
        return torch.softmax(policy.all_logits(obs), -1).numpy()


def _assert_loss_decreases(result: inspo.TrainResult, name: str) -> None:
    losses = np.array([rec[name] for rec in result.curve[1:]])  # record 0 is behaviour cloning (no losses)
    assert np.isfinite(losses).all()
    early, late = losses[:5].mean(), losses[-max(len(losses) // 5, 1):].mean()
    assert late < 0.8 * early, (name, early, late)


@pytest.mark.parametrize("algo", BASELINES)
def test_xor_aa_ab_ba_monotonic_decomposition_misses_the_optimum(data_dir: Path, tmp_path: Path, algo: str) -> None:
    result = _matrix_run(data_dir, "xor-aa-ab-ba", algo, iters=300, out=tmp_path)
    _assert_loss_decreases(result, LOSS[algo])
    # Both agents move to B, the out-of-distribution (B, B) = -2. Measured at 300 iterations on 3 seeds: ICQ -0.84
    # to -1.93, OMIGA -0.67 to -1.26 (both still moving towards -1.9), CFCQL -2.00.
    assert result.final_return <= -0.5
    assert (_action_probs(result)[:, 1] >= 0.6).all()
    if algo != "cfcql":  # (CFCQL starts from random utilities, whose greedy policy may happen to be (A, B))
        assert result.best_return <= 0.3


@pytest.mark.parametrize("algo", BASELINES)
def test_xor_uniform_monotonic_decomposition_ends_at_aa(data_dir: Path, tmp_path: Path, algo: str) -> None:
    result = _matrix_run(data_dir, "xor-uniform", algo, iters=300, out=tmp_path)
    _assert_loss_decreases(result, LOSS[algo])
    # (A, A) = 0, far below the optimum 1 (the uniform behaviour policy also has J = 0: look at the policy).
    assert abs(result.final_return) <= 0.2
    assert (_action_probs(result)[:, 0] >= 0.8).all()


@pytest.mark.parametrize("algo", BASELINES)
def test_bridge_trains_and_loss_decreases(algo: str) -> None:
    if not BRIDGE.is_dir():
        pytest.skip(f"shipped Bridge dataset not found at {BRIDGE}")
    cfg = TrainConfig(dataset=str(BRIDGE), algo=algo, iters=200, eval_every=10, eval_episodes=2,
                      eval_episode_limit=5, **SMALL)
    result = inspo.train(cfg)
    _assert_loss_decreases(result, LOSS[algo])
    assert all(np.isfinite(rec["return"]) for rec in result.curve)


def _batches(n: int, seed: int) -> tuple[list[Batch], AgentPolicies, int]:
    """``n`` batches of Bridge-like shape from a 2-round M-NE dataset (bootstrapping and next actions exercised)."""
    ds = generate_matrix("mne", "mne-imbalanced", 100, seed=seed, episode_limit=2)
    data = _to_device(ds, torch.device("cpu"), torch.float64)
    mu = AgentPolicies(2, data["obs"].shape[-1], 3, 16).double()
    data["logmu_all"] = behaviour_log_probs(mu, data["obs"], data["avail"])
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randint(len(ds), (32,), generator=gen)
        logp_mu = data["logmu_all"][idx].gather(-1, data["actions"][idx][..., None]).squeeze(-1).t()
        out.append(Batch(**{name: data[name][idx] for name in _BATCH_FIELDS}, logp_mu=logp_mu))
    return out, mu, data["state"].shape[-1]


def _make(algo: str, mu: AgentPolicies, state_dim: int, seed: int, backend: str = "fused", **config: Any):
    cfg = TrainConfig(dataset="unused", algo=algo, hidden=16, gamma=0.9, dtype="float64", backend=backend, **config)
    torch.manual_seed(seed)
    learner = LEARNERS[algo](cfg, mu, state_dim, torch.device("cpu"), torch.Generator().manual_seed(seed))
    for module in vars(learner).values():
        if isinstance(module, torch.nn.Module):
            module.double()
    return learner


@pytest.mark.parametrize("algo", [*BASELINES, "inspo"])
def test_state_dict_round_trip_reproduces_the_next_update(algo: str) -> None:
    batches, mu, state_dim = _batches(4, seed=0)
    first = _make(algo, mu, state_dim, seed=1)
    for b in batches[:3]:
        first.update(b)
    saved = copy.deepcopy(first.state_dict())
    gen_state = first.gen.get_state()
    expected = first.update(batches[3])

    second = _make(algo, mu, state_dim, seed=2)  # other initial weights: everything must come from the state
    second.load_state_dict(saved)
    second.gen.set_state(gen_state)
    got = second.update(batches[3])
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    for a, b in zip(flat_tensors(first.state_dict()), flat_tensors(second.state_dict()), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first.pi.state_dict().values(), second.pi.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("algo", BASELINES)
def test_fused_and_pytorch_backends_agree(algo: str) -> None:
    batches, mu, state_dim = _batches(5, seed=0)
    runs = {}
    for backend in ("fused", "torch"):
        learner = _make(algo, mu, state_dim, seed=3, backend=backend)
        stats = [learner.update(b) for b in batches]
        runs[backend] = (stats, learner.state_dict())
    for fused, ref in zip(runs["fused"][0], runs["torch"][0], strict=True):
        for key in fused:
            torch.testing.assert_close(fused[key], ref[key], rtol=1e-12, atol=1e-12, msg=key)
    for a, b in zip(flat_tensors(runs["fused"][1]), flat_tensors(runs["torch"][1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_cfcql_counterfactuals_mix_one_changed_action_at_a_time() -> None:
    # Reference: each counterfactual joint value built and mixed on its own, as the definition reads; the learner
    # mixes all N * A of a row at once with the row's hypernetwork weights.
    batches, mu, state_dim = _batches(1, seed=4)
    b, learner = batches[0], _make("cfcql", mu, state_dim, seed=5)
    qs = learner.q(b.obs)
    q_taken = qs.gather(-1, b.actions[..., None]).squeeze(-1)
    got = learner.counterfactual_q(qs, q_taken, b.state)
    rows, n, n_actions = qs.shape
    for i in range(n):
        for a in range(n_actions):
            joint = q_taken.clone()
            joint[:, i] = qs[:, i, a]
            expected = torch.stack([learner.mixer(joint[r:r + 1], b.state[r:r + 1])[0] for r in range(rows)])
            torch.testing.assert_close(got[:, i, a], expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(got.gather(-1, b.actions[..., None]).squeeze(-1),  # the data's own action: Q_tot itself
                       learner.mixer(q_taken, b.state)[:, None].expand(rows, n))


def test_icq_logs_the_largest_bootstrap_factor_of_its_critic_target() -> None:
    # The target bootstraps each row with gamma * n * softmax(Qbar_tot / critic_temp) over the n rows that have a next
    # data action: a cold softmax puts all n on the row of the largest Qbar_tot, a hot one weighs every row 1, and
    # without such rows nothing is bootstrapped.
    batches, mu, state_dim = _batches(1, seed=1)
    b = batches[0]
    learner = _make("icq", mu, state_dim, seed=7)
    with torch.no_grad():
        q_next = learner.q_target(b.next_obs).gather(-1, b.next_actions[..., None]).squeeze(-1)
        qtot_next = learner.mixer_target(q_next, b.next_state)[b.has_next]
    n_next, n_top = len(qtot_next), int((qtot_next == qtot_next.max()).sum())
    assert 1 < n_next < len(b.has_next) and n_top == 1
    for temp, expected in ((1e-9, 0.9 * n_next), (1e12, 0.9)):
        learner = _make("icq", mu, state_dim, seed=7)
        learner.cfg.icq.critic_temp = temp
        assert learner.update(b)["target_weight_max"].item() == pytest.approx(expected, rel=1e-9)
    learner = _make("icq", mu, state_dim, seed=7)
    stats = learner.update(dataclasses.replace(b, has_next=torch.zeros_like(b.has_next)))
    assert stats["target_weight_max"].item() == 0.0
    assert torch.isfinite(stats["q_loss"])


def test_icq_normalised_mixer_weights_sum_to_one_where_the_papers_are_unbounded() -> None:
    # The released code's mixer divides the paper's |hypernet(s)| weights by their sum (the second runaway route of
    # results/smax_study.md, twenty-first sitting); the paper's stays the default, so older configs mean what they did.
    batches, mu, state_dim = _batches(2, seed=1)
    paper = _make("icq", mu, state_dim, seed=7)
    normalised = _make("icq", mu, state_dim, seed=7, icq={"mixer": "normalised"})
    older = TrainConfig.from_dict({"dataset": "d", "icq": {"critic_temp": 5.0}})  # a config from before the option
    assert paper.cfg.icq.mixer == older.icq.mixer == "paper"
    state = batches[0].state
    w_paper, b_paper = paper.mixer.weights(state)
    w_norm, b_norm = normalised.mixer.weights(state)
    assert not torch.allclose(w_paper.sum(-1), torch.ones(len(state), dtype=w_paper.dtype))
    torch.testing.assert_close(w_norm, w_paper / w_paper.sum(-1, keepdim=True))  # the same hypernetwork at the start
    assert torch.equal(b_norm, b_paper)
    for b in batches:
        assert torch.isfinite(normalised.update(b)["q_loss"])
    for mixer in (normalised.mixer, normalised.mixer_target):
        torch.testing.assert_close(mixer.weights(state)[0].sum(-1), torch.ones(len(state), dtype=w_norm.dtype))


@pytest.mark.parametrize("algo", BASELINES)
def test_interrupted_run_resumes_to_identical_parameters(data_dir: Path, tmp_path: Path, algo: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the trainer only handles SIGINT on the main thread")
    values = {"dataset": str(data_dir / "xor-aa-ab-ba"), "algo": algo, "iters": 40, "eval_every": 20,
              "checkpoint_every": 7, "gamma": 0.0, **SMALL, "bc_steps": 30}
    full = inspo.train(TrainConfig(**values, out=str(tmp_path / "full")))

    cls = LEARNERS[algo]
    original, calls = cls.update, {"n": 0}

    def update_then_interrupt(self, batch):
        calls["n"] += 1
        if calls["n"] == 17:  # mid-run, between checkpoints: the stop handler saves this step's state
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(cls, "update", update_then_interrupt)
    cfg = TrainConfig(**values, out=str(tmp_path / "cut"))
    with pytest.raises(TrainingInterrupted):
        inspo.train(cfg)
    monkeypatch.setattr(cls, "update", original)
    resumed = inspo.train(cfg, resume=True)

    assert resumed.final_return == full.final_return
    assert [r["return"] for r in resumed.curve] == [r["return"] for r in full.curve]
    ends = [checkpoint.load(Path(run) / "checkpoint.pt")["learner"] for run in (tmp_path / "full", tmp_path / "cut")]
    for a, b in zip(flat_tensors(ends[0]), flat_tensors(ends[1]), strict=True):
        assert torch.equal(a, b)


def test_config_accepts_the_baselines_and_checks_their_fields() -> None:
    for algo in BASELINES:
        assert TrainConfig.preset(algo, dataset="d").algo == algo
    for flat, (method, field), bad in (("cql_alpha", ("cfcql", "cql_alpha"), -1.0),
                                       ("icq_critic_temp", ("icq", "critic_temp"), 0.0),
                                       ("cfcql_policy_temp", ("cfcql", "policy_temp"), 0.0),
                                       ("cfcql_lambda_temp", ("cfcql", "lambda_temp"), -1.0)):
        with pytest.raises(ValueError, match=rf"config\.{method}\.{field}"):
            TrainConfig(dataset="d", algo="cfcql", **{method: {field: bad}})
        with pytest.raises(ValueError, match=rf"config\.{method}\.{field}"):  # the flat key of older configs
            TrainConfig.from_dict({"dataset": "d", "algo": "cfcql", flat: bad})
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig(dataset="d", algo="omiga", alpha=0.0)


def test_shipped_bridge_has_next_actions_where_episodes_go_on() -> None:
    if not BRIDGE.is_dir():
        pytest.skip(f"shipped Bridge dataset not found at {BRIDGE}")
    ds = load_dataset(BRIDGE)
    data = _to_device(ds, torch.device("cpu"), torch.float32)
    has_next = data["has_next"].numpy()
    ends = np.asarray(ds.terminated) | np.asarray(ds.truncated)
    assert (has_next == ~ends).all()
    rows = np.flatnonzero(has_next)
    assert (data["next_actions"].numpy()[rows] == np.asarray(ds.actions)[rows + 1]).all()
    assert (data["next_obs"].numpy()[rows] == np.asarray(ds.obs)[rows + 1]).all()
