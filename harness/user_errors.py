"""Bad input on the command line: a SeqbenchError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import functools

import typer

from seqbench.core.errors import SeqbenchError


def user_errors(fn):
    """Turn SeqbenchError into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SeqbenchError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper
