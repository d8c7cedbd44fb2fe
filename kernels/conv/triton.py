"""Triton kernels of the depthwise causal conv1d with fused bias + SiLU (forward, backward) and
its one-step decode update; seqbench.kernels.conv validates the inputs and dispatches here.

Semantics are those of conv/reference.py (out_t = sum_k w[:, k] x_{t-width+1+k} + bias, then
SiLU when activation == "silu"). They run on CUDA tensors (and on CPU tensors under
TRITON_INTERPRET=1). kernels/NOTES.md has the timing against PyTorch's cuDNN depthwise conv.

The conv kernels give each thread whole chunks of V positions of a channel (one 16-byte vector:
V = 8, or 4 for fp32) and load each chunk with the width-1 positions before it (and, in the
backward, after it) as vectors, so the shifted taps come from registers. The backward computes
g = dout * silu'(pre) once per position of a chunk and its halo, dx_t = sum_j w[width-1-j] g_{t+j},
and per-tile partial sums of dweight and dbias, which PyTorch reduces (deterministic, no atomics).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqbench.kernels.backend import needs_autograd
from seqbench.kernels.launch import launch
from seqbench.kernels.layout import in_layout, row_strides, rows_layout

__all__ = ["causal_conv1d_triton", "causal_conv1d_update_triton"]

_INTERP = os.environ.get("TRITON_INTERPRET") == "1"


_USE_PTX: tl.constexpr = tl.constexpr(not _INTERP)  # the interpreter cannot run inline PTX


@triton.jit
def _split(x, BD: tl.constexpr, BT: tl.constexpr, V: tl.constexpr):
    """[BD, BT] -> a tuple of V tensors [BD, BT // V]: entry v holds positions V n + v. A thread
    owns whole V-position chunks (one vector load), so this renames registers, no data moves."""
    if V == 8:
        x = tl.reshape(x, [BD, BT // V, 2, 2, 2])
    else:
        tl.static_assert(V == 4)
        x = tl.reshape(x, [BD, BT // V, 2, 2])
    parts = (x,)
    for level in tl.static_range(V.bit_length() - 1):  # split off the lowest remaining bit of v
        lo = ()
        hi = ()
        for i in tl.static_range(1 << level):
            a, b = tl.split(parts[i])
            lo = lo + (a,)
            hi = hi + (b,)
        parts = lo + hi
    return parts


@triton.jit
def _join(parts, BD: tl.constexpr, BT: tl.constexpr, V: tl.constexpr):
    """Inverse of _split: a tuple of V tensors [BD, BT // V] -> [BD, BT]."""
    for level in tl.static_range(V.bit_length() - 1):  # join v with v + half: the highest bit
        joined = ()
        for i in tl.static_range(V >> (level + 1)):
            joined = joined + (tl.join(parts[i], parts[i + (V >> (level + 1))]),)
        parts = joined
    return tl.reshape(parts[0], [BD, BT])


@triton.jit
def _chunks(ptrs, pos, length, d_mask, SHIFT: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
            V: tl.constexpr):
    """Values at positions pos + SHIFT (SHIFT a multiple of V, so the loads stay vectors), zero
    outside [0, length) and outside the channel block, as _split of fp32 [BD, BT]."""
    p = pos + SHIFT
    m = d_mask & (p < length)
    if SHIFT < 0:
        m = m & (p >= 0)
    return _split(tl.load(ptrs + SHIFT, mask=m, other=0.0).to(tl.float32), BD, BT, V)


@triton.jit
def _tile(w_ptr, b_ptr, dim, s_b, s_d, BD: tl.constexpr, BT: tl.constexpr, W: tl.constexpr,
          HAS_BIAS: tl.constexpr):
    """A program's (time tile, channel block, batch) set-up: element offsets [BD, BT] (rows at
    batch stride s_b and channel stride s_d: either layout of kernels/layout.py), positions
    [1, BT], channel mask [BD, 1], taps u[m] = w[:, W-1-m] (the weight on x_{t-m}) and the bias,
    fp32 [BD, 1]."""
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    d_mask = d < dim
    row = tl.program_id(2).to(tl.int64) * s_b + d.to(tl.int64) * s_d
    pos = (tl.program_id(0) * BT + tl.arange(0, BT))[None, :]
    wp = w_ptr + d.to(tl.int64) * W
    u = ()
    for m in tl.static_range(W):
        u = u + (tl.load(wp + (W - 1 - m), mask=d_mask, other=0.0).to(tl.float32)[:, None],)
    if HAS_BIAS:
        bias = tl.load(b_ptr + d, mask=d_mask, other=0.0).to(tl.float32)[:, None]
    else:
        bias = tl.zeros([BD, 1], dtype=tl.float32)
    return row[:, None] + pos, pos, d_mask[:, None], u, bias


@triton.jit
def _sigmoid(x):
    # 1 / (1 + 2^(-x log2 e)) by ex2.approx.ftz and rcp.approx.ftz: 2 MUFU + 2 FP32 instructions,
    # where tl.sigmoid's non-ftz exp and full-range divide take ~10; relative error < 1e-6
    if _USE_PTX:
        e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x * -1.4426950408889634],
                                      dtype=tl.float32, is_pure=True, pack=1)
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [1.0 + e],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.sigmoid(x)


@triton.jit
def _pre(E, u, bias, r: tl.constexpr, W: tl.constexpr):
    """Pre-activation at chunk position r, from E[i] = x at chunk position i - (W-1)."""
    acc = bias + u[0] * E[r + W - 1]
    for m in tl.static_range(1, W):
        acc += u[m] * E[r + W - 1 - m]
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, dim, length, s_b, s_d,
                     W: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, V: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    off, pos, d_mask, u, bias = _tile(w_ptr, b_ptr, dim, s_b, s_d, BD, BT, W, HAS_BIAS)
    E = _chunks(x_ptr + off, pos, length, d_mask, 0, BD, BT, V)
    if W > 1:  # the previous chunk's last W-1 positions
        E = _chunks(x_ptr + off, pos, length, d_mask, -V, BD, BT, V)[V + 1 - W:] + E
    out = ()
    for r in tl.static_range(V):
        acc = _pre(E, u, bias, r, W)
        if SILU:
            acc = acc * _sigmoid(acc)
        out = out + (acc,)
    tl.store(out_ptr + off, _join(out, BD, BT, V).to(out_ptr.dtype.element_ty), mask=d_mask & (pos < length))


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, dwp_ptr, dbp_ptr, dim, length, s_b, s_d,
                     W: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, V: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    off, pos, d_mask, u, bias = _tile(w_ptr, b_ptr, dim, s_b, s_d, BD, BT, W, HAS_BIAS)
    # per thread chunk of V positions: E[i] = x at chunk position i - (W-1) and D[r] = dout at
    # chunk position r, both reaching W-1 positions into the neighbouring chunks
    E = _chunks(x_ptr + off, pos, length, d_mask, 0, BD, BT, V)
    D = _chunks(dout_ptr + off, pos, length, d_mask, 0, BD, BT, V)
    if W > 1:
        E = _chunks(x_ptr + off, pos, length, d_mask, -V, BD, BT, V)[V + 1 - W:] + E
        D = D + _chunks(dout_ptr + off, pos, length, d_mask, V, BD, BT, V)[:W - 1]
        if SILU:  # the pre-activations at the next chunk's head
            E = E + _chunks(x_ptr + off, pos, length, d_mask, V, BD, BT, V)[:W - 1]
    # g = dout * silu'(pre) at chunk positions 0 .. V+W-2, each once; zero at positions >= length,
    # where dout is loaded as zero
    G = ()
    for r in tl.static_range(V + W - 1):
        g = D[r]
        if SILU:
            pre = _pre(E, u, bias, r, W)
            sg = _sigmoid(pre)
            g = g * sg * (1.0 + pre * (1.0 - sg))
        G = G + (g,)
    # dx_t = sum_j w[W-1-j] g_{t+j}
    dx = ()
    for v in tl.static_range(V):
        acc = u[0] * G[v]
        for j in tl.static_range(1, W):
            acc += u[j] * G[v + j]
        dx = dx + (acc,)
    tl.store(dx_ptr + off, _join(dx, BD, BT, V).to(dx_ptr.dtype.element_ty), mask=d_mask & (pos < length))
    # this tile's partial sums: dw[W-1-m] = sum_t g_t x_{t-m}, dbias = sum_t g_t
    d = tl.program_id(1) * BD + tl.arange(0, BD)[:, None]
    prow = (tl.program_id(2).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)) * dim + d
    for m in tl.static_range(W):
        acc = G[0] * E[W - 1 - m]
        for v in tl.static_range(1, V):
            acc += G[v] * E[v + W - 1 - m]
        tl.store(dwp_ptr + prow * W + (W - 1 - m), tl.sum(acc, axis=1, keep_dims=True), mask=d < dim)
    if HAS_BIAS:
        acc = G[0]
        for v in tl.static_range(1, V):
            acc += G[v]
        tl.store(dbp_ptr + prow, tl.sum(acc, axis=1, keep_dims=True), mask=d < dim)


# (BD channels, BT positions, num_warps) of a program on CUDA, powers of two with BT >= 8; the
# interpreter takes small tiles. 8 x 256 with 4 warps, bf16: a warp covers 256 positions (512
# bytes) of two channel rows, a thread two 8-position chunks.
FWD_CONFIG = (8, 256, 4)
BWD_CONFIG = (8, 256, 4)


def _blocks(x: Tensor, config: tuple[int, int, int]) -> dict:
    """Launch constexprs and options for x (b, d, l)."""
    _, dim, length = x.shape
    BD, BT, warps = (4, 32, 1) if _INTERP else config
    return dict(BD=min(BD, triton.next_power_of_2(dim)), BT=max(8, min(BT, triton.next_power_of_2(length))),
                V=4 if x.element_size() == 4 else 8, num_warps=warps)


def _conv_fwd(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The forward kernel: (out, x as read, weight as read)."""
    x = rows_layout(x)
    w = weight.contiguous()
    batch, dim, length = x.shape
    meta = _blocks(x, FWD_CONFIG)
    out = torch.empty_like(x)
    grid = (triton.cdiv(length, meta["BT"]), triton.cdiv(dim, meta["BD"]), batch)
    launch(_conv_fwd_kernel, grid, x, w, bias if bias is not None else w, out, dim, length, *row_strides(x)[:2],
           W=w.shape[1], HAS_BIAS=bias is not None, SILU=silu, **meta)
    return out, x, w


class _CausalConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        out, x, w = _conv_fwd(x, weight, bias, silu)
        ctx.save_for_backward(x, w, bias)
        ctx.silu = silu
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w, bias = ctx.saved_tensors
        batch, dim, length = x.shape
        W = w.shape[1]
        meta = _blocks(x, BWD_CONFIG)
        ntb = triton.cdiv(length, meta["BT"])
        dout = in_layout(dout, x)  # read at x's strides
        dx = torch.empty_like(x)
        dwp = torch.empty((batch, ntb, dim, W), device=x.device, dtype=torch.float32)
        dbp = torch.empty((batch, ntb, dim), device=x.device, dtype=torch.float32) if bias is not None else None
        grid = (ntb, triton.cdiv(dim, meta["BD"]), batch)
        launch(_conv_bwd_kernel, grid, x, w, bias if bias is not None else w, dout, dx, dwp,
               dbp if dbp is not None else dwp, dim, length, *row_strides(x)[:2],
               W=W, HAS_BIAS=bias is not None, SILU=ctx.silu, **meta)
        dw = dwp.sum(dim=(0, 1)).to(w.dtype)
        db = dbp.sum(dim=(0, 1)).to(bias.dtype) if bias is not None else None
        return dx, dw, db, None


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
        acc = acc * _sigmoid(acc)
    tl.store(out_ptr + b * s_ob + d, acc.to(out_ptr.dtype.element_ty), mask=dm)


def causal_conv1d_triton(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    """The Triton conv (inputs validated by seqbench.kernels.conv); differentiable. With nothing
    to differentiate, the kernel runs without an autograd node."""
    if needs_autograd(x, weight, bias):
        return _CausalConvFn.apply(x, weight, bias, silu)
    return _conv_fwd(x, weight, bias, silu)[0]


def causal_conv1d_update_triton(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None,
                                silu: bool) -> Tensor:
    """The Triton decode step of the conv (inputs validated by seqbench.kernels.conv)."""
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
