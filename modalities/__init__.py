"""Modality adapters: raw data (text, audio, DNA, synthetic ids) to integer tokens and back.

`get_modality(name)` builds one; real-data modalities `load(source)` a `TokenStore` of random
windows, cached as a memory-mapped array (`seqbench.modalities.cache`). `seqbench.modalities.samples` generates the
small sample data that the defaults and the tests use.
"""

from seqbench.modalities.base import LoadableModality, Modality, TokenStore, Window

__all__ = ["LoadableModality", "Modality", "TokenStore", "Window", "get_modality", "load_source"]


def get_modality(name: str, **kwargs) -> Modality:
    """Build the modality registered under `name` (built-in or plugin)."""
    from seqbench.core.registry import load

    return load("modalities", name)(**kwargs)


def load_source(modality: str, source=None, **options) -> TokenStore:
    """The token store of `source` for `modality`; with no source, the generated sample data."""
    from seqbench.modalities.samples import sample_source

    mod = get_modality(modality)
    if source is None:
        source = sample_source(modality)
        if modality == "audio":
            from seqbench.modalities.audio import SPOKEN_DIGIT

            options.setdefault("labels", SPOKEN_DIGIT)
    return mod.load(source, **options)
