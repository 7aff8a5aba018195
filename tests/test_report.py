"""``inspo report``: PNG learning curves and a markdown summary of a training run and of a search."""
from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from inspo.cli import main
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset
from inspo.progress import ProgressBar
from inspo.report import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    """A real, readable picture: the PNG signature, some bytes, and matplotlib reads it back."""
    image = pytest.importorskip("matplotlib.image")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 1000, path
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run (``inspo train --out``) on the XOR game."""
    from inspo.training import train

    root = tmp_path_factory.mktemp("report")
    data = root / "xor"
    save_dataset(generate_matrix("xor", "xor-aa-ab-ba", 300, seed=0), data)
    train(TrainConfig(dataset=str(data), iters=60, bc_steps=40, batch_size=64, eval_every=20, eval_episode_limit=1,
                      lr_policy=1e-3, checkpoint_every=50, out=str(root / "run")))
    return root / "run"


def test_report_of_a_run_writes_readable_pngs_and_markdown(run_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra 'plot': pip install 'inspo[plot]'")
    out = tmp_path / "rep"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    names = [Path(p).name for p in printed["images"]]
    # InSPO's curve records losses, the policy entropy and the largest weight: one figure each.
    assert names == ["return.png", "losses.png", "entropy.png", "weights.png"]
    for path in printed["images"]:
        _check_png(Path(path))
    md = (out / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"| final return | {metrics['final_return']:.4g} " in md
    assert f"| best return | {metrics['best_return']:.4g} " in md
    assert "data (behaviour) return" in md and "optimum" in md
    for name in names:
        assert f"]({name})" in md  # the markdown shows each picture, by a path relative to itself
    assert not list(out.glob(".*"))  # no temporary files left behind (atomic writes)


def test_report_defaults_to_a_folder_inside_the_run(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra 'plot': pip install 'inspo[plot]'")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    result = report(copy)
    assert Path(result.markdown) == copy / "report" / "report.md"


def test_report_of_an_unfinished_run_reads_its_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra 'plot': pip install 'inspo[plot]'")
    unfinished = tmp_path / "run"
    shutil.copytree(run_dir, unfinished)
    (unfinished / "metrics.json").unlink()
    result = report(unfinished)
    md = Path(result.markdown).read_text()
    assert "unfinished: step" in md and "| final return |" in md
    _check_png(Path(result.images[0]))


def test_report_of_a_folder_without_results_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "neither metrics.json nor checkpoint.pt" in capsys.readouterr().err


def _fake_search(root: Path) -> Path:
    """The files `inspo tune` writes, for a search of two parameters with one failed trial."""
    space = {"alpha": {"lower": 1e-3, "upper": 10.0, "log": True, "default": 0.2},
             "beta": {"lower": 0.0, "upper": 2.0, "log": False, "default": 0.0}}
    values = [(0.2, 0.0, 0.3), (1.5, 0.5, 0.8), (0.01, 1.9, None), (0.9, 0.3, 0.95), (5.0, 1.0, 0.1)]
    trials = []
    for k, (alpha, beta, ret) in enumerate(values):
        t = {"trial": k, "status": "success" if ret is not None else "crashed",
             "params": {"alpha": alpha, "beta": beta}, "return": ret, "default": k == 0}
        trials.append(t)
        curve = [{"iteration": i * 50, "return": (ret or 0) * i / 4, "return_std": 0.0} for i in range(5)]
        result = {**t, "runs": [{"seed": 0, "curve": curve}] if ret is not None else [], "error": None}
        (root / "trials" / f"{k:04d}").mkdir(parents=True)
        (root / "trials" / f"{k:04d}" / "result.json").write_text(json.dumps(result))
    summary = {"format": 1, "objective": "final", "seeds": [0], "n_trials": 5, "workers": 1,
               "smac": {"version": "2.4.1", "seed": 0, "facade": "HyperparameterOptimizationFacade"}, "space": space,
               "base_config": TrainConfig(dataset="data/xor").to_dict(), "trials": trials,
               "incumbent": {"trial": 3, "params": trials[3]["params"], "return": 0.95},
               "default": {"trial": 0, "return": 0.3}, "wall_time": 12.0}
    (root / "tune.json").write_text(json.dumps(summary))
    return root


def test_report_of_a_search(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra 'plot': pip install 'inspo[plot]'")
    result = report(_fake_search(tmp_path / "search"))
    assert [Path(p).name for p in result.images] == ["trials.png", "curves.png", "params.png", "incumbent.png"]
    for path in result.images:
        _check_png(Path(path))
    md = Path(result.markdown).read_text()
    assert "Return **0.95** (trial 3), against **0.3** for the default (trial 0)" in md
    assert "| alpha | 0.2 | 0.9 | [0.001, 10], log |" in md
    assert "| 1 | 3 | 0.95 |" in md and "crashed" in md
    assert "### Learning curve of every trial" in md and "![Learning curve of every trial](curves.png)" in md


def test_report_of_a_multi_fidelity_search_of_integer_and_categorical_parameters(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra 'plot': pip install 'inspo[plot]'")
    root = _fake_search(tmp_path / "search")
    summary = json.loads((root / "tune.json").read_text())
    summary["space"] = {"hidden": {"type": "int", "lower": 16, "upper": 256, "log": True, "default": 64},
                        "order": {"type": "categorical", "choices": ["random", "fixed"], "default": "random"}}
    summary["fidelity"] = {"name": "iters", "min": 50, "max": 150, "eta": 3}
    for k, t in enumerate(summary["trials"]):
        t["params"] = {"hidden": [64, 32, 128, 200, 16][k], "order": ["random", "fixed"][k % 2]}
        t["iters"] = 150 if k in (0, 3) else 50
    summary["incumbent"] = {"trial": 3, "params": summary["trials"][3]["params"], "iters": 150, "return": 0.95}
    (root / "tune.json").write_text(json.dumps(summary))
    result = report(root)
    assert [Path(p).name for p in result.images] == ["trials.png", "curves.png", "params.png", "incumbent.png"]
    md = Path(result.markdown).read_text()
    assert "| order | random | fixed | {random, fixed} |" in md and "| hidden | 64 | 200 | [16, 256], log |" in md
    assert "multi-fidelity (Hyperband, eta 3): 50 to 150 iterations" in md
    assert "| rank | trial | return | iters | hidden | order | note |" in md and "| 1 | 3 | 0.95 | 150 | 200 |" in md


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, run_dir: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(RuntimeError, match=r"pip install 'inspo\[plot\]'"):
        report(run_dir, tmp_path / "rep")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_quiet_off_a_terminal() -> None:
    quiet = io.StringIO()
    bar = ProgressBar(4, "work", stream=quiet)
    for k in range(1, 5):
        bar.update(k, "note")
    bar.close()
    assert quiet.getvalue() == ""
    tty = _Tty()
    bar = ProgressBar(4, "work", stream=tty)
    bar.update(2, "half")
    bar.close()
    assert "work [" in tty.getvalue() and "2/4" in tty.getvalue() and tty.getvalue().endswith("\n")


def test_grouped_bar_chart_skips_missing_values(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is the optional extra 'plot': pip install 'inspo[plot]'")
    from inspo.reproduce.plots import BarSeries, grouped_bar_chart

    # A NaN mean (no value for that group) draws no bar; a None reference draws no line; neither is an error.
    path = tmp_path / "bars.png"
    series = [BarSeries("x", [1.0, float("nan")], [0.1, 0.0]), BarSeries("y", [-2.0, 0.5], [0.0, 0.2])]
    grouped_bar_chart(path, "title", ["a", "b"], [("final", series)], [("optimum", [1.5, None])])
    _check_png(path)


def test_missing_matplotlib_is_its_own_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from inspo.report import MatplotlibMissing
    from inspo.reproduce.plots import BarSeries, grouped_bar_chart

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MatplotlibMissing, match=r"pip install 'inspo\[plot\]'"):
        grouped_bar_chart(tmp_path / "bars.png", "title", ["a"], [("final", [BarSeries("x", [1.0], [0.0])])])
    assert not (tmp_path / "bars.png").exists()
