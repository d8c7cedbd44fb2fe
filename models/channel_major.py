"""Projections between the token-major residual stream (batch, length, features) and the
channel-major layout (batch, channels, length) that the conv and the selective scan read.

A plain `F.linear` writes (b, l, channels); the kernels then need a transposed copy of every
operand, and the backward another (those copies were a quarter of a Mamba training step on the
H200, models/NOTES.md). Here the GEMM writes the layout its consumer reads: cuBLAS takes either
operand transposed for free, the weight is broadcast over the batch (stride 0), and every output
and gradient is a fresh contiguous tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.kernels.backend import needs_autograd


def _tokens_to_channels(h: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> tuple[Tensor, ...]:
    b = h.shape[0]
    hT = h.transpose(1, 2)  # (b, k, l), a view
    outs, start = [], 0
    for n in sizes:
        w = weight[start:start + n]
        outs.append(torch.bmm(w.expand(b, *w.shape), hT))
        start += n
    return tuple(outs)


def _channels_to_tokens(y: Tensor, weight: Tensor) -> Tensor:
    wT = weight.t()  # (k, o), a view
    return torch.bmm(y.transpose(1, 2), wT.expand(y.shape[0], *wT.shape))  # (b, l, o)


class _TokensToChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, sizes: tuple[int, ...]):
        outs = _tokens_to_channels(h, weight, sizes)
        ctx.save_for_backward(h, weight)
        ctx.sizes = sizes
        ctx.set_materialize_grads(False)
        return outs

    @staticmethod
    def backward(ctx, *grads):
        h, weight = ctx.saved_tensors
        b = h.shape[0]
        dh = None
        dweight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        start = 0
        for n, g in zip(ctx.sizes, grads):
            if g is not None:
                g = g.contiguous()
                w = weight[start:start + n]
                if ctx.needs_input_grad[0]:  # dh (b, l, k) += g^T w
                    gT = g.transpose(1, 2)
                    dh = torch.bmm(gT, w.expand(b, *w.shape)) if dh is None else dh.baddbmm_(gT, w.expand(b, *w.shape))
                if dweight is not None:  # dW (n, k) = sum_b g_b h_b
                    dweight[start:start + n] = torch.bmm(g, h).sum(0)
            start += n
        if dh is None and ctx.needs_input_grad[0]:
            dh = torch.zeros_like(h)
        return dh, dweight, None


class _ChannelsToTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor):
        ctx.save_for_backward(y, weight)
        return _channels_to_tokens(y, weight)

    @staticmethod
    def backward(ctx, g: Tensor):
        y, weight = ctx.saved_tensors
        b = y.shape[0]
        g = g.contiguous()
        gT = g.transpose(1, 2)  # (b, o, l), a view
        dy = dweight = None
        if ctx.needs_input_grad[0]:  # (b, k, l) = W^T g^T
            wT = weight.t()
            dy = torch.bmm(wT.expand(b, *wT.shape), gT)
        if ctx.needs_input_grad[1]:  # (o, k) = sum_b g_b^T y_b^T
            dweight = torch.bmm(gT, y.transpose(1, 2)).sum(0)
        return dy, dweight


def tokens_to_channels(h: Tensor, weight: Tensor, sizes: tuple[int, ...] | None = None) -> tuple[Tensor, ...]:
    """h (b, l, k) and weight (sum(sizes), k) -> one contiguous (b, n, l) tensor per row block
    of `sizes` (all rows when None): h W^T, channel-major. Differentiable in h and weight
    (without anything to differentiate, no autograd node: the GEMMs alone)."""
    sizes = tuple(sizes or (weight.shape[0],))
    if needs_autograd(h, weight):
        return _TokensToChannels.apply(h, weight, sizes)
    return _tokens_to_channels(h, weight, sizes)


def channels_to_tokens(y: Tensor, weight: Tensor) -> Tensor:
    """y (b, k, l) channel-major and weight (o, k) -> contiguous (b, l, o) = y^T W^T."""
    if needs_autograd(y, weight):
        return _ChannelsToTokens.apply(y, weight)
    return _channels_to_tokens(y, weight)


def channels_to_channels(x: Tensor, weight: Tensor) -> Tensor:
    """x (b, k, l) and weight (o, k) -> contiguous (b, o, l) = W x (plain autograd: its gradients
    are contiguous already). x may be a row slice of a wider channel-major tensor."""
    return torch.bmm(weight.expand(x.shape[0], *weight.shape), x)
