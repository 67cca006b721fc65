"""The CLI front door: version, help listing, errors printed without tracebacks."""

from __future__ import annotations

import pytest

from mcf_rotator import __version__
from mcf_rotator.cli import build_parser, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_every_subcommand_registers() -> None:
    from mcf_rotator.commands import COMMAND_MODULES

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set(sub.choices)
    expected = {m.replace("_", "-") for m in COMMAND_MODULES}
    assert expected <= names, f"missing sub-commands: {expected - names}"
