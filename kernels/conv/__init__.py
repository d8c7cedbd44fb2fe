"""Depthwise causal conv1d (Mamba's short conv) with fused bias + SiLU, forward and backward,
and its one-step decode update: input checks and dispatch (triton.py: the Triton kernels;
reference.py: plain PyTorch).

    causal_conv1d(x, weight, bias=None, activation=None)          x (b, d, l), weight (d, width<=4)
    causal_conv1d_update(x, conv_state, weight, bias=None, activation=None)
        x (b, d); conv_state (b, d, width), oldest first, shifted in place to take x.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.kernels.backend import resolve_backend
from seqbench.kernels.conv.reference import causal_conv1d_ref, causal_conv1d_update_ref

__all__ = ["causal_conv1d", "causal_conv1d_update"]

_ACTIVATIONS = (None, "silu", "swish")


def _use_triton(t: Tensor, backend: str) -> bool:
    """'auto': Triton on CUDA, the reference elsewhere; 'triton' forces it (CPU only under
    TRITON_INTERPRET=1, as the tests do); float64 always takes the reference."""
    return resolve_backend(backend, t.device) == "triton" and t.dtype != torch.float64


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1] or not 1 <= weight.shape[1] <= 4:
        raise ValueError(f"weight must be (dim, width) with dim={x.shape[1]} and 1 <= width <= 4, got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"bias must be (dim,) = ({x.shape[1]},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                  backend: str = "auto") -> Tensor:
    """Depthwise causal conv over the last axis of x (b, d, l), optional bias and SiLU; differentiable."""
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, dim, length), got {tuple(x.shape)}")
    _check(x, weight, bias, activation)
    if not _use_triton(x, backend) or x.shape[-1] == 0:
        return causal_conv1d_ref(x, weight, bias, "silu" if activation in ("silu", "swish") else None)
    from seqbench.kernels.conv.triton import causal_conv1d_triton  # imported lazily: Triton only where used

    return causal_conv1d_triton(x, weight, bias, activation in ("silu", "swish"))


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None,
                         activation: str | None = None, backend: str = "auto") -> Tensor:
    """One decode step: shift conv_state (b, d, width) left in place, append x (b, d), return (b, d)."""
    if x.dim() != 2 or conv_state.dim() != 3 or conv_state.shape[:2] != x.shape:
        raise ValueError(f"x must be (batch, dim) and conv_state (batch, dim, width); got {tuple(x.shape)}, {tuple(conv_state.shape)}")
    if weight.dim() != 2 or weight.shape != (x.shape[1], conv_state.shape[2]):
        raise ValueError(f"weight must be (dim, width) = {(x.shape[1], conv_state.shape[2])}, got {tuple(weight.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    silu = activation in ("silu", "swish")
    if not _use_triton(x, backend) or conv_state.stride(2) != 1:
        return causal_conv1d_update_ref(x, conv_state, weight, bias, "silu" if silu else None)
    from seqbench.kernels.conv.triton import causal_conv1d_update_triton

    return causal_conv1d_update_triton(x, conv_state, weight, bias, silu)
