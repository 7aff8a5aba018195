"""``inspo reproduce collapse``: its outputs from a record (the runs' table and the figure), and a tiny suite on 3m
trained through the run cache."""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from inspo.reproduce.collapse import _markdown, plot_collapse


def _record() -> dict:
    def curve(returns: list[float], ess: list[float], clipped: float) -> list[dict]:
        return [{"iteration": 100 * k, "return": r, "win_rate": r / 4, "rho_ess_min": e, "rho_ess_mean": e,
                 "rho_clipped": clipped} for k, (r, e) in enumerate(zip(returns, ess))]

    variant = {"dataset": "6h_vs_8z-medium-replay", "seed": 0, "behaviour": 0.9, "data_win_rate": 0.227}
    return {"command": "inspo reproduce collapse --out results", "seeds": [0], "wall_time_s": 1.0,
            "variants": [{**variant, "label": "rho_max 100", "curve": curve([0.7, 0.3], [1.0, 0.54], 0.0)},
                         {**variant, "label": "rho off", "curve": curve([0.7, 0.8], [1.0, 0.92], 0.0)}],
            "early": [{"dataset": "6h_vs_8z-medium-replay", "seed": 0, "label": "rho_max 2",
                       "curve": curve([0.7, 0.75], [1.0, 0.9], 0.03)}]}


def test_collapse_table_holds_every_evaluation() -> None:
    text = _markdown(_record())
    assert "`inspo reproduce collapse --out results`" in text
    assert "## 6h_vs_8z-medium-replay (data: return 0.900, win rate 0.227)" in text
    assert "| rho_max 100 (0) | 0.700 / 0.175 / 1.00 | 0.300 / 0.075 / 0.54 |" in text
    assert "| rho off (0) | 0.700 / 0.175 / 1.00 | 0.800 / 0.200 / 0.92 |" in text
    # The clipped fraction shows where some ratios were clipped.
    assert "| rho_max 2 (0) | 0.700 / 0.175 / 1.00 (0.03) | 0.750 / 0.188 / 0.90 (0.03) |" in text


def test_collapse_figure_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot_collapse(_record(), tmp_path / "smax_collapse.png")
    assert (tmp_path / "smax_collapse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("jaxmarl") is None,
                    reason="SMAX needs the optional extra: pip install 'inspo[smax]'")
def test_collapse_suite_trains_through_the_run_cache(tmp_path: Path) -> None:
    from inspo.online import OnlineConfig, train_online
    from inspo.reproduce.collapse import COLLAPSE, reproduce_collapse

    pytest.importorskip("matplotlib")
    policies = tmp_path / "policies"
    train_online(OnlineConfig(env="smax:3m", steps=8 * 8 * 4, num_envs=8, rollout=8, minibatches=2, epochs=2, hidden=16,
                              snapshot_every=2, eval_episodes=8), policies / "3m")
    suite = replace(COLLAPSE, datasets=("3m-medium-replay",), rho_max=(100.0, 2.0), seeds=(0, 1), iters=4,
                    bc_steps=4, episodes=8, eval_episodes=4, eval_every=2, early_iters=2, early_every=1,
                    settings={"hidden": 16, "threads": 1})
    out = tmp_path / "results"
    record = reproduce_collapse(out, suite, policies)
    assert [(v["label"], v["seed"]) for v in record["variants"]] == [
        ("rho_max 100", 0), ("rho_max 2", 0), ("rho off", 0), ("rho_max 100", 1), ("rho_max 2", 1), ("rho off", 1)]
    assert [v["label"] for v in record["early"]] == ["rho_max 100", "rho_max 2"]
    for variant in record["variants"]:
        assert [row["iteration"] for row in variant["curve"]] == [0, 2, 4]
        assert all(0.0 < row["rho_ess_min"] <= 1.0 + 1e-9 for row in variant["curve"])  # what the ratio would be
    assert [row["iteration"] for row in record["early"][0]["curve"]] == [0, 1, 2]
    # Members of one population: the rho_max runs of a seed start from the same clone, so their first evaluation
    # is the same; the seeds' clones differ.
    first = {(v["label"], v["seed"]): v["curve"][0]["return"] for v in record["variants"]}
    assert first[("rho_max 100", 0)] == first[("rho_max 2", 0)] == first[("rho off", 0)]
    for name in ("smax_collapse.json", "smax_collapse.png", "smax_collapse_runs.md"):
        assert (out / name).is_file()
    # Again: every run is read back from the run cache, nothing is trained.
    runs = sorted((out / "cache" / "runs" / "collapse").rglob("metrics.json"))
    stamps = [p.stat().st_mtime_ns for p in runs]
    again = reproduce_collapse(out, suite, policies)
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert again["variants"] == record["variants"] and again["early"] == record["early"]
