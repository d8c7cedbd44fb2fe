"""Modality adapters: raw data (text, audio, DNA, synthetic ids) to integer tokens and back."""

from modalities.base import Modality

__all__ = ["Modality", "get_modality"]


def get_modality(name: str, **kwargs) -> Modality:
    """Build the modality registered under `name` (built-in or plugin)."""
    from harness.registry import load

    return load("modalities", name)(**kwargs)
