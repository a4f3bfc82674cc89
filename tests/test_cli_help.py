"""Every command's --help renders as a reader sees it: no type on flags (``--force <bool>`` reads
as if the flag wanted a value), no raw reStructuredText, and the docstring's first paragraph
whole (rich markup would eat a ``[k]``)."""

from __future__ import annotations

import inspect
import re

import pytest
import typer
from typer.testing import CliRunner

from hmtc.cli import app

runner = CliRunner()
RST = re.compile(r"``|:(?:func|class|meth|mod|attr|data|ref|doc):`")


def commands(cmd, path=()):
    """(path, click command) of every command and group under ``cmd``."""
    yield list(path), cmd
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        yield from commands(sub, (*path, name))


ALL = list(commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) or "hmtc" for p, _ in ALL])
def test_help_has_no_bool_metavar_nor_rst(path, cmd):
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output and not RST.search(r.output), r.output
    flat = " ".join(r.output.replace("│", " ").split())
    first = inspect.cleandoc(cmd.help or "").split("\n\n")[0]
    assert " ".join(first.split()) in flat                  # the first paragraph, nothing eaten
    assert max(map(len, r.output.splitlines())) <= 100


def test_every_command_is_covered():
    names = {" ".join(p) for p, _ in ALL}
    assert {"taxonomy stats", "taxonomy import", "compare", "train", "data stats"} <= names
