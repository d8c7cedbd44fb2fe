"""Model families on one backbone: Mamba (fused selective scan), Transformer, Hyena."""

from __future__ import annotations

from collections.abc import Callable

from seqbench.models.backbone import Mixer, SequenceModel

__all__ = ["Mixer", "SequenceModel", "build_model", "model_family"]


def build_model(name: str, vocab_size: int, head, **kwargs) -> SequenceModel:
    """Build the model family registered under `name` (built-in or plugin) for a task's head."""
    from seqbench.core.registry import load

    return load("models", name)(vocab_size=vocab_size, head=head, **kwargs)


def model_family(sizes: dict[str, dict] | None = None) -> Callable:
    """Mark a builder `(vocab_size, head, **kwargs) -> SequenceModel` as a model family with its
    named sizes (`--size NAME` picks one; `seqbench list models` shows them): a plugin registers
    the builder through the `seqbench.models` entry-point group and declares its sizes here."""

    def mark(builder: Callable) -> Callable:
        builder.sizes = dict(sizes or {})
        return builder

    return mark
