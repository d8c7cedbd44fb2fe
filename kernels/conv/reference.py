"""Plain PyTorch depthwise causal conv and its decode step: the CPU path and the test oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["causal_conv1d_ref", "causal_conv1d_update_ref"]


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """Depthwise causal conv over the last axis. x (b, d, l); weight (d, width); bias (d,).
    out_t = sum_k weight[:, k] * x_{t - width + 1 + k} + bias, then SiLU if activation == "silu"."""
    width = weight.shape[1]
    out = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return F.silu(out) if activation == "silu" else out


def causal_conv1d_update_ref(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """One decode step of the causal conv. x (b, d); conv_state (b, d, width) holds the last
    `width` inputs (oldest first) and is shifted in place to take x. Returns (b, d)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state * weight).sum(-1)
    if bias is not None:
        out = out + bias
    return F.silu(out) if activation == "silu" else out
