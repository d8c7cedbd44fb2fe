"""GPT-style causal attention on the shared backbone (the Transformer baseline).

Attention runs through torch's scaled_dot_product_attention (the flash kernel on GPU). Positions:
rotary (RoPE, the default), xPos (RoPE with a per-dimension decay of the query-key product with
distance; Sun et al. 2022, the paper's MHA-xPos) or learned absolute embeddings. MLP: GELU (GPT) or SwiGLU
(Transformer++: RMSNorm, no biases, SwiGLU, RoPE). Decoding keeps a preallocated KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.core.errors import SeqbenchError
from seqbench.models.backbone import Mixer, SequenceModel
from seqbench.core.types import HeadSpec


def rotary_tables(length: int, head_dim: int, offset: int = 0, base: float = 10000.0,
                  device=None) -> tuple[Tensor, Tensor]:
    """cos and sin tables (length, head_dim / 2) for positions offset .. offset + length - 1
    (`offset` an int, or a one-element device tensor for a captured decode step)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    positions = torch.arange(length, device=device, dtype=torch.float32) + offset
    angles = torch.outer(positions, inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (first half, second half) of the head dimension. x (b, heads, l, head_dim)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def xpos_scales(length: int, head_dim: int, offset=0, center: int = 0, gamma: float = 0.4, base: float = 512.0,
                device=None) -> Tensor:
    """xPos scales (length, head_dim / 2): zeta_i ** ((position - center) / base), zeta_i =
    (2i / head_dim + gamma) / (1 + gamma). Queries are multiplied by them, keys divided, so a
    query-key product at distance m - n carries zeta ** ((m - n) / base) whatever the centre
    (which only keeps the numbers in range: the middle of a parallel forward)."""
    zeta = (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim + gamma) / (1 + gamma)
    positions = torch.arange(length, device=device, dtype=torch.float32) + offset - center
    return zeta ** (positions[:, None] / base)


def apply_xpos(x: Tensor, scale: Tensor) -> Tensor:
    """Scale both halves of each rotated pair by `scale` (length, head_dim / 2)."""
    return (x.float() * torch.cat([scale, scale], dim=-1)).to(x.dtype)


class CausalSelfAttention(Mixer):
    """Multi-head causal self-attention with optional RoPE (and xPos) and a KV cache for decoding."""

    @property
    def graph_step(self) -> bool:
        """Rotary attention decodes with fixed shapes (`_static_step`): a CUDA graph can replay it."""
        return self.rotary

    def __init__(self, d_model: int, n_heads: int, rotary: bool = True, bias: bool = False, xpos: bool = False) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim, self.rotary, self.xpos = n_heads, d_model // n_heads, rotary or xpos, xpos
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj.writes_residual = True

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, l, _ = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: Tensor, state: dict | None = None) -> Tensor:
        b, l, d = x.shape
        q, k, v = self._heads(x)
        if self.rotary:
            cos, sin = rotary_tables(l, self.head_dim, device=x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.xpos:  # centred in a plain forward; from position 0 when the cache keeps the keys
            q, k = self._xpos(q, k, l, 0, 0 if state is not None else l // 2)
        if state is not None:  # prefill: keep keys and values for decoding
            state["k"][:, :, :l] = k
            state["v"][:, :, :l] = v
            state["pos"] = l
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, l, d))

    def _xpos(self, q: Tensor, k: Tensor, length: int, offset, center: int) -> tuple[Tensor, Tensor]:
        scale = xpos_scales(length, self.head_dim, offset=offset, center=center, device=q.device)
        return apply_xpos(q, scale), apply_xpos(k, 1.0 / scale)

    def init_state(self, batch_size: int, max_len: int, device=None, dtype=None) -> dict:
        shape = (batch_size, self.n_heads, max_len, self.head_dim)
        dtype = dtype or self.qkv.weight.dtype
        return {"k": torch.zeros(shape, device=device, dtype=dtype),
                "v": torch.zeros(shape, device=device, dtype=dtype), "pos": 0}

    def step(self, x: Tensor, state: dict) -> Tensor:
        """One token: x (b, d_model) -> (b, d_model); appends to the KV cache."""
        if "pos_t" in state:
            return self._static_step(x, state)
        b, d = x.shape
        pos = state["pos"]
        if pos >= state["k"].shape[2]:
            raise ValueError(f"KV cache is full ({pos} positions); init_state with a larger max_len")
        q, k, v = self._heads(x[:, None])
        if self.rotary:
            cos, sin = rotary_tables(1, self.head_dim, offset=pos, device=x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.xpos:
            q, k = self._xpos(q, k, 1, pos, 0)
        state["k"][:, :, pos:pos + 1] = k
        state["v"][:, :, pos:pos + 1] = v
        state["pos"] = pos + 1
        y = F.scaled_dot_product_attention(q, state["k"][:, :, :pos + 1], state["v"][:, :, :pos + 1])
        return self.out_proj(y.transpose(1, 2).reshape(b, d))

    def _static_step(self, x: Tensor, state: dict) -> Tensor:
        """The same step with shapes that never change, for a CUDA graph (models.decoding): the
        position is the device tensor `pos_t`, the new key and value are written there, and
        attention reads the whole cache through a mask of the positions filled so far."""
        b, d = x.shape
        pos = state["pos_t"]
        q, k, v = self._heads(x[:, None])
        if self.rotary:
            cos, sin = rotary_tables(1, self.head_dim, offset=pos, device=x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.xpos:
            q, k = self._xpos(q, k, 1, pos, 0)
        state["k"].index_copy_(2, pos, k.to(state["k"].dtype))
        state["v"].index_copy_(2, pos, v.to(state["v"].dtype))
        filled = (torch.arange(state["k"].shape[2], device=x.device) <= pos).view(1, 1, 1, -1)
        y = F.scaled_dot_product_attention(q, state["k"].to(q.dtype), state["v"].to(q.dtype), attn_mask=filled)
        pos += 1
        return self.out_proj(y.transpose(1, 2).reshape(b, d))


class MLP(nn.Module):
    """GELU MLP (hidden 4d) or SwiGLU (hidden 8d/3 rounded up to a multiple of 64)."""

    KINDS = ("gelu", "swiglu", "none")

    def __init__(self, d_model: int, kind: str = "gelu", bias: bool = False) -> None:
        super().__init__()
        if kind not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be gelu, swiglu or none, got {kind!r}")
        self.kind = kind
        if kind == "gelu":
            hidden = 4 * d_model
            self.up = nn.Linear(d_model, hidden, bias=bias)
        else:
            hidden = 64 * math.ceil(8 * d_model / 3 / 64)
            self.up = nn.Linear(d_model, 2 * hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.down.writes_residual = True

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "gelu":
            return self.down(F.gelu(self.up(x)))
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * value)


def mlp_factory(d_model: int, kind: str, bias: bool = False) -> Callable[[int], MLP] | None:
    """The backbone's `mlp_factory` for a family's `--set mlp` (none: no MLP); an unknown kind is one line."""
    if kind not in MLP.KINDS:
        raise SeqbenchError(f"--set mlp must be one of {', '.join(MLP.KINDS)}, got {kind!r}")
    return None if kind == "none" else (lambda i: MLP(d_model, kind, bias=bias))


class Transformer(SequenceModel):
    """Decoder-only Transformer; learned absolute positions are added to the embedding."""

    POSITIONS = ("rope", "xpos", "absolute")

    def __init__(self, vocab_size: int, head: HeadSpec, d_model: int, n_layers: int, n_heads: int,
                 positions: str, mlp: str, bias: bool, max_len: int, residual_in_fp32: bool, family: str) -> None:
        if positions not in self.POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(self.POSITIONS)}, got {positions!r}")
        super().__init__(
            vocab_size, d_model, n_layers,
            mixer_factory=lambda i: CausalSelfAttention(d_model, n_heads, rotary=positions != "absolute", bias=bias,
                                                        xpos=positions == "xpos"),
            head=head, mlp_factory=mlp_factory(d_model, mlp, bias),
            residual_in_fp32=residual_in_fp32,
            family=family,
        )
        self.positions = positions
        if positions == "xpos":  # the scales leave fp32's range past a few tens of thousands of positions
            self.max_seq_len = max_len
        if positions == "absolute":
            self.max_seq_len = max_len
            self.position_embedding = nn.Embedding(max_len, d_model)
            nn.init.normal_(self.position_embedding.weight, std=0.02)

    def embed(self, input_ids: Tensor, offset: int = 0) -> Tensor:
        x = self.embedding(input_ids)
        if self.positions == "absolute":
            length = input_ids.shape[1]
            if offset + length > self.max_seq_len:
                raise ValueError(f"length {offset + length} exceeds the {self.max_seq_len} learned positions")
            x = x + self.position_embedding(torch.arange(offset, offset + length, device=input_ids.device))
        return x


def build_transformer(vocab_size: int, head: HeadSpec, d_model: int = 128, n_layers: int = 2, n_heads: int = 8,
                      positions: str = "rope", mlp: str = "gelu", bias: bool = False, max_len: int = 1 << 20,
                      residual_in_fp32: bool = True) -> Transformer:
    """GPT-style Transformer with RoPE (default) or learned absolute positions (`positions`);
    `mlp` gelu, swiglu or none (attention-only, as the paper's synthetic-task models)."""
    family = {"rope": "transformer", "xpos": "transformer-xpos", "absolute": "transformer-abs"}.get(positions, positions)
    if mlp == "swiglu":
        family = "transformer++"
    return Transformer(vocab_size, head, d_model, n_layers, n_heads, positions, mlp, bias, max_len,
                       residual_in_fp32, family)


def build_transformer_abs(vocab_size: int, head: HeadSpec, max_len: int = 16384, **kwargs) -> Transformer:
    """Transformer with learned absolute positions (MHA-Abs of the paper); lengths up to `max_len`."""
    return build_transformer(vocab_size, head, positions="absolute", max_len=max_len, **kwargs)


def build_transformer_pp(vocab_size: int, head: HeadSpec, **kwargs) -> Transformer:
    """Transformer++: RMSNorm, no biases, SwiGLU MLP, RoPE."""
    return build_transformer(vocab_size, head, positions="rope", mlp="swiglu", bias=False, **kwargs)


def build_transformer_xpos(vocab_size: int, head: HeadSpec, max_len: int = 16384, **kwargs) -> Transformer:
    """Transformer with xPos rotary positions (MHA-xPos of the paper); lengths up to `max_len`
    (the paper tests attention to 2^14; the scales leave fp32's range far beyond)."""
    return build_transformer(vocab_size, head, positions="xpos", max_len=max_len, **kwargs)


build_transformer_abs.forwards_to = build_transformer  # its **kwargs are build_transformer's settings
build_transformer_xpos.forwards_to = build_transformer
build_transformer_pp.forwards_to = build_transformer
