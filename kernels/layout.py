"""The two row layouts the conv and scan kernels read and write in place.

A (batch, channels, length) operand reaches the kernels as rows of contiguous steps, in either
order in memory: batch-major (b, d, L), PyTorch's contiguous layout, or channel-outer (d, b, L),
what a 2-D projection over all b * L positions writes (models/channel_major.py). The kernels take
the row's batch and channel strides; outputs and gradients are allocated like the input
(`empty_like` keeps a dense tensor's strides), so either layout goes through without a copy.
"""

from __future__ import annotations

import torch
from torch import Tensor


def row_strides(t: Tensor, strides: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """t's strides (or `strides` for t's shape), 0 along dimensions of size 1 (where a stride
    means nothing)."""
    return tuple(0 if n == 1 else st for n, st in zip(t.shape, strides or t.stride()))


def rows_in_place(t: Tensor) -> bool:
    """Whether a (b, d, L) operand is read and written in place: steps contiguous and dense in one
    of the two row orders (batch-major or channel-outer)."""
    return t.stride(-1) == 1 and (t.is_contiguous() or t.transpose(0, 1).is_contiguous())


def rows_layout(t: Tensor) -> Tensor:
    """t as the kernels read it: itself where `rows_in_place`, else a batch-major copy."""
    return t if rows_in_place(t) else t.contiguous()


def in_layout(t: Tensor, ref: Tensor) -> Tensor:
    """t with ref's strides (ref in place, `rows_in_place`): itself when it has them, else a copy."""
    if t.stride() == ref.stride() or row_strides(t) == row_strides(ref):  # the first test is the cheap one
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)


def channel_outer(t: Tensor) -> bool:
    """Whether a (b, d, L) tensor is channel-outer in memory, (d, b, L) contiguous (batch 1: also
    batch-major)."""
    return t.transpose(0, 1).is_contiguous()


def channel_rows(x: Tensor) -> Tensor:
    """(b, k, L) -> (k, b * L): a view where x is channel-outer, else a copy."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def from_channel_rows(m: Tensor, batch: int) -> Tensor:
    """(n, b * L) contiguous rows -> the channel-outer (b, n, L) view of them."""
    return m.view(m.shape[0], batch, -1).transpose(0, 1)


def mix_channels(weight: Tensor, x: Tensor) -> Tensor:
    """W x for x (b, k, L) and weight (o, k): (b, o, L) in x's layout (plain autograd). Channel-outer
    x takes one GEMM over all b * L positions (its gradients are single GEMMs too); batch-major x a
    batch of GEMMs with the weight broadcast, whose weight gradient is then summed over the batch."""
    if channel_outer(x):
        return from_channel_rows(torch.mm(weight, channel_rows(x)), x.shape[0])
    return torch.bmm(weight.expand(x.shape[0], *weight.shape), x)


def to_tokens(y: Tensor, weight: Tensor) -> Tensor:
    """y (b, k, L) in either layout and weight (o, k) -> contiguous (b, L, o) = y^T W^T: one GEMM
    over all positions for channel-outer y, a batch of GEMMs with the weight broadcast otherwise."""
    if channel_outer(y):
        return torch.mm(channel_rows(y).t(), weight.t()).view(y.shape[0], y.shape[2], weight.shape[0])
    wT = weight.t()  # (k, o), a view
    return torch.bmm(y.transpose(1, 2), wT.expand(y.shape[0], *wT.shape))


def to_tokens_input_grad(g: Tensor, weight: Tensor, outer: bool) -> Tensor:
    """`to_tokens`' gradient for y from g (b, L, o): W^T g^T (b, k, L), channel-outer when `outer`."""
    g = g.contiguous()
    if outer:
        return from_channel_rows(torch.mm(weight.t(), g.view(-1, g.shape[-1]).t()), g.shape[0])
    wT = weight.t()
    return torch.bmm(wT.expand(g.shape[0], *wT.shape), g.transpose(1, 2))


def to_tokens_weight_grad(g: Tensor, y: Tensor) -> Tensor:
    """`to_tokens`' gradient for the weight (o, k) from g (b, L, o) and y: one GEMM over all
    positions for channel-outer y, else batched products summed over the batch."""
    g = g.contiguous()
    if channel_outer(y):
        return torch.mm(g.view(-1, g.shape[-1]).t(), channel_rows(y).t())
    return torch.bmm(g.transpose(1, 2), y.transpose(1, 2)).sum(0)
