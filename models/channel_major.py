"""Projections between the token-major residual stream (batch, length, features) and the
channel-major (batch, channels, length) tensors that the conv and the selective scan read.

A plain `F.linear` writes (b, l, channels); the kernels would then need a transposed copy of every
operand, and the backward another (those copies were a quarter of a Mamba training step on the
H200, models/NOTES.md). Here the GEMM writes the layout its consumer reads, in one of the two row
layouts of kernels/layout.py:
- channel-outer, (channels, b * l) in memory (`CHANNEL_OUTER`, and always at batch 1, where the
  two layouts are one): every projection, forward and backward, is one 2-D GEMM over all b * l
  positions, weight gradients included;
- batch-major, (b, channels, l): a batch of GEMMs with the weight broadcast (stride 0), whose
  weight gradients are batched products summed over the batch (one reduction each).
cuBLAS takes either operand transposed for free; every output and gradient is written once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.kernels.backend import needs_autograd
from seqbench.kernels.layout import (channel_outer, channel_rows, from_channel_rows, to_tokens,
                                     to_tokens_input_grad, to_tokens_weight_grad)

# tokens_to_channels writes channel-outer tensors at every batch size (models/NOTES.md, variant 12:
# the weight gradients' batch sums gone; no slower than batch-major in the timed training steps)
CHANNEL_OUTER = True


def _tokens_to_channels(h: Tensor, weight: Tensor, sizes: tuple[int, ...], outer: bool) -> tuple[Tensor, ...]:
    b, outs, start = h.shape[0], [], 0
    if outer:
        h2 = h.reshape(-1, h.shape[-1])  # (b l, k)
        for n in sizes:
            outs.append(from_channel_rows(torch.mm(weight[start:start + n], h2.t()), b))
            start += n
        return tuple(outs)
    hT = h.transpose(1, 2)  # (b, k, l), a view
    for n in sizes:
        w = weight[start:start + n]
        outs.append(torch.bmm(w.expand(b, *w.shape), hT))
        start += n
    return tuple(outs)


class _TokensToChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, sizes: tuple[int, ...], outer: bool):
        outs = _tokens_to_channels(h, weight, sizes, outer)
        ctx.save_for_backward(h, weight)
        ctx.sizes, ctx.outer = sizes, outer
        ctx.set_materialize_grads(False)
        return outs

    @staticmethod
    def backward(ctx, *grads):
        h, weight = ctx.saved_tensors
        b = h.shape[0]
        dh = None
        dweight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        h2 = h.reshape(-1, h.shape[-1]) if ctx.outer else None
        start = 0
        for n, g in zip(ctx.sizes, grads):
            if g is not None:
                w = weight[start:start + n]
                if ctx.outer:  # one GEMM each over all positions: dh (b l, k) += g_rows^T w, dW = g_rows h
                    g = channel_rows(g)  # a view for a channel-outer gradient
                    if ctx.needs_input_grad[0]:
                        dh = torch.mm(g.t(), w) if dh is None else dh.addmm_(g.t(), w)
                    if dweight is not None:
                        torch.mm(g, h2, out=dweight[start:start + n])
                else:
                    g = g.contiguous()
                    if ctx.needs_input_grad[0]:  # dh (b, l, k) += g^T w
                        gT = g.transpose(1, 2)
                        dh = (torch.bmm(gT, w.expand(b, *w.shape)) if dh is None
                              else dh.baddbmm_(gT, w.expand(b, *w.shape)))
                    if dweight is not None:  # dW (n, k) = sum_b g_b h_b
                        dweight[start:start + n] = torch.bmm(g, h).sum(0)
            start += n
        if dh is None and ctx.needs_input_grad[0]:
            dh = torch.zeros_like(h)
        return (dh.view(h.shape) if dh is not None else None), dweight, None, None


class _ChannelsToTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor):
        ctx.save_for_backward(y, weight)
        return to_tokens(y, weight)

    @staticmethod
    def backward(ctx, g: Tensor):
        y, weight = ctx.saved_tensors
        dy = to_tokens_input_grad(g, weight, channel_outer(y)) if ctx.needs_input_grad[0] else None
        dweight = to_tokens_weight_grad(g, y) if ctx.needs_input_grad[1] else None
        return dy, dweight


def tokens_to_channels(h: Tensor, weight: Tensor, sizes: tuple[int, ...] | None = None) -> tuple[Tensor, ...]:
    """h (b, l, k) and weight (sum(sizes), k) -> one (b, n, l) tensor per row block of `sizes`
    (all rows when None): h W^T, channel-major, in a layout the kernels read in place
    (channel-outer with CHANNEL_OUTER or at batch 1, else batch-major). Differentiable in h and
    weight (without anything to differentiate, no autograd node: the GEMMs alone)."""
    sizes = tuple(sizes or (weight.shape[0],))
    outer = CHANNEL_OUTER or h.shape[0] == 1
    if needs_autograd(h, weight):
        return _TokensToChannels.apply(h, weight, sizes, outer)
    return _tokens_to_channels(h, weight, sizes, outer)


def channels_to_tokens(y: Tensor, weight: Tensor) -> Tensor:
    """y (b, k, l) channel-major, either layout, and weight (o, k) -> contiguous (b, l, o) = y^T W^T."""
    if needs_autograd(y, weight):
        return _ChannelsToTokens.apply(y, weight)
    return to_tokens(y, weight)

