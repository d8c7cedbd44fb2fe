"""Errors a user can fix: the CLI prints their message on one line and exits with code 2."""


class SeqbenchError(ValueError):
    """Bad input (unknown name, impossible length, missing file, ...). Message is one line."""
