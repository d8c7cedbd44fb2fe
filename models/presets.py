"""Named sizes per family: `--size` picks one; `seqbench list models` shows them with counts.

Language-model sizes follow the paper (§4.2): Transformers of 12/768, 24/1024, 24/1536, 24/2048
(layers/width) and the released Mamba models with twice the layers at the same width, on the
GPT-NeoX vocabulary (50,277 ids, padded to 50,280). The synthetic size is the one of the paper's
synthetic tasks: 2 layers, width 64 for Mamba and 128 for the others (attention-only, 8 heads).
"""

from __future__ import annotations

from seqbench.core.errors import SeqbenchError

LM_VOCAB = 50280

SIZES: dict[str, dict[str, dict]] = {
    "mamba": {
        "synthetic": {"d_model": 64, "n_layers": 2},
        "130m": {"d_model": 768, "n_layers": 24},
        "370m": {"d_model": 1024, "n_layers": 48},
        "790m": {"d_model": 1536, "n_layers": 48},
        "1.4b": {"d_model": 2048, "n_layers": 48},
        "2.8b": {"d_model": 2560, "n_layers": 64},
    },
    "transformer": {
        "synthetic": {"d_model": 128, "n_layers": 2, "n_heads": 8, "mlp": "none"},
        "125m": {"d_model": 768, "n_layers": 12, "n_heads": 12},
        "350m": {"d_model": 1024, "n_layers": 24, "n_heads": 16},
        "760m": {"d_model": 1536, "n_layers": 24, "n_heads": 16},
        "1.3b": {"d_model": 2048, "n_layers": 24, "n_heads": 32},
    },
    "hyena": {
        "synthetic": {"d_model": 128, "n_layers": 2},
        "125m": {"d_model": 768, "n_layers": 12},
    },
}
# Hybrid (models/hybrid.py): Mamba with RoPE attention at one layer in eight (Jamba's ratio). Two
# Mamba layers (~6·d² parameters each) weigh as much as three attention layers (4·d² each): two more
# layers than Mamba's size match it: 130m is 22 Mamba + 3 attention layers, 128.7M against Mamba's
# 129.1M; 370m is 44 + 6, 370.0M against 371.5M. Synthetic: Mamba's 2 x 64 with attention (4 heads)
# as the second layer.
SIZES["hybrid"] = {
    "synthetic": {"d_model": 64, "n_layers": 2, "attn_layers": "1", "n_heads": 4},
    "130m": {"d_model": 768, "n_layers": 25, "attn_every": 8, "n_heads": 12},
    "370m": {"d_model": 1024, "n_layers": 50, "attn_every": 8, "n_heads": 16},
}
SIZES["transformer-abs"] = SIZES["transformer"]
SIZES["transformer-xpos"] = SIZES["transformer"]
SIZES["transformer++"] = {name: {k: v for k, v in kw.items() if k != "mlp"} for name, kw in SIZES["transformer"].items()}

# Published parameter counts the LM sizes are checked against (tests allow 5%).
PUBLISHED = {("mamba", "130m"): 130e6, ("mamba", "370m"): 370e6, ("mamba", "790m"): 790e6, ("mamba", "1.4b"): 1.4e9,
             ("mamba", "2.8b"): 2.8e9, ("transformer", "125m"): 125e6, ("transformer", "350m"): 350e6,
             ("transformer", "760m"): 760e6, ("transformer", "1.3b"): 1.3e9}


def sizes_of(family: str) -> dict[str, dict]:
    """The named sizes of `family`: the built-in table, or the `sizes` a plugin family declares
    with `seqbench.models.model_family` (empty when it declares none)."""
    if family in SIZES:
        return SIZES[family]
    from seqbench.core.registry import load

    return dict(getattr(load("models", family), "sizes", {}))


def preset(family: str, size: str) -> dict:
    """Model kwargs of `size` for `family`; SeqbenchError listing the sizes when unknown."""
    sizes = sizes_of(family)
    if not sizes:
        raise SeqbenchError(f"model {family!r} has no named sizes; pass --set d_model=... --set n_layers=...")
    if size not in sizes:
        raise SeqbenchError(f"unknown size {size!r} for {family}; choices: {', '.join(sizes)}")
    return dict(sizes[size])


def count_parameters(family: str, size: str, vocab_size: int | None = None) -> int:
    """Parameters of a preset, counted on the meta device (no memory, no init cost)."""
    import torch

    from seqbench.models import build_model
    from seqbench.core.types import HeadSpec

    vocab = vocab_size or (16 if size == "synthetic" else LM_VOCAB)
    with torch.device("meta"):
        model = build_model(family, vocab_size=vocab, head=HeadSpec("token", vocab), **preset(family, size))
    return model.num_parameters()
