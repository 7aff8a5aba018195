"""Committed files carry no absolute paths of the machine that made them: results, manifests, benchmark tables and
docs name files relative to the repository (and by content digest)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import inspo
from inspo.data import import_pymarl
from inspo.provenance import package_info, portable_path

ROOT = Path(__file__).resolve().parent.parent
# A quoted or space-preceded absolute path into a home, scratch or work folder of some machine.
MACHINE_PATH = re.compile(r"""(?:^|["'\s=(])(/(?:work|tmp|home|root|Users|scratch|mnt)/[\w.-]+)""")
TEXT_SUFFIXES = {".json", ".md", ".txt", ".py", ".sh", ".toml", ".cfg", ".yaml", ".yml", ".cpp", ".h", ".cu", ""}


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed files cannot be listed")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_committed_text_files_hold_no_machine_paths() -> None:
    offenders = []
    for path in _tracked_files():
        rel = path.relative_to(ROOT).as_posix()
        if path.suffix not in TEXT_SUFFIXES or rel == "tests/test_provenance.py" or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            match = MACHINE_PATH.search(line)
            if match:
                offenders.append(f"{rel}:{lineno}: {match.group(1)}")
    assert not offenders, "absolute machine paths in committed files:\n" + "\n".join(offenders[:40])


def test_the_pattern_catches_what_it_is_for() -> None:
    assert MACHINE_PATH.search('"dataset": "/work/main/data/bridge_mix"')
    assert MACHINE_PATH.search("imported from PyMARL buffer /tmp/x/bridge_mix")
    assert not MACHINE_PATH.search('"dataset": "data/bridge_mix"')
    assert not MACHINE_PATH.search("see https://github.com/x/y/tmp/z")


def test_portable_path_is_relative_to_the_checkout_or_only_a_name(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert portable_path(ROOT / "data" / "bridge_mix") == "data/bridge_mix"
    assert portable_path(tmp_path / "runs" / "x") == "x"


def test_imported_dataset_names_its_source_relative_to_the_checkout(tmp_path: Path) -> None:
    ds = import_pymarl(ROOT / "data" / "alberdice" / "xor_02", "xor")
    assert ds.manifest["source"] == "imported from PyMARL buffer data/alberdice/xor_02"
    assert not MACHINE_PATH.search(json.dumps(ds.manifest))


def test_package_info_names_version_and_commit() -> None:
    info = package_info()
    assert info["version"] == inspo.__version__
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", info["commit"])
