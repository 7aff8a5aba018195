"""A CLI that explains itself: every flag of every command has help, shows its default and its choices; no raw
reStructuredText in --help; inspo --version."""
from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

import inspo
from inspo.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, prog: str = "inspo") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def test_every_flag_has_help_its_default_and_its_choices() -> None:
    missing = []
    for prog, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert not re.search(r"``|:(class|func|mod|meth|data):", text), f"{prog} --help shows reStructuredText"
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            name = f"{prog} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{name}: no help")
                continue
            shown = parser._get_formatter()._expand_help(action)
            takes_value = action.nargs != 0
            if takes_value and action.default not in (None, argparse.SUPPRESS) and "default" not in shown:
                missing.append(f"{name}: default {action.default!r} not shown")
            if action.choices and takes_value and "{" not in parser.format_usage() + text:
                missing.append(f"{name}: choices not shown")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("flag", ["--algo", "--order", "--weighting", "--backend", "--dtype"])
def test_train_flags_with_choices_list_them(flag: str) -> None:
    train = dict(_parsers(build_parser()))["inspo train"]
    action = next(a for a in train._actions if flag in a.option_strings)
    assert action.choices and "{" + ",".join(action.choices) + "}" in train.format_help()


def test_bad_device_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "x", "--device", "gpu0"]) == 2
    assert "config.device must be cpu, cuda or cuda:N" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"inspo {inspo.__version__}") and inspo.__version__ != "0+unknown"
