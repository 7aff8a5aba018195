"""A wheel carries its data: built from this checkout, installed into a new virtual environment and used from
another folder, it runs the README's main job (the shipped Bridge dataset, by name) and generates SMAX expert data
with the shipped behaviour policies."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _readme_main_job() -> list[str]:
    """The `inspo train ...` part of the README's first command (the main job)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", readme, re.S).group(1)
    job = block.split("&&")[-1].strip()
    assert job.startswith("inspo train "), job
    return shlex.split(job)


def test_readme_main_job_names_the_shipped_dataset() -> None:
    job = _readme_main_job()
    assert job[job.index("--dataset") + 1] == "bridge_mix"  # a name, so that it runs from any folder


def test_wheel_outside_the_checkout_runs_the_main_job_and_generates_smax_data(tmp_path: Path) -> None:
    pytest.importorskip("jaxmarl", reason="the SMAX part needs the smax extra")
    run = lambda *cmd, **kw: subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)  # noqa: E731
    # The editable install's build folder is reused, so the extension is not compiled again.
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w",
                str(tmp_path / "wheels"), str(ROOT))
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("inspo-*.whl")
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(venv)).returncode == 0
    python = venv / "bin" / "python"
    # torch, numpy and jax come from this environment's site-packages, added as a plain path: its .pth files (an
    # editable install of this checkout among them) are not read, so only the wheel provides `inspo`.
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel))
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(str(python), "-c", "import inspo, inspo.data; print(inspo.__file__); print(inspo.data.SHIPPED_DATA)",
                cwd=work, env=env)
    assert where.returncode == 0, where.stderr[-3000:]
    assert str(ROOT) not in where.stdout and str(venv) in where.stdout
    inspo = str(venv / "bin" / "inspo")
    job = run(inspo, *_readme_main_job()[1:], cwd=work, env=env)
    assert job.returncode == 0, job.stderr[-3000:]
    assert (work / "runs" / "bridge" / "final.pt").is_file()
    gen = run(inspo, "datasets", "generate", "--env", "smax:2s3z", "--quality", "expert", "--episodes", "4",
              "--seed", "0", "--out", "smax_expert", cwd=work, env=env)
    assert gen.returncode == 0, gen.stderr[-3000:]
    # The checkout's editable install makes the same data with the same manifest: its digest names no install.
    from inspo.cli import main
    from inspo.data import load_dataset

    assert main(["datasets", "generate", "--env", "smax:2s3z", "--quality", "expert", "--episodes", "4", "--seed",
                 "0", "--out", str(tmp_path / "here")]) == 0
    manifest = load_dataset(work / "smax_expert", verify=False).manifest
    assert manifest == load_dataset(tmp_path / "here", verify=False).manifest
    assert manifest["behaviour"]["policy_folder"] == "data/smax_policies/2s3z"
