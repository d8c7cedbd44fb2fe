"""Depthwise causal conv1d (Mamba's short conv) with fused bias + SiLU, forward and backward,
and its one-step decode update.

    causal_conv1d(x, weight, bias=None, activation=None)          x (b, d, l), weight (d, width<=4)
    causal_conv1d_update(x, conv_state, weight, bias=None, activation=None)
        x (b, d); conv_state (b, d, width), oldest first, shifted in place to take x.

Semantics are those of kernels/reference.py (out_t = sum_k w[:, k] x_{t-width+1+k} + bias, then
SiLU when activation == "silu"). Triton kernels run on CUDA tensors (and on CPU tensors under
TRITON_INTERPRET=1); other CPU tensors use the PyTorch reference. kernels/NOTES.md has the timing
against PyTorch's cuDNN depthwise conv.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqbench.kernels.launch import launch
from seqbench.kernels.reference import causal_conv1d_ref, causal_conv1d_update_ref
from seqbench.kernels.selective_scan import resolve_backend

__all__ = ["causal_conv1d", "causal_conv1d_update"]

_ACTIVATIONS = (None, "silu", "swish")


def _use_triton(t: Tensor, backend: str) -> bool:
    """'auto': Triton on CUDA, the reference elsewhere; 'triton' forces it (CPU only under
    TRITON_INTERPRET=1, as the tests do); float64 always takes the reference."""
    return resolve_backend(backend, t.device) == "triton" and t.dtype != torch.float64


@triton.jit
def _conv_at(x_row, w_ptrs, bias, t, length, W: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
             d_mask, HAS_BIAS: tl.constexpr):
    """Pre-activation at positions t ([BT]) for the [BD] rows of x_row ([BD, 1] pointers)."""
    acc = tl.zeros([BD, BT], dtype=tl.float32)
    for k in tl.static_range(W):
        s = t - (W - 1) + k
        xm = d_mask[:, None] & ((s >= 0) & (s < length))[None, :]
        xv = tl.load(x_row + s[None, :], mask=xm, other=0.0).to(tl.float32)
        wk = tl.load(w_ptrs + k, mask=d_mask, other=0.0).to(tl.float32)
        acc += wk[:, None] * xv
    if HAS_BIAS:
        acc += bias[:, None]
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, dim, length,
                     W: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    tb = tl.program_id(0)
    dblk = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    d = dblk * BD + tl.arange(0, BD)
    t = tb * BT + tl.arange(0, BT)
    d_mask = d < dim
    row = (b * dim + d.to(tl.int64)) * length
    w_ptrs = w_ptr + d.to(tl.int64) * W
    if HAS_BIAS:
        bias = tl.load(b_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], dtype=tl.float32)
    acc = _conv_at(x_ptr + row[:, None], w_ptrs, bias, t, length, W, BD, BT, d_mask, HAS_BIAS)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    m = d_mask[:, None] & (t < length)[None, :]
    tl.store(out_ptr + row[:, None] + t[None, :], acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, dwp_ptr, dbp_ptr, dim, length, ntb,
                     W: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    tb = tl.program_id(0)
    dblk = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    d = dblk * BD + tl.arange(0, BD)
    t = tb * BT + tl.arange(0, BT)
    d_mask = d < dim
    row = (b * dim + d.to(tl.int64)) * length
    x_row = x_ptr + row[:, None]
    w_ptrs = w_ptr + d.to(tl.int64) * W
    if HAS_BIAS:
        bias = tl.load(b_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BD], dtype=tl.float32)
    dx = tl.zeros([BD, BT], dtype=tl.float32)
    pbase = ((b * tl.num_programs(0) + tb) * dim + d.to(tl.int64))  # partial rows (b, tile, d)
    for j in tl.static_range(W):
        tj = t + j
        mj = d_mask[:, None] & (tj < length)[None, :]
        g = tl.load(dout_ptr + row[:, None] + tj[None, :], mask=mj, other=0.0).to(tl.float32)
        if SILU:
            pre = _conv_at(x_row, w_ptrs, bias, tj, length, W, BD, BT, d_mask, HAS_BIAS)
            sg = tl.sigmoid(pre)
            g = g * sg * (1.0 + pre * (1.0 - sg))
        wj = tl.load(w_ptrs + (W - 1 - j), mask=d_mask, other=0.0).to(tl.float32)
        dx += wj[:, None] * g
        if j == 0:
            # weight / bias partial sums from this tile's own positions
            for k in tl.static_range(W):
                s = t - (W - 1) + k
                xm = d_mask[:, None] & ((s >= 0) & (s < length))[None, :]
                xv = tl.load(x_row + s[None, :], mask=xm, other=0.0).to(tl.float32)
                tl.store(dwp_ptr + pbase * W + k, tl.sum(g * xv, axis=1), mask=d_mask)
            if HAS_BIAS:
                tl.store(dbp_ptr + pbase, tl.sum(g, axis=1), mask=d_mask)
    m = d_mask[:, None] & (t < length)[None, :]
    tl.store(dx_ptr + row[:, None] + t[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)


def _blocks(dim: int, length: int) -> tuple[int, int]:
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    BT = min(32 if interp else 256, triton.next_power_of_2(max(length, 1)))
    BD = min(4 if interp else 8, triton.next_power_of_2(dim))
    return BD, BT


class _CausalConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        x = x.contiguous()
        w = weight.contiguous()
        batch, dim, length = x.shape
        W = w.shape[1]
        BD, BT = _blocks(dim, length)
        out = torch.empty_like(x)
        grid = (triton.cdiv(length, BT), triton.cdiv(dim, BD), batch)
        launch(_conv_fwd_kernel, grid, x, w, bias if bias is not None else w, out, dim, length,
               W=W, BD=BD, BT=BT, HAS_BIAS=bias is not None, SILU=silu, num_warps=4)
        ctx.save_for_backward(x, w, bias)
        ctx.silu = silu
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w, bias = ctx.saved_tensors
        batch, dim, length = x.shape
        W = w.shape[1]
        BD, BT = _blocks(dim, length)
        ntb = triton.cdiv(length, BT)
        dout = dout.contiguous()
        dx = torch.empty_like(x)
        dwp = torch.empty((batch, ntb, dim, W), device=x.device, dtype=torch.float32)
        dbp = torch.empty((batch, ntb, dim), device=x.device, dtype=torch.float32) if bias is not None else None
        grid = (ntb, triton.cdiv(dim, BD), batch)
        launch(_conv_bwd_kernel, grid, x, w, bias if bias is not None else w, dout, dx, dwp,
               dbp if dbp is not None else dwp, dim, length, ntb,
               W=W, BD=BD, BT=BT, HAS_BIAS=bias is not None, SILU=ctx.silu, num_warps=4)
        dw = dwp.sum(dim=(0, 1)).to(w.dtype)
        db = dbp.sum(dim=(0, 1)).to(bias.dtype) if bias is not None else None
        return dx, dw, db, None


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
    return _CausalConvFn.apply(x, weight, bias, activation in ("silu", "swish"))


@triton.jit
def _conv_update_kernel(x_ptr, s_ptr, w_ptr, b_ptr, out_ptr, dim, s_sb, s_sd, s_xb, s_ob,
                        W: tl.constexpr, WP: tl.constexpr, BD: tl.constexpr,
                        HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    k = tl.arange(0, WP)
    dm = d < dim
    d64 = d.to(tl.int64)
    km = k < W
    m2 = dm[:, None] & km[None, :]
    sp = s_ptr + b * s_sb + d64[:, None] * s_sd
    # shifted state: new[k] = old[k + 1] for k < W - 1, new[W - 1] = x
    old_next = tl.load(sp + k[None, :] + 1, mask=dm[:, None] & (k < W - 1)[None, :], other=0.0)
    xv = tl.load(x_ptr + b * s_xb + d, mask=dm, other=0.0)
    new = tl.where((k == W - 1)[None, :], xv[:, None].to(old_next.dtype), old_next)
    tl.debug_barrier()  # every read of the old state happens before any write
    tl.store(sp + k[None, :], new, mask=m2)
    wv = tl.load(w_ptr + d64[:, None] * W + k[None, :], mask=m2, other=0.0).to(tl.float32)
    acc = tl.sum(tl.where(m2, new.to(tl.float32) * wv, 0.0), axis=1)
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=dm, other=0.0).to(tl.float32)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(out_ptr + b * s_ob + d, acc.to(out_ptr.dtype.element_ty), mask=dm)


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
    batch, dim = x.shape
    W = conv_state.shape[2]
    w = weight.contiguous()
    out = torch.empty_like(x)
    BD = min(128, triton.next_power_of_2(dim))
    launch(
        _conv_update_kernel, (batch, triton.cdiv(dim, BD)),
        x, conv_state, w, bias if bias is not None else w, out, dim,
        conv_state.stride(0), conv_state.stride(1), x.stride(0), out.stride(0),
        W=W, WP=triton.next_power_of_2(W), BD=BD, HAS_BIAS=bias is not None, SILU=silu, num_warps=4,
    )
    return out
