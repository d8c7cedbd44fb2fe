"""The Hyena operator (Poli et al. 2023), order 2, as the gated-long-convolution baseline.

in_proj to 3·d, a short causal depthwise conv (width 3), split into gates x0, x1 and value v;
v ← v ⊙ x1, then a long causal convolution with an implicit filter h (FFT of size 2L) plus a
learned skip D·v, then y = v ⊙ x0 and out_proj. The filter is an MLP with sine activations over
positional features [t, cos, sin] (emb dim 3, width 64), multiplied by an exponential decay
whose rate spans fast (0.3) to slow (1.5) per channel so that the filter falls to ~1e-2. The
filter's parameters train at LR 1e-3 without weight decay (PROTOCOLS.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqbench.models.backbone import Mixer, SequenceModel
from seqbench.models.transformer import mlp_factory
from seqbench.core.types import HeadSpec


class Sin(nn.Module):
    """sin(freq · x) with a learned frequency per feature."""

    def __init__(self, dim: int, freq: float = 1.0) -> None:
        super().__init__()
        self.freq = nn.Parameter(freq * torch.ones(1, dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """h[t, channel] for t < L (L ≤ max_len): sine MLP on positional features, times a decay."""

    def __init__(self, d_model: int, max_len: int, width: int = 64, inner_layers: int = 2,
                 fast_decay: float = 0.3, slow_decay: float = 1.5, target: float = 1e-2) -> None:
        super().__init__()
        self.max_len = max_len
        layers: list[nn.Module] = [nn.Linear(3, width), Sin(width)]
        for _ in range(inner_layers):
            layers += [nn.Linear(width, width), Sin(width)]
        layers.append(nn.Linear(width, d_model, bias=False))
        self.mlp = nn.Sequential(*layers)
        for layer in layers:  # keep PyTorch's init for the filter's biases (the backbone zeroes others)
            if isinstance(layer, nn.Linear) and layer.bias is not None:
                layer.bias._no_reinit = True
        slowest, fastest = math.log(target) / slow_decay, math.log(target) / fast_decay
        self.register_buffer("decay_rates", torch.linspace(slowest, fastest, d_model).abs(), persistent=False)

    def positional_features(self, length: int, device) -> tuple[Tensor, Tensor]:
        """[t, cos(2πk/max_len · ~0), sin(...)] as in Hyena's single-band embedding, and t in [0, 1]."""
        t = torch.arange(length, device=device, dtype=torch.float32) / max(1, self.max_len - 1)
        angle = 2 * math.pi * torch.arange(length, device=device, dtype=torch.float32) / self.max_len * 1e-4
        return torch.stack([t, torch.cos(angle), -torch.sin(angle)], dim=-1), t

    def forward(self, length: int, device) -> Tensor:
        """The filter (d_model, length) in the filter's dtype."""
        if length > self.max_len:
            raise ValueError(f"Hyena filter is defined up to length {self.max_len}, asked for {length}")
        features, t = self.positional_features(length, device)
        h = self.mlp(features.to(self.mlp[0].weight.dtype))  # (length, d)
        return (h * torch.exp(-t[:, None] * self.decay_rates)).transpose(0, 1)


def fft_causal_conv(v: Tensor, h: Tensor) -> Tensor:
    """Causal long convolution y_t = sum_{s<=t} h_s v_{t-s}; v (b, d, L), h (d, L); FFT of size 2L."""
    length = v.shape[-1]
    n = 2 * length
    dtype = torch.promote_types(v.dtype, torch.float32)  # never FFT in half precision
    y = torch.fft.irfft(torch.fft.rfft(v.to(dtype), n=n) * torch.fft.rfft(h.to(dtype), n=n), n=n)[..., :length]
    return y.to(v.dtype)


class HyenaMixer(Mixer):
    """Order-2 Hyena operator: (b, l, d) -> (b, l, d)."""

    def __init__(self, d_model: int, max_len: int = 1 << 20, short_conv: int = 3, filter_width: int = 64,
                 filter_lr: float = 1e-3) -> None:
        super().__init__()
        self.d_model = d_model
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short_conv = nn.Conv1d(3 * d_model, 3 * d_model, short_conv, groups=3 * d_model, padding=short_conv - 1)
        self.filter = ImplicitFilter(d_model, max_len, width=filter_width)
        self.skip = nn.Parameter(torch.randn(d_model))  # D
        self.out_proj = nn.Linear(d_model, d_model)
        self.out_proj.writes_residual = True
        for p in list(self.filter.parameters()) + [self.skip]:
            p._no_weight_decay = True
            p._lr = filter_lr

    def forward(self, hidden: Tensor, state: dict | None = None) -> Tensor:
        length = hidden.shape[1]
        u = self.in_proj(hidden).transpose(1, 2)
        u = self.short_conv(u)[..., :length]
        x0, x1, v = u.split(self.d_model, dim=1)
        v = v * x1
        v = fft_causal_conv(v, self.filter(length, hidden.device)) + v * self.skip[:, None].to(v.dtype)
        y = (v * x0).transpose(1, 2)
        if state is not None:
            state["history"] = hidden
        return self.out_proj(y)

    def init_state(self, batch_size: int, max_len: int = 0, device=None, dtype=None) -> dict:
        """Hyena keeps the layer's input history and recomputes (no constant-size recurrence)."""
        return {"history": None}

    def state_size(self, length: int) -> int:
        """The input history it recomputes from: length x width."""
        return length * self.d_model

    def step(self, hidden: Tensor, state: dict) -> Tensor:
        """One token by recomputing the layer over the whole history (O(L) per token)."""
        history = hidden[:, None] if state["history"] is None else torch.cat([state["history"], hidden[:, None]], 1)
        state["history"] = history
        return self.forward(history)[:, -1]


def build_hyena(vocab_size: int, head: HeadSpec, d_model: int = 128, n_layers: int = 2, max_len: int = 1 << 20,
                filter_width: int = 64, residual_in_fp32: bool = True, mlp: str = "gelu") -> SequenceModel:
    """Hyena blocks (operator + GELU MLP, or `mlp` swiglu / none) on the shared backbone;
    lengths up to `max_len`."""
    model = SequenceModel(
        vocab_size, d_model, n_layers,
        mixer_factory=lambda i: HyenaMixer(d_model, max_len=max_len, filter_width=filter_width),
        head=head, mlp_factory=mlp_factory(d_model, mlp),
        residual_in_fp32=residual_in_fp32, family="hyena",
    )
    model.max_seq_len = max_len
    return model
