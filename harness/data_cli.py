"""`seqbench data list|get|path`: the example data sets by name (seqbench.modalities.catalog).

    seqbench data list              name, modality, size, license, whether it is in the cache
    seqbench data get NAME...       download into the data cache, checked against the manifest
    seqbench data path NAME         print the local path (downloading it first if needed)

Failures (unknown name, no network, a checksum that does not match, a dropped connection) are one
line on stderr and exit code 2; nothing half-written stays in the cache.
"""

from __future__ import annotations


import typer
from rich.console import Console
from rich.table import Table

from seqbench.harness.user_errors import user_errors
from seqbench.modalities import catalog

data_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                       help="Example data sets by name: list, download (checked), print their path.")
out = Console()


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


@data_app.command("list")
@user_errors
def list_() -> None:
    """The data sets `--data NAME` takes, and whether each is in the data cache."""
    table = Table(title=f"data sets (cache: {catalog.data_root()})")
    for column in ("name", "modality", "size", "license", "cached", "what"):
        table.add_column(column, justify="right" if column == "size" else "left", no_wrap=column == "name")
    for name in catalog.names():
        ds = catalog.dataset(name)
        table.add_row(name, ds.modality, _size(ds.size), ds.license, catalog.cache_state(ds), ds.title)
    out.print(table)


@data_app.command()
@user_errors
def get(names: list[str] = typer.Argument(..., help="Data set names (see `seqbench data list`).")) -> None:
    """Download data sets into the data cache, each file checked against its size and SHA-256.

    The cache is $SEQBENCH_DATA, else $XDG_CACHE_HOME/seqbench/data, else ~/.cache/seqbench/data."""
    sets = [catalog.dataset(name) for name in names]  # every name checked before anything is fetched
    for ds in sets:
        path = catalog.fetch(ds)
        typer.echo(f"{ds.name}: {_size(ds.size)} at {path} (checked)")


@data_app.command()
@user_errors
def path(name: str = typer.Argument(..., help="Data set name (see `seqbench data list`).")) -> None:
    """Print the local path of a data set (what `--data NAME` reads), downloading it first if needed."""
    typer.echo(str(catalog.fetch(catalog.dataset(name))))
