"""``inspo reproduce collapse``'s outputs from a record (no training): the runs' table and the figure."""
from __future__ import annotations

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
