"""Hybrid: Mamba blocks with causal attention at a few chosen layers, on the shared backbone.

Studies of Mamba-based language models find that a few attention layers among SSM layers beat
both pure forms: Mamba-2-Hybrid (Waleffe et al. 2024, "An Empirical Study of Mamba-based Language
Models": ~7% attention layers, the rest Mamba-2 and MLPs), Jamba (Lieber et al. 2024: one attention
layer in eight) and Griffin (De et al. 2024: local attention after every two recurrent blocks, an
MLP after each). The SSM carries long context at constant cost per token; the attention layers add
exact recall over the whole context. Here the SSM layers are the `mamba` family's MambaMixer, the
attention layers the `transformer` family's CausalSelfAttention with RoPE (so there is no position
limit), and `mlp` optionally adds the Transformer's MLP after every mixer.

Layer indices count from 0: `attn_layers=3,7` puts attention at the 4th and 8th layers, the same
as `attn_every=4` in an 8-layer model. Decoding keeps each layer's own state (conv and SSM state
for Mamba layers, a KV cache for attention layers); every mixer's step has fixed shapes, so the
decode step can be captured as a CUDA graph (models.decoding).
"""

from __future__ import annotations

from seqbench.core.errors import SeqbenchError
from seqbench.core.types import HeadSpec
from seqbench.models.backbone import SequenceModel
from seqbench.models.mamba import MambaMixer
from seqbench.models.transformer import CausalSelfAttention, mlp_factory

MLPS = ("none", "gelu", "swiglu")


def _parse_layers(attn_layers: tuple[int, ...] | list[int] | str | int) -> list[int]:
    """--set attn_layers=3,7 (text), =3 (read as an integer by the CLI) or a TOML list -> [3, 7]."""
    if isinstance(attn_layers, bool):
        raise SeqbenchError(f"--set attn_layers takes comma-separated layer indices, got {attn_layers!r}")
    if isinstance(attn_layers, int):
        return [attn_layers]
    if isinstance(attn_layers, str):
        parts = [part.strip() for part in attn_layers.split(",") if part.strip()]
        try:
            return [int(part) for part in parts]
        except ValueError:
            raise SeqbenchError(f"--set attn_layers takes comma-separated layer indices (from 0), "
                                f"e.g. 3,7; got {attn_layers!r}") from None
    if isinstance(attn_layers, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool)
                                                      for i in attn_layers):
        return list(attn_layers)
    raise SeqbenchError(f"--set attn_layers takes comma-separated layer indices, got {attn_layers!r}")


def attention_layers(n_layers: int, attn_layers: tuple[int, ...] | list[int] | str | int = (),
                     attn_every: int = 2) -> list[int]:
    """The sorted indices (from 0) of the layers that are attention: `attn_layers` when it names
    any, else every `attn_every`-th layer counting from 1 (4: layers 3, 7, 11, ...; 0: none).
    SeqbenchError (one line) for an index out of range, one listed twice, a negative period or
    no Mamba layer left."""
    layers = _parse_layers(attn_layers)
    if layers:
        outside = [i for i in layers if not 0 <= i < n_layers]
        if outside:
            raise SeqbenchError(f"--set attn_layers: layer {outside[0]} is out of range for {n_layers} layers "
                                f"(indices 0..{n_layers - 1})")
        twice = sorted({i for i in layers if layers.count(i) > 1})
        if twice:
            raise SeqbenchError(f"--set attn_layers lists layer {twice[0]} more than once")
    else:
        if isinstance(attn_every, bool) or not isinstance(attn_every, int) or attn_every < 0:
            raise SeqbenchError(f"--set attn_every takes an integer >= 0 (0: no attention), got {attn_every!r}")
        layers = [i for i in range(n_layers) if attn_every and (i + 1) % attn_every == 0]
    if len(layers) == n_layers:
        raise SeqbenchError(f"a hybrid needs at least one Mamba layer; attention at all {n_layers} layers "
                            f"is the transformer family")
    return sorted(layers)


def build_hybrid(
    vocab_size: int,
    head: HeadSpec,
    d_model: int = 64,
    n_layers: int = 2,
    attn_layers: tuple[int, ...] | str | int = (),
    attn_every: int = 2,
    n_heads: int = 4,
    mlp: str = "none",
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    residual_in_fp32: bool = True,
    backend: str = "auto",
) -> SequenceModel:
    """Mamba blocks with RoPE attention at chosen layers (Mamba-2-Hybrid, Jamba, Griffin).

    `attn_layers` lists the attention layers (indices from 0, e.g. "3,7"); empty: every
    `attn_every`-th layer counting from 1 (the default 2 keeps a small model a hybrid: layers
    1, 3, ...; 0: none). `n_heads` heads per attention layer; `mlp` none, gelu or swiglu after every
    mixer; `d_state`, `d_conv`, `expand` and `backend` as the mamba family's."""
    if mlp not in MLPS:
        raise SeqbenchError(f"--set mlp must be one of {', '.join(MLPS)}, got {mlp!r}")
    if n_layers < 1 or d_model < 1:
        raise SeqbenchError(f"a hybrid needs n_layers >= 1 and d_model >= 1, got {n_layers} and {d_model}")
    attention = set(attention_layers(n_layers, attn_layers, attn_every))
    if attention:
        if n_heads < 1 or d_model % n_heads:
            raise SeqbenchError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        if (d_model // n_heads) % 2:
            raise SeqbenchError(f"rotary positions need an even head dimension; d_model {d_model} / "
                                f"n_heads {n_heads} = {d_model // n_heads}")

    def mixer(i: int):
        if i in attention:
            return CausalSelfAttention(d_model, n_heads, rotary=True)
        return MambaMixer(d_model, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)

    model = SequenceModel(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        mixer_factory=mixer,
        head=head,
        mlp_factory=mlp_factory(d_model, mlp),
        residual_in_fp32=residual_in_fp32,
        family="hybrid",
        backend=backend,
    )
    model.attn_layers = sorted(attention)
    return model


build_hybrid.zero_allowed = ("attn_every",)  # 0 means no periodic attention (models.check_model_settings)
