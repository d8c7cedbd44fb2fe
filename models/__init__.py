"""Model families on one backbone: Mamba (fused selective scan), Transformer, Hyena."""

from __future__ import annotations

from seqbench.models.backbone import SequenceModel

__all__ = ["SequenceModel", "build_model"]


def build_model(name: str, vocab_size: int, head, **kwargs) -> SequenceModel:
    """Build the model family registered under `name` (built-in or plugin) for a task's head."""
    from seqbench.core.registry import load

    return load("models", name)(vocab_size=vocab_size, head=head, **kwargs)
