"""The ``recsys`` app invoked in-process (Typer's CliRunner), for the CLI tests."""

from __future__ import annotations

from recsys_cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


def run(*args: object, code: int = 0):
    """Invoke ``recsys ARGS`` and check its exit status (``code``); returns the result."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result
