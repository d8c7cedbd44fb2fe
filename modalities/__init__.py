"""Modality adapters: raw data (text, audio, DNA, synthetic ids) to integer tokens and back.

`get_modality(name)` builds one; real-data modalities `load(source)` a `TokenStore` of random
windows, cached as a memory-mapped array (`seqbench.modalities.cache`). `seqbench.modalities.samples` generates the
small sample data that the defaults and the tests use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqbench.modalities.base import LoadableModality, Modality, TokenStore, Window

__all__ = ["LoadableModality", "Modality", "TokenStore", "Window", "get_modality", "load_source", "loadable_modalities"]

_FROM_BASE = ("LoadableModality", "Modality", "TokenStore", "Window")


def __getattr__(name: str):
    """The protocol and store types, imported on first use: `base` needs torch, and a light
    submodule (the data catalog that `seqbench data` and the CLI's start-up import) should not."""
    if name in _FROM_BASE:
        from seqbench.modalities import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_modality(name: str, **kwargs) -> Modality:
    """Build the modality registered under `name` (built-in or plugin)."""
    from seqbench.core.registry import load

    return load("modalities", name)(**kwargs)


def load_source(modality: str, source=None, **options) -> TokenStore:
    """The token store of `source` for `modality`; with no source, the generated sample data."""
    from seqbench.core.errors import SeqbenchError
    from seqbench.modalities.base import LoadableModality
    from seqbench.modalities.catalog import resolve_source

    source = resolve_source(source, modality)  # a data set name -> the path of its cached copy
    mod = get_modality(modality)
    if not isinstance(mod, LoadableModality):
        raise SeqbenchError(f"modality {modality!r} does not load data (no load/sample_source)")
    if source is None:
        source, defaults = mod.sample_source()
        options = {**defaults, **options}
    return mod.load(source, **options)


def loadable_modalities() -> list[str]:
    """The registered modalities (built-ins and plugins) that load data: what `lm` takes."""
    from seqbench.core.registry import registry
    from seqbench.modalities.base import LoadableModality

    return [name for name in registry("modalities").names() if isinstance(get_modality(name), LoadableModality)]
