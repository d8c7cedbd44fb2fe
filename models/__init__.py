"""Model families on one backbone: Mamba (fused selective scan), Transformer, Hyena."""

from __future__ import annotations

from collections.abc import Callable

from seqbench.models.backbone import Mixer, SequenceModel

__all__ = ["Mixer", "SequenceModel", "build_model", "check_model_settings", "model_family"]


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


def _settings_of(builder: Callable) -> dict:
    """The keyword settings a builder takes (following `forwards_to` through **kwargs)."""
    import inspect

    params = {}
    while builder is not None:
        sig = inspect.signature(builder)
        for name, param in sig.parameters.items():
            if name not in ("vocab_size", "head") and param.kind is not inspect.Parameter.VAR_KEYWORD:
                params.setdefault(name, param.default)
        forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        builder = getattr(builder, "forwards_to", None) if forwards else None
    return params


def check_model_settings(name: str, settings: dict) -> None:
    """Refuse, in one line, a --set key the family does not take (listing those it takes), a value
    of the wrong type (an integer setting given text, ...) or out of range (a size or count below 1;
    0 passes for the settings a builder lists in its `zero_allowed`, where 0 turns something off)."""
    from seqbench.core.errors import SeqbenchError
    from seqbench.core.registry import load

    builder = load("models", name)
    accepted = _settings_of(builder)
    zero_allowed = set(getattr(builder, "zero_allowed", ()))
    for key, value in settings.items():
        if key not in accepted:
            raise SeqbenchError(f"model {name!r} has no setting {key!r}; accepted: {', '.join(accepted) or 'none'}")
        default = accepted[key]
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
            low = 0 if key in zero_allowed else 1
            if ok and default > 0 and value < low:
                raise SeqbenchError(f"--set {key} must be >= {low}, got {value}")
        elif isinstance(default, float):
            ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
            if ok and default > 0 and value <= 0:
                raise SeqbenchError(f"--set {key} must be > 0, got {value}")
        elif isinstance(default, str):
            ok, expected = isinstance(value, str), "text"
        else:
            ok, expected = True, ""
        if not ok:
            raise SeqbenchError(f"--set {key} takes {expected}, got {value!r}")
