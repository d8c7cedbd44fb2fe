"""Fused Triton selective scan (forward and backward) with kernels/CONTRACT.md's semantics.

Design (kernels/NOTES.md has the measurements behind every choice)
-----------------------------------------------------------------
The sequence is cut into tiles of T steps (64 by default). The per-tile kernels run on a grid of
(channel blocks x tiles, batch), channel blocks varying fastest so that programs running at the
same time share the tile's B / C rows in L2. One program holds a [BD channels x T steps] register
tile of u / delta / z / dout (loaded coalesced and vectorised along the sequence) and loops over
the N states. Per-(d, t) work -- bias, softplus, dt*u, D skip, z gate -- is done once per tile
element; per-(d, n, t) work is one exp2 plus the scan's FMAs.

Forward, short sequences (at most SEQ_MAX_TILES tiles of T_SEQ steps: 8192 steps by default, and
  only when no backward follows unless SEQ_GRAD is set; under autograd, calls of at most
  SHORT_CALL_ELEMS elements, which the host's time bounds, take it tiled at T; NOTES.md,
  variants 7, 10 and 14, has the measurements):
  one launch of `_fwd_seq` on a grid of (channel blocks, batch). Each program walks its row's
  tiles in order with `_tile_forward`, the per-tile body it shares with `_fwd_out`; a tile's end
  state (h at its last column: dt is 0 past the end) is stored to the saved tile-start states
  and loaded back, after a barrier, as the next tile's start. It writes the same saved buffers
  as the three-kernel forward, so the backward is shared (tiling by T_SEQ). The host work per
  call is then one Triton launch and a few allocations, and each element's recurrence is
  computed once instead of twice (tile end states, then the output pass).

Forward under autograd at many rows (batch x dim at least SEQ_GRAD_ROWS, NOTES.md variant 16):
  `_fwd_seq` on tiles of T_SEQ_ROWS steps, each storing the states and dt sums of its
  T_SEQ_ROWS / T sub-tiles, i.e. the saved buffers of the three-kernel forward at T.

Forward, longer sequences (three launches):
  1. `_fwd_tile_state`: every tile's end state starting from zero, in closed form
     h_end = sum_t exp(A (S_T - S_t)) dt_t u_t B_t (S = cumulative dt inside the tile; a plain
     sum, no scan), and the tile's sum of dt (its decay is exp(A sum dt)).
  2. `_carry_fwd`: per (batch, state, channel), combines K tiles at a time with an in-register
     scan and writes every tile's start state (batch, tiles + 1, N, dim); the last entry is h_L.
  3. `_fwd_out`: per tile, tl.associative_scan over (decay, input) pairs with the start state
     folded into the first input, y = <h, C> + D u, out = y * silu(z).
Only the tile-start states (fp32, N * 4 / T bytes per (channel, step)) are kept for backward;
nothing of size (batch, dim, length, N) is ever written.

Backward mirrors it: `_bwd_tile_state` (closed-form gradient flowing into each tile's start
from inside the tile), `_carry_bwd` (reverse walk over tiles: gradient w.r.t. every tile's end
state, and dh0), `_bwd_main` (per tile: h by a forward scan; g = dL/dh by a forward scan over
the tile in reversed order, flipped back -- Triton's reverse scan costs ~10x the shuffles; then
du, ddelta, dz per element and partial sums of dA, dB, dC, dD, ddelta_bias, reduced by one
`_bwd_sums` launch for short sequences and by PyTorch otherwise; C reversed inside every tile
comes from `_reverse_tiles`, or for short calls from `_bwd_tile_state`).

The kernels take A itself and scale it to base 2 as they load it (no host-side A * log2(e)
launch), or with A_IS_LOG the Mamba block's A_log, of which they take -exp as they load it (no
host-side -exp(A_log) either); D and delta_bias they read in their own dtype. Without anything to differentiate the forward runs outside autograd. Every launch goes
through a `seqbench.kernels.launch.Bound` of the call's plan (`_Plan`: what a call's signature fixes,
built once per signature), which skips Triton's per-call binding (NOTES.md, variants 8 and 11).

Index math that can pass 2^31 is int64 (program ids and row offsets are widened before they are
multiplied); pointer advances inside loops are pointer increments. The kernels also run under
TRITON_INTERPRET=1 on CPU tensors (the CI tests), with smaller tiles.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqbench.kernels.backend import needs_autograd
from seqbench.kernels.layout import in_layout, row_strides, rows_in_place
from seqbench.kernels.launch import Bound, current_stream, through_triton
from seqbench.kernels.scan.checks import check_scan_inputs

__all__ = ["selective_scan_triton", "scan_config"]

# log2(e): the kernels take A (natural log base, fp32) and scale it to base 2 as they load it,
# so no host-side A * log2(e) launch.
_LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


# ---------------------------------------------------------------------------------------------
# small jit helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _pair_combine(a1, b1, a2, b2):
    # affine maps h -> a h + b composed in sequence order: (a1, b1) then (a2, b2)
    return a1 * a2, a2 * b1 + b2


_USE_PTX: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")


@triton.jit
def _log_fast(x):
    # tl.log lowers to libdevice's accurate logf (~35 instructions); lg2.approx is one MUFU op
    # with ~2^-22 relative error. The interpreter cannot run inline PTX.
    if _USE_PTX:
        return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1) * 0.6931471805599453
    else:
        return tl.log(x)


@triton.jit
def _softplus(x):
    # softplus with threshold 20. log1p(e): a 3-term series below e = 0.01 (error < e^4 / 4),
    # log(1 + e) above (rounding of 1 + e costs < 1e-5 relative there): two MUFU ops, no divide.
    e = tl.exp(x)
    es = tl.minimum(e, 0.01)
    series = es * (1.0 - es * (0.5 - es * 0.3333333333333333))
    lp = tl.where(e < 0.01, series, _log_fast(1.0 + e))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _load_a2(ptrs, mask, A_IS_LOG: tl.constexpr):
    """A in base 2 (A * log2(e)), fp32, from A itself or, with A_IS_LOG, from A_log (A = -exp(A_log),
    in any float dtype: the Mamba block's parameter as it is, no host-side launches)."""
    a = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if A_IS_LOG:
        a = -tl.exp(a)
    return a * _LOG2E


@triton.jit
def _load_dt(delta_ptrs, bias_ptr, d, d_mask, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta tile -> (pre-activation x, dt), dt forced to 0 outside the valid region."""
    x = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x = x + tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(tl.float32)[:, None]
    if SOFTPLUS:
        dt = _softplus(x)
    else:
        dt = x
    dt = tl.where(mask, dt, 0.0)
    return x, dt


@triton.jit
def _tile_coords(dim, length, s_b, s_d, BD: tl.constexpr, T: tl.constexpr):
    """Where a program of the per-tile grids works: (channel block, tile, batch row, channels d,
    steps t, d_mask, [BD, T] mask, [BD, T] int64 element offsets, with batch stride s_b and
    channel stride s_d). Channel blocks vary fastest, so programs running together share the
    tile's B / C rows in L2."""
    pid = tl.program_id(0)
    ndb = tl.cdiv(dim, BD)
    dblk = pid % ndb
    tile = pid // ndb
    b = tl.program_id(1).to(tl.int64)
    d = dblk * BD + tl.arange(0, BD)
    t = tile * T + tl.arange(0, T)
    d_mask = d < dim
    mask = d_mask[:, None] & (t < length)[None, :]
    ptrs = (b * s_b + d.to(tl.int64) * s_d)[:, None] + t[None, :]
    return dblk, tile, b, d, t, d_mask, mask, ptrs


# ---------------------------------------------------------------------------------------------
# forward kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _fwd_tile_state(
    u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, hbuf_ptr, dtsum_ptr,
    dim, length, ntiles, dpg, s_b, s_d, sB_b, sB_g, sB_n,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, UNROLL: tl.constexpr, A_IS_LOG: tl.constexpr,
):
    dblk, tile, b, d, t, d_mask, mask, ptrs = _tile_coords(dim, length, s_b, s_d, BD, T)
    _, dt = _load_dt(delta_ptr + ptrs, bias_ptr, d, d_mask, mask, HAS_BIAS, SOFTPLUS)
    uf = tl.load(u_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    dtu = dt * uf
    S = tl.cumsum(dt, axis=1)
    Stot = tl.sum(dt, axis=1)
    R = Stot[:, None] - S  # sum of dt after step t inside the tile (>= 0)
    g = (dblk * BD) // dpg
    Bp = B_ptr + b * sB_b + g.to(tl.int64) * sB_g + (t[None, :] + 0 * d[:, None])  # [BD, T], equal rows
    Ap = A_ptr + d.to(tl.int64) * N
    hp = hbuf_ptr + (b * ntiles + tile) * N * dim + d
    a2 = _load_a2(Ap, d_mask, A_IS_LOG)
    Bn = tl.load(Bp, mask=mask, other=0.0).to(tl.float32)
    for n in tl.range(0, N, loop_unroll_factor=UNROLL):
        nx = (n + 1) % N
        a2_x = _load_a2(Ap + nx, d_mask, A_IS_LOG)
        Bn_x = tl.load(Bp + nx * sB_n, mask=mask, other=0.0).to(tl.float32)
        w = tl.exp2(R * a2[:, None]) * dtu * Bn
        tl.store(hp + n * dim, tl.sum(w, axis=1), mask=d_mask)
        a2 = a2_x
        Bn = Bn_x
    tl.store(dtsum_ptr + (b * ntiles + tile) * dim + d, Stot, mask=d_mask)


@triton.jit
def _carry_fwd(
    hloc_ptr, dtsum_ptr, A_ptr, h0_ptr, hst_ptr, dim, ntiles,
    N: tl.constexpr, BLK: tl.constexpr, K: tl.constexpr, HAS_H0: tl.constexpr, A_IS_LOG: tl.constexpr,
):
    """Local end states of the tiles -> start states. hst has ntiles + 1 entries per batch:
    hst[k] = state before tile k, hst[ntiles] = the last state. K tiles are loaded at once
    ([K, BLK] tiles, all loads in flight) and combined with an in-register scan along K, so the
    serial chain has ntiles / K steps."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    idx = pid * BLK + tl.arange(0, BLK)  # flat (n, d) index, n major
    m = idx < N * dim
    n = idx // dim
    d = idx % dim
    a2 = _load_a2(A_ptr + d.to(tl.int64) * N + n, m, A_IS_LOG)
    if HAS_H0:
        carry = tl.load(h0_ptr + (b * dim + d) * N + n, mask=m, other=0.0)
    else:
        carry = tl.zeros([BLK], dtype=tl.float32)
    ND = N * dim
    kk = tl.arange(0, K)
    hl_p = hloc_ptr + b * ntiles * ND + kk.to(tl.int64)[:, None] * ND + idx[None, :]
    ds_p = dtsum_ptr + b * ntiles * dim + kk.to(tl.int64)[:, None] * dim + d[None, :]
    st_p = hst_ptr + b * (ntiles + 1) * ND + (kk.to(tl.int64)[:, None] + 1) * ND + idx[None, :]
    tl.store(hst_ptr + b * (ntiles + 1) * ND + idx, carry, mask=m)
    for k0 in range(0, ntiles, K):
        km = ((k0 + kk) < ntiles)[:, None] & m[None, :]
        hl = tl.load(hl_p, mask=km, other=0.0)
        ds = tl.load(ds_p, mask=km, other=0.0)
        dec = tl.exp2(a2[None, :] * ds)
        ac, bc = tl.associative_scan((dec, hl), 0, _pair_combine)
        after = bc + ac * carry[None, :]
        tl.store(st_p, after, mask=km)
        carry = tl.sum(tl.where((kk == K - 1)[:, None], after, 0.0), axis=0)
        hl_p += K * ND
        ds_p += K * dim
        st_p += K * ND


@triton.jit
def _tile_forward(
    u_ptr, delta_ptr, z_ptr, out_ptr, D_ptr, bias_ptr, Ap, Bp, Cp, hs, he, last_p, last_mask,
    d, d_mask, mask, ptrs, dim, sB_n, nvalid,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    STORE_END: tl.constexpr, HAS_LAST: tl.constexpr, UNROLL: tl.constexpr, A_IS_LOG: tl.constexpr,
    SUB: tl.constexpr,
):
    """One [BD x T] tile of the forward, starting from the states at hs (state n at hs + n * dim;
    B / C state rows sB_n apart):
    per state, tl.associative_scan over (decay, input) pairs with the start state folded into the
    first input, y += h * C; then the D skip and the z gate, and out is stored. With STORE_END the
    tile's end states (h at its last column: dt is 0 past the end, so decay 1 and input 0 there)
    go to he, and with HAS_LAST also to last_p + n where last_mask holds (the caller's last
    tile). Returns the tile's sum of dt per channel.

    SUB > 1 (`_fwd_seq` under autograd on long tiles): the tile is SUB sub-tiles of T / SUB steps,
    the backward's tiling; with STORE_END the end state of each of the first `nvalid` sub-tiles
    goes to hs + (j + 1) * N * dim (the last of them is he), and the return value is the dt sum of
    each sub-tile, [BD, SUB]."""
    tt = tl.arange(0, T)
    first = (tt == 0)[None, :]  # the tile's first step takes the start state
    lastcol = (tt == T - 1)[None, :]
    # first state's operands are issued before the tile loads so their latency overlaps
    a2 = _load_a2(Ap, d_mask, A_IS_LOG)
    Bn = tl.load(Bp, mask=mask, other=0.0).to(tl.float32)
    Cn = tl.load(Cp, mask=mask, other=0.0).to(tl.float32)
    h0 = tl.load(hs, mask=d_mask, other=0.0)
    _, dt = _load_dt(delta_ptr + ptrs, bias_ptr, d, d_mask, mask, HAS_BIAS, SOFTPLUS)
    uf = tl.load(u_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    dtu = dt * uf
    y = tl.zeros([BD, T], dtype=tl.float32)
    for n in tl.range(0, N, loop_unroll_factor=UNROLL):
        # prefetch the next state's operands (wrapped to state 0 on the last step; unused)
        nx = (n + 1) % N
        a2_x = _load_a2(Ap + nx, d_mask, A_IS_LOG)
        Bn_x = tl.load(Bp + nx * sB_n, mask=mask, other=0.0).to(tl.float32)
        Cn_x = tl.load(Cp + nx * sB_n, mask=mask, other=0.0).to(tl.float32)
        h0_x = tl.load(hs + nx * dim, mask=d_mask, other=0.0)
        a = tl.exp2(dt * a2[:, None])
        # h_0 = a_0 * h_start + b_0: folding the start state into the first input leaves the scan's
        # b component equal to h (its cumulative-decay output is then dead code)
        bb = dtu * Bn + tl.where(first, a * h0[:, None], 0.0)
        _ac, h = tl.associative_scan((a, bb), 1, _pair_combine)
        y += h * Cn
        if STORE_END:
            hend = tl.sum(tl.where(lastcol, h, 0.0), axis=1)
            if SUB == 1:
                tl.store(he + n * dim, hend, mask=d_mask)
            else:  # every sub-tile's end state: h at its last column
                jj = tl.arange(0, SUB)
                sub_last = (tl.arange(0, T // SUB) == T // SUB - 1)[None, None, :]
                ends = tl.sum(tl.where(sub_last, tl.reshape(h, [BD, SUB, T // SUB]), 0.0), axis=2)
                tl.store(hs[:, None] + (jj[None, :] + 1) * (N * dim) + n * dim, ends,
                         mask=d_mask[:, None] & (jj < nvalid)[None, :])
            if HAS_LAST:
                tl.store(last_p + n, hend, mask=last_mask)
        a2 = a2_x
        Bn = Bn_x
        Cn = Cn_x
        h0 = h0_x
    if HAS_D:
        y += tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32)[:, None] * uf
    if HAS_Z:
        zf = tl.load(z_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        y = y * zf * tl.sigmoid(zf)
    tl.store(out_ptr + ptrs, y.to(out_ptr.dtype.element_ty), mask=mask)
    if SUB == 1:  # a constexpr branch: one return, whose shape SUB decides
        dt_sum = tl.sum(dt, axis=1)
    else:
        dt_sum = tl.sum(tl.reshape(dt, [BD, SUB, T // SUB]), axis=2)
    return dt_sum


@triton.jit
def _fwd_out(
    u_ptr, delta_ptr, z_ptr, out_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, hst_ptr,
    dim, length, ntiles, dpg, s_b, s_d, sB_b, sB_g, sB_n,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    UNROLL: tl.constexpr, A_IS_LOG: tl.constexpr,
):
    dblk, tile, b, d, t, d_mask, mask, ptrs = _tile_coords(dim, length, s_b, s_d, BD, T)
    g = (dblk * BD) // dpg
    boff = b * sB_b + g.to(tl.int64) * sB_g + (t[None, :] + 0 * d[:, None])  # [BD, T], equal rows
    hs = hst_ptr + (b * (ntiles + 1) + tile) * N * dim + d
    _tile_forward(u_ptr, delta_ptr, z_ptr, out_ptr, D_ptr, bias_ptr, A_ptr + d.to(tl.int64) * N,
                  B_ptr + boff, C_ptr + boff, hs, hs, hs, d_mask, d, d_mask, mask, ptrs, dim, sB_n, 1,
                  N, BD, T, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, False, False, UNROLL, A_IS_LOG, 1)


@triton.jit
def _fwd_seq(
    u_ptr, delta_ptr, z_ptr, out_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, h0_ptr, hst_ptr, dtsum_ptr,
    last_ptr, dim, length, ntiles, dpg, s_b, s_d, sB_b, sB_g, sB_n,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_LAST: tl.constexpr, UNROLL: tl.constexpr, A_IS_LOG: tl.constexpr,
    SUB: tl.constexpr,
):
    """The whole forward in one launch, for short sequences: a program owns BD channels of one
    batch row and walks its tiles in order (`_tile_forward`, as `_fwd_out` does for one tile).
    The start state of tile k + 1 is the end state of tile k. Writes the same hst (tile start
    states, hst[:, 0] = initial state) and dtsum (per-tile sums of dt) as the three-kernel path,
    so the backward is shared; with HAS_LAST the final state also goes to last (batch, dim, N).
    With SUB > 1 its tiles of T steps are SUB tiles of the backward's (`ntiles` of T / SUB steps
    each): hst and dtsum are written per backward tile, as the three-kernel forward at T / SUB
    writes them."""
    dblk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = dblk * BD + tl.arange(0, BD)
    d64 = d.to(tl.int64)
    d_mask = d < dim
    tt = tl.arange(0, T)
    row = b * s_b + d64 * s_d  # [BD] int64
    g = (dblk * BD) // dpg
    boff = b * sB_b + g.to(tl.int64) * sB_g + (tt[None, :] + 0 * d[:, None])  # [BD, T], equal rows
    Bp = B_ptr + boff
    Cp = C_ptr + boff
    Ap = A_ptr + d64 * N
    ND = N * dim
    hs = hst_ptr + b * (ntiles + 1) * ND + d  # start states of the current tile, state n at + n * dim
    dsp = dtsum_ptr + b * ntiles * dim + d
    last_p = last_ptr + (b * dim + d64) * N
    # hst[:, 0] = the initial state
    for n in range(N):
        if HAS_H0:
            hin = tl.load(h0_ptr + (b * dim + d64) * N + n, mask=d_mask, other=0.0)
        else:
            hin = tl.zeros([BD], dtype=tl.float32)
        tl.store(hs + n * dim, hin, mask=d_mask)
    nfwd = tl.cdiv(ntiles, SUB)  # tiles of T steps this program walks
    jj = tl.arange(0, SUB)
    for tile in range(0, nfwd):
        t = tile * T + tt
        mask = d_mask[:, None] & (t < length)[None, :]
        nvalid = ntiles - tile * SUB  # the backward's tiles in this one (fewer than SUB at the end)
        # the start states were stored (by the previous tile, or above) from other lanes than
        # the ones that load them here
        tl.debug_barrier()
        he = hs + SUB * ND  # end states of this tile = start states of the next
        dtsum = _tile_forward(u_ptr, delta_ptr, z_ptr, out_ptr, D_ptr, bias_ptr, Ap, Bp, Cp, hs, he,
                              last_p, d_mask & (tile == nfwd - 1), d, d_mask, mask, row[:, None] + t[None, :],
                              dim, sB_n, nvalid, N, BD, T, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, True, HAS_LAST,
                              UNROLL, A_IS_LOG, SUB)
        if SUB == 1:
            tl.store(dsp, dtsum, mask=d_mask)
        else:
            tl.store(dsp[:, None] + jj[None, :] * dim, dtsum, mask=d_mask[:, None] & (jj < nvalid)[None, :])
        hs = he
        dsp += SUB * dim
        Bp += T
        Cp += T


# ---------------------------------------------------------------------------------------------
# backward kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_dy(dout_ptr, z_ptr, ptrs, mask, HAS_Z: tl.constexpr):
    """dy = dout * silu(z) (or dout); also returns dout and z as fp32 (z = 0 without z)."""
    do = tl.load(dout_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        zf = tl.load(z_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        sz = tl.sigmoid(zf)
        dy = do * zf * sz
    else:
        zf = do * 0.0
        sz = zf
        dy = do
    return do, zf, sz, dy


@triton.jit
def _bwd_tile_state(
    dout_ptr, z_ptr, delta_ptr, A_ptr, C_ptr, bias_ptr, qbuf_ptr, Crev_ptr,
    dim, length, ntiles, dpg, s_b, s_d, sB_b, sB_g, sB_n,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, UNROLL: tl.constexpr,
    WRITE_CREV: tl.constexpr, A_IS_LOG: tl.constexpr,
):
    """Gradient flowing into each tile's start state from inside the tile, with a zero gradient
    at the tile's end: q = sum_t exp(A * S_t) * C_t * dy_t (S_t inclusive cumulative dt).
    With WRITE_CREV the first channel block of each group also writes its tile of C reversed
    (what `_reverse_tiles` writes; one launch less for short, host-bound calls)."""
    dblk, tile, b, d, t, d_mask, mask, ptrs = _tile_coords(dim, length, s_b, s_d, BD, T)
    _, dt = _load_dt(delta_ptr + ptrs, bias_ptr, d, d_mask, mask, HAS_BIAS, SOFTPLUS)
    _do, _zf, _sz, dy = _load_dy(dout_ptr, z_ptr, ptrs, mask, HAS_Z)
    S = tl.cumsum(dt, axis=1)
    g = (dblk * BD) // dpg
    Crow = C_ptr + b * sB_b + g.to(tl.int64) * sB_g
    Cp = Crow + (t[None, :] + 0 * d[:, None])  # [BD, T], equal rows
    Ap = A_ptr + d.to(tl.int64) * N
    qp = qbuf_ptr + (b * ntiles + tile) * N * dim + d
    if WRITE_CREV:  # Crev: contiguous (b, G, N, ntiles * T), zero past the end
        j = tl.arange(0, T)
        src = tile * T + (T - 1 - j)
        first = (dblk * BD) % dpg == 0
        rev_src = Crow + src
        rev_dst = Crev_ptr + ((b * (dim // dpg) + g.to(tl.int64)) * N) * (ntiles * T) + tile * T + j
        rev_load = (src < length) & first
        rev_store = (j < T) & first
    a2 = _load_a2(Ap, d_mask, A_IS_LOG)
    Cn = tl.load(Cp, mask=mask, other=0.0).to(tl.float32)
    for n in tl.range(0, N, loop_unroll_factor=UNROLL):
        if WRITE_CREV:
            tl.store(rev_dst + n * (ntiles * T), tl.load(rev_src + n * sB_n, mask=rev_load, other=0.0),
                     mask=rev_store)
        nx = (n + 1) % N
        a2_x = _load_a2(Ap + nx, d_mask, A_IS_LOG)
        Cn_x = tl.load(Cp + nx * sB_n, mask=mask, other=0.0).to(tl.float32)
        w = tl.exp2(S * a2[:, None]) * dy * Cn
        tl.store(qp + n * dim, tl.sum(w, axis=1), mask=d_mask)
        a2 = a2_x
        Cn = Cn_x


@triton.jit
def _reverse_tiles(C_ptr, Crev_ptr, length, lpad, nblk, groups, N, sC_b, sC_g, sC_n,
                   T: tl.constexpr, BLK: tl.constexpr):
    """Crev[row, k T + j] = C[row, k T + T-1-j], zero past the end: every tile of T steps
    reversed in time, for `_bwd_main`'s reversed scan. Rows are (batch, group, state), at C's
    strides sC_b, sC_g, sC_n (C may be a slice of a wider tensor)."""
    pid = tl.program_id(0)
    row = (pid // nblk).to(tl.int64)
    col = (pid % nblk) * BLK + tl.arange(0, BLK)
    src = (col // T) * T + (T - 1 - col % T)
    crow = (row // (groups * N)) * sC_b + ((row // N) % groups) * sC_g + (row % N) * sC_n
    v = tl.load(C_ptr + crow + src, mask=src < length, other=0.0)
    tl.store(Crev_ptr + row * lpad + col, v, mask=col < lpad)


@triton.jit
def _carry_bwd(
    qloc_ptr, dtsum_ptr, A_ptr, dlast_ptr, gst_ptr, dim, ntiles,
    N: tl.constexpr, BLK: tl.constexpr, K: tl.constexpr, HAS_DLAST: tl.constexpr, A_IS_LOG: tl.constexpr,
):
    """Reverse walk over tiles. gst has ntiles + 1 entries per batch: gst[k + 1] = gradient
    w.r.t. the state at the end of tile k (gst[ntiles] = dlast), gst[0] = gradient w.r.t. the
    initial state. Tiles are taken K at a time in descending order, as in `_carry_fwd`."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    idx = pid * BLK + tl.arange(0, BLK)
    m = idx < N * dim
    n = idx // dim
    d = idx % dim
    a2 = _load_a2(A_ptr + d.to(tl.int64) * N + n, m, A_IS_LOG)
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + (b * dim + d) * N + n, mask=m, other=0.0)
    else:
        carry = tl.zeros([BLK], dtype=tl.float32)
    ND = N * dim
    kk = tl.arange(0, K)
    top = ntiles - 1
    ql_p = qloc_ptr + b * ntiles * ND + (top - kk).to(tl.int64)[:, None] * ND + idx[None, :]
    ds_p = dtsum_ptr + b * ntiles * dim + (top - kk).to(tl.int64)[:, None] * dim + d[None, :]
    st_p = gst_ptr + b * (ntiles + 1) * ND + (top - kk).to(tl.int64)[:, None] * ND + idx[None, :]
    nt64 = b * 0 + ntiles
    tl.store(gst_ptr + b * (ntiles + 1) * ND + nt64 * ND + idx, carry, mask=m)
    for k0 in range(0, ntiles, K):
        km = ((top - k0 - kk) >= 0)[:, None] & m[None, :]
        ql = tl.load(ql_p, mask=km, other=0.0)
        ds = tl.load(ds_p, mask=km, other=0.0)
        dec = tl.exp2(a2[None, :] * ds)
        ac, bc = tl.associative_scan((dec, ql), 0, _pair_combine)
        before = bc + ac * carry[None, :]  # gradient w.r.t. the state before tile (top - k0 - i)
        tl.store(st_p, before, mask=km)
        carry = tl.sum(tl.where((kk == K - 1)[:, None], before, 0.0), axis=0)
        ql_p -= K * ND
        ds_p -= K * dim
        st_p -= K * ND


@triton.jit
def _fwd3_combine(cl, pl, vl, cr, pr, vr):
    # x_i = beta_i + c_{i-1} x_{i-1}: a segment is (c of its last element, P, V) with
    # x_last = V + P * y_in, y_in = c_before * x_before.
    return cr, pr * cl * pl, vr + pr * cl * vl


@triton.jit
def _bwd_main(
    u_ptr, delta_ptr, z_ptr, dout_ptr, A_ptr, B_ptr, C_ptr, Crev_ptr, D_ptr, bias_ptr,
    hst_ptr, gst_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dBp_ptr, dCp_ptr, dDp_ptr, dbiasp_ptr, out_ptr,
    dim, length, lpad, ntiles, dpg, s_b, s_d, sB_b, sB_g, sB_n, nsplit, n_dsub,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr, ACCUM: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    UNROLL: tl.constexpr, HAS_OUT: tl.constexpr, C_REV_LOAD: tl.constexpr, A_IS_LOG: tl.constexpr,
):
    """Per tile: h by a forward scan from the tile's start state, and g = dL/dh by a forward
    scan over the tile in reversed order (position i holds step T-1-i), then g is flipped back.
    This avoids Triton's reverse scan, which costs ~10x the shuffles of a forward one.
    dt and dy are flipped once per channel block; C comes pre-reversed per tile (Crev, written
    by `_reverse_tiles`: (batch, groups, N, ntiles*T)), or with C_REV_LOAD is loaded from C at
    reversed positions (no `_reverse_tiles` launch; loads that do not vectorise).
    dB / dC rows of the program's channels go to partial buffers (batch, nsplit, N, length):
    plain stores with one channel block per program (ACCUM=False), read-add-write otherwise."""
    pid = tl.program_id(0)  # splits vary fastest (B / C rows shared in L2)
    split = pid % nsplit
    tile = pid // nsplit
    b = tl.program_id(1).to(tl.int64)
    t = tile * T + tl.arange(0, T)
    t_mask = t < length
    LN2: tl.constexpr = 0.6931471805599453
    pbase = (b * nsplit + split) * N * length + t[None, :]  # [1, T]
    dBp = dBp_ptr + pbase
    dCp = dCp_ptr + pbase
    t_mask2 = t_mask[None, :]
    for dsub in range(n_dsub):
        dblk = split * n_dsub + dsub
        d = dblk * BD + tl.arange(0, BD)
        d_mask = d < dim
        mask = d_mask[:, None] & t_mask[None, :]
        row = b * s_b + d.to(tl.int64) * s_d
        ptrs = row[:, None] + t[None, :]
        g = (dblk * BD) // dpg
        bg = b * sB_b + g.to(tl.int64) * sB_g
        trow = t[None, :] + 0 * d[:, None]  # [BD, T], equal rows
        Bp = B_ptr + bg + trow
        Cp = C_ptr + bg + trow
        if C_REV_LOAD:  # C itself, read from the tile's end backwards (zero past the sequence)
            trow_r = (tile * T + (T - 1) - tl.arange(0, T))[None, :] + 0 * d[:, None]
            Crp = C_ptr + bg + trow_r
            crev_mask = d_mask[:, None] & (trow_r < length)
            crev_row = sB_n
        else:
            Crp = Crev_ptr + ((b * (dim // dpg) + g.to(tl.int64)) * N) * lpad + trow  # Crev: contiguous (b, G, N, lpad)
            crev_mask = d_mask[:, None]
            crev_row = lpad
        Ap = A_ptr + d.to(tl.int64) * N
        hp = hst_ptr + (b * (ntiles + 1) + tile) * N * dim + d
        gp = gst_ptr + (b * (ntiles + 1) + tile + 1) * N * dim + d
        a2 = _load_a2(Ap, d_mask, A_IS_LOG)
        Bn = tl.load(Bp, mask=mask, other=0.0).to(tl.float32)
        Cn = tl.load(Cp, mask=mask, other=0.0).to(tl.float32)
        Cn_r = tl.load(Crp, mask=crev_mask, other=0.0).to(tl.float32)
        h0 = tl.load(hp, mask=d_mask, other=0.0)
        gend = tl.load(gp, mask=d_mask, other=0.0)
        if ACCUM:
            pB = tl.load(dBp, mask=t_mask2 & (dsub > 0), other=0.0)
            pC = tl.load(dCp, mask=t_mask2 & (dsub > 0), other=0.0)
        _x, dt = _load_dt(delta_ptr + ptrs, bias_ptr, d, d_mask, mask, HAS_BIAS, SOFTPLUS)
        uf = tl.load(u_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        _do, _zf, _sz, dy = _load_dy(dout_ptr, z_ptr, ptrs, mask, HAS_Z)
        dtu = dt * uf
        dt_r = tl.flip(dt, 1)
        dy_r = tl.flip(dy, 1)
        y = tl.zeros([BD, T], dtype=tl.float32)
        ddt = tl.zeros([BD, T], dtype=tl.float32)
        ddtu = tl.zeros([BD, T], dtype=tl.float32)
        first = (tl.arange(0, T) == 0)[None, :]
        for n in tl.range(0, N, loop_unroll_factor=UNROLL):
            nx = (n + 1) % N
            a2_x = _load_a2(Ap + nx, d_mask, A_IS_LOG)
            Bn_x = tl.load(Bp + nx * sB_n, mask=mask, other=0.0).to(tl.float32)
            Cn_x = tl.load(Cp + nx * sB_n, mask=mask, other=0.0).to(tl.float32)
            Cn_rx = tl.load(Crp + nx * crev_row, mask=crev_mask, other=0.0).to(tl.float32)
            h0_x = tl.load(hp + nx * dim, mask=d_mask, other=0.0)
            gend_x = tl.load(gp + nx * dim, mask=d_mask, other=0.0)
            if ACCUM:  # previous channel blocks' partial rows (this program's own region)
                pB_x = tl.load(dBp + nx * length, mask=t_mask2 & (dsub > 0), other=0.0)
                pC_x = tl.load(dCp + nx * length, mask=t_mask2 & (dsub > 0), other=0.0)
            # h_t: forward scan in sequence order
            a = tl.exp2(dt * a2[:, None])
            bb = dtu * Bn
            # start state folded into the first input (see _fwd_out)
            _ac, h = tl.associative_scan((a, bb + tl.where(first, a * h0[:, None], 0.0)), 1, _pair_combine)
            y += h * Cn
            dCn = tl.sum(dy * h, axis=0, keep_dims=True)
            # g_t: forward scan in reversed order, flipped back
            a_r = tl.exp2(dt_r * a2[:, None])
            _c, P, V = tl.associative_scan((a_r, a_r * 0.0 + 1.0, dy_r * Cn_r), 1, _fwd3_combine)
            gr = tl.flip(V + P * gend[:, None], 1)
            dBn = tl.sum(gr * dtu, axis=0, keep_dims=True)
            if ACCUM:
                dBn += pB
                dCn += pC
                pB = pB_x
                pC = pC_x
            tl.store(dBp + n * length, dBn, mask=t_mask2)
            tl.store(dCp + n * length, dCn, mask=t_mask2)
            ddtu += gr * Bn
            gh = gr * (h - bb)  # g_t * a_t * h_{t-1}
            # dA (natural-log A) partial: sum_t g a h_{t-1} dt, written over the consumed g entry
            tl.store(gp + n * dim, tl.sum(gh * dt, axis=1), mask=d_mask)
            ddt += gh * (a2 * LN2)[:, None]
            a2 = a2_x
            Bn = Bn_x
            Cn = Cn_x
            Cn_r = Cn_rx
            h0 = h0_x
            gend = gend_x
        # per-element gradients; z / dout / delta are reloaded (cache hits) to keep registers low
        do, zf, sz, dy = _load_dy(dout_ptr, z_ptr, ptrs, mask, HAS_Z)
        if HAS_D:
            Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
            y += Dv[:, None] * uf
            du = ddtu * dt + dy * Dv[:, None]
            tl.store(dDp_ptr + (b * ntiles + tile) * dim + d, tl.sum(dy * uf, axis=1), mask=d_mask)
        else:
            du = ddtu * dt
        if HAS_Z:
            dz = do * y * sz * (1.0 + zf * (1.0 - sz))
            tl.store(dz_ptr + ptrs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
        if HAS_OUT:  # the forward's output, recomputed on the way (the caller did not keep it)
            if HAS_Z:
                o = y * zf * sz
            else:
                o = y
            tl.store(out_ptr + ptrs, o.to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(du_ptr + ptrs, du.to(du_ptr.dtype.element_ty), mask=mask)
        ddt += ddtu * uf
        if SOFTPLUS:
            x, _dt2 = _load_dt(delta_ptr + ptrs, bias_ptr, d, d_mask, mask, HAS_BIAS, False)
            ddt = ddt * tl.where(x > 20.0, 1.0, tl.sigmoid(x))
        ddt = tl.where(mask, ddt, 0.0)
        if HAS_BIAS:
            tl.store(dbiasp_ptr + (b * ntiles + tile) * dim + d, tl.sum(ddt, axis=1), mask=d_mask)
        tl.store(ddelta_ptr + ptrs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# configuration and launch
# ---------------------------------------------------------------------------------------------

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

@triton.jit
def _bwd_sums(gst_ptr, dA_ptr, dBCp_ptr, dBC_ptr, dDbp_ptr, dDb_ptr, batch, ntiles, dim, N, n_a, n_bc, k_bc, M_bc,
              BLK: tl.constexpr, ROWS: tl.constexpr):
    """The backward's partial sums in one launch, for short sequences (few tiles): programs
    [0, n_a) sum gst over batch and tiles into dA (dim, N) in A's layout; [n_a, n_a + n_bc) sum
    each group of k_bc consecutive partial dB / dC rows (M_bc long) into dBC, cast to its dtype;
    the rest sum dD / ddelta_bias's (2, batch * ntiles, dim) partials into dDb (2, dim). Each step
    loads a [ROWS x BLK] block, so ROWS independent rows are in flight per program (a loop of one
    row at a time is bound by load latency: 181 us at 1 x 1536 x 2048, NOTES.md variant 13)."""
    pid = tl.program_id(0)
    offs = tl.arange(0, BLK)
    rows = tl.arange(0, ROWS)[:, None]
    acc = tl.zeros([ROWS, BLK], dtype=tl.float32)
    if pid < n_a:
        idx = pid * BLK + offs  # flat (n, d) of one (N, dim) state entry
        m = (idx < N * dim)[None, :]
        n_rows = batch * ntiles
        for r0 in range(0, n_rows, ROWS):
            r = r0 + rows  # gst[b, 1 + k] for r = b * ntiles + k
            src = gst_ptr + ((r // ntiles) * (ntiles + 1) + r % ntiles + 1).to(tl.int64) * N * dim + idx[None, :]
            acc += tl.load(src, mask=m & (r < n_rows), other=0.0)
        tl.store(dA_ptr + (idx % dim) * N + idx // dim, tl.sum(acc, axis=0), mask=idx < N * dim)
    elif pid < n_a + n_bc:
        q = pid - n_a
        nblk = tl.cdiv(M_bc, BLK)
        row = (q // nblk).to(tl.int64)
        col = (q % nblk) * BLK + offs
        m = (col < M_bc)[None, :]
        src = dBCp_ptr + row * k_bc * M_bc + col[None, :]
        for k0 in range(0, k_bc, ROWS):
            k = k0 + rows
            acc += tl.load(src + k.to(tl.int64) * M_bc, mask=m & (k < k_bc), other=0.0)
        tl.store(dBC_ptr + row * M_bc + col, tl.sum(acc, axis=0).to(dBC_ptr.dtype.element_ty), mask=col < M_bc)
    else:
        q = pid - n_a - n_bc
        nblk = tl.cdiv(dim, BLK)
        c = q // nblk  # 0: dD, 1: ddelta_bias
        d = (q % nblk) * BLK + offs
        m = (d < dim)[None, :]
        n_rows = batch * ntiles
        src = dDbp_ptr + (c * n_rows).to(tl.int64) * dim + d[None, :]
        for j0 in range(0, n_rows, ROWS):
            j = j0 + rows
            acc += tl.load(src + j * dim, mask=m & (j < n_rows), other=0.0)
        tl.store(dDb_ptr + c * dim + d, tl.sum(acc, axis=0), mask=d < dim)


_SUMS_BLK, _SUMS_ROWS = 256, 16  # `_bwd_sums`: columns per program, rows loaded per step

# Per-kernel tile shapes; `scan_config` picks from these, the benchmark may override them.
CONFIG: dict[str, int] = {
    "T": 64,          # steps per tile (power of 2)
    "BD_FWD": 4,      # channels per program, forward kernels
    "BD_BWD": 4,      # channels per program, backward kernels
    "WARPS_FWD": 1,
    "WARPS_BWD": 1,
    "WARPS_STATE": 1,
    "BLK_CARRY": 64,       # (state, channel) pairs per carry program
    "K_CARRY": 32,         # tiles combined per step of the carry kernels
    "WARPS_CARRY": 1,
    "MAX_PARTIAL_BYTES": 4 << 30,  # cap on the backward's partial dB / dC buffers
    "MIN_PROGRAMS": 8192,  # backward programs to keep in flight (sets the channel split)
    "UNROLL": 1,           # unroll factor of the loops over states
    "BC_F32": False,       # convert B, C to fp32 once on the host (saves per-element converts)
    # Short sequences: one `_fwd_seq` launch instead of three when the sequence has at most
    # SEQ_MAX_TILES tiles of T_SEQ steps (0: never); one channel per program and tiles of 512
    # measured best up to 8192 steps (NOTES.md, variants 7 and 10). Only for a forward without gradients unless SEQ_GRAD: the backward tiles like
    # the forward's saved states, and it was tuned at T = 64 (with SEQ_GRAD it tiles by T_SEQ, with
    # BD_FWD / BD_BWD divided by T_SEQ / T so its [BD x T] register tiles keep their size).
    "SEQ_MAX_TILES": 16,
    "T_SEQ": 512,
    "BD_SEQ": 1,
    "WARPS_SEQ": 1,
    "SEQ_GRAD": False,
    # The backward's reductions (dA, dB / dC, dD / ddelta_bias) as one `_bwd_sums` launch when
    # batch * tiles is at most this (short, host-bound calls); PyTorch sums otherwise, which
    # spread long reductions over the whole GPU (NOTES.md, variant 11).
    "SUMS_MAX_ROWS": 64,
    # Read C reversed inside `_bwd_main` instead of one `_reverse_tiles` launch and a Crev buffer
    # (one launch and one allocation less per backward; unvectorised loads of C): a variant for
    # short, host-bound calls, not yet timed (NOTES.md, variant 12), so off.
    "C_REV_LOAD": False,
    # Short calls (batch x dim x length at most this), whose forward+backward is bound by the
    # host, launch less: under autograd the forward is `_fwd_seq` at the backward's tiles of T
    # (one launch instead of three), and `_bwd_tile_state` writes C reversed per tile (no
    # `_reverse_tiles` launch). Longer calls keep the three-kernel forward and the separate
    # reversal, which cost less device time there (NOTES.md, variants 7, 8 and 14). 0: never.
    "SHORT_CALL_ELEMS": 1 << 22,
    # Longer calls under autograd with at least this many rows (batch x dim; 0: never): the
    # forward is `_fwd_seq` on tiles of T_SEQ_ROWS steps (at most SEQ_MAX_TILES of them) writing
    # the tile states at the backward's T, in place of the three-kernel forward: one pass over
    # the inputs instead of two where the rows alone fill the GPU (NOTES.md, variant 16: -4% of
    # the scan's forward+backward at 8 x 1536 x 2048, -2.6 ms of a 130m training step; neutral
    # at 1,536 rows, so the threshold lies between).
    "SEQ_GRAD_ROWS": 8192,
    "T_SEQ_ROWS": 256,
}


def _pow2_divisor(n: int, cap: int) -> int:
    """Largest power of two <= cap that divides n."""
    p = 1
    while p * 2 <= cap and n % (p * 2) == 0:
        p *= 2
    return p


def _tile_steps(T: int, length: int) -> int:
    return max(16, min(T, triton.next_power_of_2(max(length, 1))))


def scan_config(batch: int, dim: int, length: int, groups: int, overrides: dict | None = None,
                needs_grad: bool = False) -> dict:
    """The tile shapes for one call; cfg["SEQ"] says whether the forward is `_fwd_seq`, and
    cfg["T"] is the tiling of hst / dtsum that the backward uses (`needs_grad`: one will run)."""
    cfg = dict(CONFIG)
    if _INTERPRET:  # small tiles keep the NumPy interpreter fast (explicit overrides still apply)
        cfg.update(T=min(cfg["T"], 16), BD_FWD=min(cfg["BD_FWD"], 4), BD_BWD=min(cfg["BD_BWD"], 4),
                   K_CARRY=min(cfg["K_CARRY"], 4), BLK_CARRY=min(cfg["BLK_CARRY"], 32),
                   T_SEQ=min(cfg["T_SEQ"], 32), T_SEQ_ROWS=min(cfg["T_SEQ_ROWS"], 32),
                   BD_SEQ=min(cfg["BD_SEQ"], 4))
    if overrides:
        cfg.update(overrides)
    T = _tile_steps(cfg["T"], length)
    T_seq = _tile_steps(cfg["T_SEQ"], length)
    dpg = dim // groups
    cfg["SHORT"] = batch * dim * length <= cfg["SHORT_CALL_ELEMS"]
    short_grad = needs_grad and cfg["SHORT"] and not cfg["SEQ_GRAD"]
    if short_grad:  # the single-launch forward, tiled as the backward is
        T_seq = T
    # many rows under autograd: the single-launch forward on long tiles, its saved states at T
    T_rows = _tile_steps(cfg["T_SEQ_ROWS"], length)
    split_grad = (needs_grad and not short_grad and not cfg["SEQ_GRAD"] and cfg["SEQ_GRAD_ROWS"] > 0
                  and batch * dim >= cfg["SEQ_GRAD_ROWS"] and T_rows > T
                  and triton.cdiv(length, T_rows) <= cfg["SEQ_MAX_TILES"])
    cfg["SUB"] = T_rows // T if split_grad else 1
    cfg["SEQ"] = short_grad or split_grad or (triton.cdiv(length, T_seq) <= cfg["SEQ_MAX_TILES"]
                                              and (cfg["SEQ_GRAD"] or not needs_grad))
    if split_grad:  # the backward keeps its T and its register tiles
        cfg["BD_SEQ"] = _pow2_divisor(dpg, cfg["BD_SEQ"])
    elif cfg["SEQ"]:
        shrink = max(1, T_seq // T)
        cfg["BD_FWD"] = max(1, cfg["BD_FWD"] // shrink)
        cfg["BD_BWD"] = max(1, cfg["BD_BWD"] // shrink)
        cfg["BD_SEQ"] = _pow2_divisor(dpg, cfg["BD_SEQ"])
        T = T_seq
    cfg["T"] = T  # the tiling of the saved states (and of the backward); `_fwd_seq` tiles by T * SUB
    cfg["BD_FWD"] = _pow2_divisor(dpg, cfg["BD_FWD"])
    cfg["BD_BWD"] = _pow2_divisor(dpg, cfg["BD_BWD"])
    return cfg


def _steps_contiguous(BC: Tensor) -> Tensor:
    """B / C as the kernels read them: steps contiguous, the batch, group and state strides free,
    so a row slice of a wider tensor (the Mamba block's x_proj output, in either of its layouts)
    is used in place; anything else is copied."""
    return BC if BC.stride(-1) == 1 else BC.contiguous()


def _bc_geometry(BC: Tensor) -> tuple[int, int, int, int, int]:
    """(groups, N, batch stride, group stride, state stride) of a (b, N, L) or (b, G, N, L) B / C
    whose steps are contiguous (`_steps_contiguous`)."""
    if BC.dim() == 3:
        return 1, BC.shape[1], BC.stride(0), 0, BC.stride(1)
    return BC.shape[1], BC.shape[2], BC.stride(0), BC.stride(1), BC.stride(2)


@functools.lru_cache(maxsize=256)
def _split_plan(batch: int, ntiles: int, length: int, N: int, groups: int, nblk_per_group: int,
                max_bytes: int, min_programs: int) -> int:
    """Channel blocks per backward program (n_dsub, a divisor of nblk_per_group). Each program
    accumulates the dB / dC rows of its n_dsub blocks in its own partial rows (cache-resident),
    so larger n_dsub means fewer partial rows to write and reduce; it is capped so that there are
    at least min_programs programs, and raised until the partial buffers fit in max_bytes."""
    divisors = [k for k in range(1, nblk_per_group + 1) if nblk_per_group % k == 0]
    best = 1
    for k in divisors:
        if batch * ntiles * groups * (nblk_per_group // k) >= min_programs:
            best = k
    for k in divisors:
        if k >= best and 2 * batch * groups * (nblk_per_group // k) * N * length * 4 <= max_bytes:
            return k
    return nblk_per_group


def _operand_key(t: Tensor | None) -> tuple | None:
    """What a plan depends on for one operand: shape, strides, dtype, device, 16-byte alignment."""
    if t is None:
        return None
    return t.shape, t.stride(), t.dtype, t.get_device(), t.data_ptr() % 16 == 0


_PLANS: dict[tuple, "_Plan"] = {}
_MAX_PLANS = 1024


class _Plan:
    """Everything about a call that its signature fixes -- every operand's shape, strides, dtype,
    device and alignment, and the flags: the tile configuration, which operands need a copy or a
    cast, the buffers' shapes and the forward's launches, bound once (`launch.Bound`). The
    backward's launches are bound on first use (`backward`). A second call with the same
    signature only allocates and launches: this is what keeps a short scan's host time small."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, want_last, overrides,
                 needs_grad, a_is_log=False):
        self.softplus, self.want_last, self.a_is_log = softplus, want_last, a_is_log
        self.device = u.get_device()
        self.dtypes = (B.dim(), B.dtype, C.dtype, A.dtype, None if D is None else D.dtype,
                       None if delta_bias is None else delta_bias.dtype,
                       None if initial_state is None else initial_state.dtype)
        # u, delta, z (and out and the gradients, allocated like u) share one layout: u's when
        # the kernels take it in place, else batch-major; the others are copied where they differ
        u_in_place = rows_in_place(u)
        rows = row_strides(u, None if u_in_place else (u.shape[1] * u.shape[2], u.shape[2], 1))
        self.copy = {"u": not u_in_place, "delta": row_strides(delta) != rows,
                     "z": z is not None and row_strides(z) != rows}
        # B / C as the kernels read them: as they are, with their steps made contiguous, or, where
        # their strides then differ (the kernels take one set for both), both contiguous
        B2, C2 = _steps_contiguous(B), _steps_contiguous(C)
        self.bc_layout = None if (B2 is B and C2 is C) else _steps_contiguous
        if B2.stride() != C2.stride():
            self.bc_layout = Tensor.contiguous
            B2, C2 = B2.contiguous(), C2.contiguous()
        batch, dim, length = u.shape
        cfg = scan_config(batch, dim, length, B.shape[1] if B.dim() == 4 else 1, overrides, needs_grad)
        self.bc_f32 = cfg["BC_F32"]
        if self.bc_f32:  # a cast may change the strides: the geometry is the converted one's
            B2, C2 = B2.float(), C2.float()
        groups, N, sB_b, sB_g, sB_n = _bc_geometry(B2)
        # A_log (a_is_log) in any float dtype: the kernels turn it into A as they load it
        self.cast = {"A": not A.is_contiguous() or (A.dtype != torch.float32 and not a_is_log),
                     # D and delta_bias in any float dtype: the kernels convert them as they load
                     "D": D is not None and not D.is_contiguous(),
                     "bias": delta_bias is not None and not delta_bias.is_contiguous(),
                     "h0": initial_state is not None and (initial_state.dtype != torch.float32
                                                          or not initial_state.is_contiguous())}
        self.cfg, self.batch, self.dim, self.length, self.groups, self.N = cfg, batch, dim, length, groups, N
        self.strides = (rows[0], rows[1], sB_b, sB_g, sB_n)  # s_b, s_d of u's layout; B / C's
        self.has = {"D": D is not None, "z": z is not None, "bias": delta_bias is not None,
                    "h0": initial_state is not None}
        T = cfg["T"]
        self.ntiles = ntiles = triton.cdiv(length, T)
        self.hst_shape, self.dtsum_shape = (batch, ntiles + 1, N, dim), (batch, ntiles, dim)
        self.hloc_shape = (batch, ntiles, N, dim)
        dpg = dim // groups
        ints = (dim, length, ntiles, dpg, *self.strides)
        flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                     UNROLL=cfg["UNROLL"], A_IS_LOG=a_is_log)
        if cfg["SEQ"]:
            BD = cfg["BD_SEQ"]
            self.fwd = (Bound(_fwd_seq, (triton.cdiv(dim, BD), batch), ints, N=N, BD=BD, T=T * cfg["SUB"],
                              SUB=cfg["SUB"], **flags, HAS_H0=initial_state is not None, HAS_LAST=want_last,
                              num_warps=cfg["WARPS_SEQ"]),)
        else:
            BD = cfg["BD_FWD"]
            grid = (ntiles * triton.cdiv(dim, BD), batch)
            blk, K = cfg["BLK_CARRY"], cfg["K_CARRY"]
            self.fwd = (
                Bound(_fwd_tile_state, grid, ints, N=N, BD=BD, T=T, HAS_BIAS=flags["HAS_BIAS"], SOFTPLUS=softplus,
                      UNROLL=cfg["UNROLL"], A_IS_LOG=a_is_log, num_warps=cfg["WARPS_STATE"]),
                Bound(_carry_fwd, (triton.cdiv(N * dim, blk), batch), (dim, ntiles), N=N, BLK=blk, K=K,
                      HAS_H0=initial_state is not None, A_IS_LOG=a_is_log, num_warps=cfg["WARPS_CARRY"]),
                Bound(_fwd_out, grid, ints, N=N, BD=BD, T=T, **flags, num_warps=cfg["WARPS_FWD"]),
            )
        self._backward: dict[tuple, _BackwardPlan] = {}

    def operands(self, u, delta, A, B, C, D, z, delta_bias, initial_state):
        """The operands in the kernels' layouts and dtypes (only the conversions this signature needs)."""
        copy, cast = self.copy, self.cast
        if copy["u"]:
            u = u.contiguous()
        if copy["delta"]:
            delta = in_layout(delta, u)
        if copy["z"]:
            z = in_layout(z, u)
        if self.bc_layout is not None:
            B, C = self.bc_layout(B), self.bc_layout(C)
        if self.bc_f32:
            B, C = B.float(), C.float()
        if cast["A"]:
            A = A.contiguous() if self.a_is_log else A.float().contiguous()
        if cast["D"]:
            D = D.contiguous()
        if cast["bias"]:
            delta_bias = delta_bias.contiguous()
        if cast["h0"]:
            initial_state = initial_state.float().contiguous()
        return u, delta, A, B, C, D, z, delta_bias, initial_state

    def forward(self, u, delta, A, B, C, D, z, bias, h0):
        """Operands from `operands`. Returns out, the last state (batch, dim, N) fp32 when
        want_last (else None), hst and dtsum for the backward."""
        out = torch.empty_like(u)
        hst = u.new_empty(self.hst_shape, dtype=torch.float32)
        dtsum = u.new_empty(self.dtsum_shape, dtype=torch.float32)
        stream = current_stream(self.device)
        dummy = A
        if self.cfg["SEQ"]:
            last = u.new_empty((self.batch, self.dim, self.N), dtype=torch.float32) if self.want_last else None
            self.fwd[0](stream, u, delta, z if z is not None else u, out, A, B, C, D if D is not None else dummy,
                        bias if bias is not None else dummy, h0 if h0 is not None else dummy, hst, dtsum,
                        last if last is not None else dummy)
            return out, last, hst, dtsum
        hloc = u.new_empty(self.hloc_shape, dtype=torch.float32)
        tile_state, carry, output = self.fwd
        tile_state(stream, u, delta, A, B, bias if bias is not None else dummy, hloc, dtsum)
        carry(stream, hloc, dtsum, A, h0 if h0 is not None else dummy, hst)
        del hloc
        output(stream, u, delta, z if z is not None else u, out, A, B, C, D if D is not None else dummy,
               bias if bias is not None else dummy, hst)
        # last state (b, dim, N) = the entry after the last tile
        last = hst[:, self.ntiles].transpose(1, 2).contiguous() if self.want_last else None
        return out, last, hst, dtsum

    def backward(self, has_dlast: bool, has_out: bool, collapse_groups: bool,
                 aligned: tuple[bool, ...]) -> "_BackwardPlan":
        key = (has_dlast, has_out, collapse_groups, aligned)
        plan = self._backward.get(key)
        if plan is None:
            plan = self._backward[key] = _BackwardPlan(self, has_dlast, has_out, collapse_groups)
        return plan


class _Scratch:
    """Named buffers at fixed offsets (64-byte aligned) of one fp32 allocation: one allocation
    instead of one per buffer, and, once a plan's launches are compiled, raw addresses instead of
    tensor views (Triton's launcher looks every tensor argument up in the driver; an integer it
    takes as it is). A buffer of shape (2, ...) also names its two halves."""

    def __init__(self, buffers: list[tuple[str, tuple[int, ...], torch.dtype, tuple[str, str] | None]]) -> None:
        self.layout, self.offsets, off = [], [], 0
        for name, shape, dtype, halves in buffers:
            nbytes = math.prod(shape) * dtype.itemsize
            self.layout.append((name, off, shape, dtype, halves))
            self.offsets.append((name, off))
            if halves:
                self.offsets += [(halves[0], off), (halves[1], off + nbytes // 2)]
            off += -(-nbytes // 64) * 64
        self.elems = max(off // 4, 1)

    def views(self, ws: Tensor) -> dict[str, Tensor]:
        raw, out = ws.view(torch.uint8), {}
        for name, off, shape, dtype, halves in self.layout:
            t = out[name] = raw[off:off + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
            if halves:
                out[halves[0]], out[halves[1]] = t[0], t[1]
        return out

    def addresses(self, base: int) -> dict[str, int]:
        return {name: base + off for name, off in self.offsets}


class _BackwardPlan:
    """The backward's buffer shapes and bound launches for one forward plan."""

    def __init__(self, fp: _Plan, has_dlast: bool, has_out: bool, collapse_groups: bool) -> None:
        cfg, batch, dim, length, groups, N = fp.cfg, fp.batch, fp.dim, fp.length, fp.groups, fp.N
        T, BD, ntiles = cfg["T"], cfg["BD_BWD"], fp.ntiles
        dpg = dim // groups
        sB_b, sB_g, sB_n = fp.strides[2:]
        has_bias, has_d, has_z = fp.has["bias"], fp.has["D"], fp.has["z"]
        nblk_pg = dpg // BD
        n_dsub = _split_plan(batch, ntiles, length, N, groups, nblk_pg, cfg["MAX_PARTIAL_BYTES"], cfg["MIN_PROGRAMS"])
        nsplit = groups * (nblk_pg // n_dsub)
        self.lpad = lpad = ntiles * T
        self.qloc_shape, self.gst_shape = (batch, ntiles, N, dim), (batch, ntiles + 1, N, dim)
        self.dBC_shape = (2, batch, nsplit, N, length)
        self.dBC_split = (2, batch, groups, nsplit // groups, N, length)
        self.dDb_shape = (2, batch, ntiles, dim) if (has_d or has_bias) else None
        self.Crev_shape = (batch, groups, N, lpad)
        # the backward's scratch buffers (qloc, gst, the partial sums, Crev) as one allocation
        self.scratch = _Scratch(
            [("qloc", self.qloc_shape, torch.float32, None), ("gst", self.gst_shape, torch.float32, None),
             ("dBC_partial", self.dBC_shape, torch.float32, ("dB_partial", "dC_partial"))]
            + ([("dDb_partial", self.dDb_shape, torch.float32, ("dD_partial", "dbias_partial"))]
               if self.dDb_shape else [])
            + ([] if cfg["C_REV_LOAD"] else
               [("Crev", self.Crev_shape, torch.float32 if fp.bc_f32 else fp.dtypes[2], None)]))
        blk, K = cfg["BLK_CARRY"], cfg["K_CARRY"]
        nblk = triton.cdiv(lpad, 1024)
        # C reversed per tile: read reversed by `_bwd_main` (C_REV_LOAD), written by the tile-state
        # kernel (short calls), or by its own `_reverse_tiles` launch
        self.crev_in_state = not cfg["C_REV_LOAD"] and cfg["SHORT"]
        self.tile_state = Bound(_bwd_tile_state, (ntiles * triton.cdiv(dim, cfg["BD_FWD"]), batch),
                                (dim, length, ntiles, dpg, *fp.strides), N=N, BD=cfg["BD_FWD"], T=T, HAS_Z=has_z,
                                HAS_BIAS=has_bias, SOFTPLUS=fp.softplus, UNROLL=cfg["UNROLL"],
                                WRITE_CREV=self.crev_in_state, A_IS_LOG=fp.a_is_log, num_warps=cfg["WARPS_STATE"])
        self.carry = Bound(_carry_bwd, (triton.cdiv(N * dim, blk), batch), (dim, ntiles), N=N, BLK=blk, K=K,
                           HAS_DLAST=has_dlast, A_IS_LOG=fp.a_is_log, num_warps=cfg["WARPS_CARRY"])
        self.reverse = None if cfg["C_REV_LOAD"] or self.crev_in_state else Bound(
            _reverse_tiles, (batch * groups * N * nblk,), (length, lpad, nblk, groups, N, sB_b, sB_g, sB_n), T=T,
            BLK=1024,
            num_warps=4)
        self.bc_dtype = fp.dtypes[1] if fp.dtypes[1] == fp.dtypes[2] else torch.float32
        self.sums = None
        if batch * ntiles <= cfg["SUMS_MAX_ROWS"]:
            g_out = 1 if collapse_groups else groups
            self.dBC_out = (2, batch, N, length) if collapse_groups else (2, batch, groups, N, length)
            blk = _SUMS_BLK
            n_a, n_bc = triton.cdiv(N * dim, blk), 2 * batch * g_out * triton.cdiv(N * length, blk)
            n_d = 2 * triton.cdiv(dim, blk) if self.dDb_shape is not None else 0
            self.sums = Bound(_bwd_sums, (n_a + n_bc + n_d,), (batch, ntiles, dim, N, n_a, n_bc, nsplit // g_out,
                                                                N * length), BLK=blk, ROWS=_SUMS_ROWS, num_warps=4)
        self.main = Bound(_bwd_main, (ntiles * nsplit, batch),
                          (dim, length, lpad, ntiles, dpg, *fp.strides, nsplit, n_dsub),
                          N=N, BD=BD, T=T, ACCUM=n_dsub > 1, HAS_D=has_d, HAS_Z=has_z, HAS_BIAS=has_bias,
                          SOFTPLUS=fp.softplus, UNROLL=cfg["UNROLL"], num_warps=cfg["WARPS_BWD"], HAS_OUT=has_out,
                          C_REV_LOAD=cfg["C_REV_LOAD"], A_IS_LOG=fp.a_is_log)


def plan_for(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus: bool, want_last: bool,
             overrides: dict | None = None, needs_grad: bool = False, a_is_log: bool = False) -> _Plan:
    """The plan of this call's signature: built, after checking the inputs against the contract,
    the first time the signature is seen (a signature that passed once passes again)."""
    key = (_operand_key(u), _operand_key(delta), _operand_key(A), _operand_key(B), _operand_key(C),
           _operand_key(D), _operand_key(z), _operand_key(delta_bias), _operand_key(initial_state),
           softplus, want_last, needs_grad, a_is_log, None if not overrides else tuple(sorted(overrides.items())))
    plan = _PLANS.get(key)
    if plan is None:
        check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, allow_float64=False)
        if u.shape[-1] == 0:
            raise ValueError("selective_scan_triton needs length >= 1")
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = _Plan(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, want_last,
                                   overrides, needs_grad, a_is_log)
    return plan


def _bwd(plan: _Plan, dout, dlast, u, delta, A, B, C, D, z, delta_bias, hst, dtsum, collapse_groups=False,
         out=None):
    """The backward's launches, on the operands `plan.operands` gave the forward. With `out` (u's
    shape and layout), the forward's output is recomputed into it as a by-product (a caller that
    saved no output needs it). Returns du, ddelta, dA (dim, N), dBC (2, b, N, L) or
    (2, b, G, N, L) in B's dtype when B and C share one (else fp32), dD, dz, ddelta_bias,
    dh0 (b, dim, N); dA, dD, ddelta_bias and dh0 in fp32."""
    dout = in_layout(dout, u)  # the kernels read it at u's strides
    bp = plan.backward(dlast is not None, out is not None, collapse_groups,
                       (dout.data_ptr() % 16 == 0, u.data_ptr() % 16 == 0, delta.data_ptr() % 16 == 0))
    stream = current_stream(plan.device)
    dummy = A
    has_bias = delta_bias is not None
    ws = u.new_empty((bp.scratch.elems,), dtype=torch.float32)
    # every scratch buffer is a fixed offset into ws: the launches take raw addresses once they
    # have compiled (`sums`, the last, has), except where a buffer must be a tensor (Triton's own
    # launch path, PyTorch's sums, dh0)
    as_tensors = bp.sums is None or plan.has["h0"] or not bp.sums.compiled or through_triton()
    sc = bp.scratch.views(ws) if as_tensors else bp.scratch.addresses(ws.data_ptr())
    qloc, gst, dBp, dCp = sc["qloc"], sc["gst"], sc["dB_partial"], sc["dC_partial"]
    # C reversed inside every tile (batch * groups * N * lpad), for the reversed scan; with
    # C_REV_LOAD `_bwd_main` reads C reversed itself
    Crev = C if plan.cfg["C_REV_LOAD"] else sc["Crev"]
    bp.tile_state(stream, dout, z if z is not None else u, delta, A, C, delta_bias if has_bias else dummy, qloc,
                  Crev if bp.crev_in_state else dummy)
    bp.carry(stream, qloc, dtsum, A, dlast if dlast is not None else dummy, gst)
    du = torch.empty_like(u)
    ddelta = torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    dDbp = sc.get("dDb_partial")
    dDp = sc["dD_partial"] if D is not None else dummy
    dbp = sc["dbias_partial"] if has_bias else dummy
    if bp.reverse is not None:
        bp.reverse(stream, C, Crev)
    bp.main(stream, u, delta, z if z is not None else u, dout, A, B, C, Crev, D if D is not None else dummy,
            delta_bias if has_bias else dummy, hst, gst, du, ddelta, dz if dz is not None else du, dBp, dCp,
            dDp, dbp, out if out is not None else du)
    if bp.sums is not None:
        dA = u.new_empty((plan.dim, plan.N), dtype=torch.float32)
        dBC = u.new_empty(bp.dBC_out, dtype=bp.bc_dtype)
        dDb = u.new_empty((2, plan.dim), dtype=torch.float32) if dDbp is not None else None
        bp.sums(stream, gst, dA, dBp, dBC, dDbp if dDbp is not None else dummy, dDb if dDb is not None else dummy)
    else:
        dBCp = sc["dBC_partial"]
        dA = gst[:, 1:].sum(dim=(0, 1)).t()  # (dim, N), natural-log A
        dBC = dBCp.view(bp.dBC_split)
        dBC = dBC.sum(dim=(2, 3)) if collapse_groups else dBC.sum(3)  # (2, b, N, L) or (2, b, G, N, L)
        dBC = dBC if bp.bc_dtype == torch.float32 else dBC.to(bp.bc_dtype)
        dDb = dDbp.sum(dim=(1, 2)) if dDbp is not None else None
    dD = dbias = None
    if dDb is not None:
        dD, dbias = dDb.unbind(0)
        dD, dbias = (dD if D is not None else None), (dbias if has_bias else None)
    dh0 = gst[:, 0].transpose(1, 2) if plan.has["h0"] else None
    return du, ddelta, dA, dBC, dD, dz, dbias, dh0


def _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, want_last, overrides,
             needs_grad: bool = False, a_is_log: bool = False):
    """The plan of this call, the operands in the kernels' layouts and dtypes, then the forward
    (`a_is_log`: A is given as A_log). Returns out, last (or None), the tensors the backward
    needs, the plan."""
    plan = plan_for(u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, want_last, overrides, needs_grad,
                    a_is_log)
    ops = plan.operands(u, delta, A, B, C, D, z, delta_bias, initial_state)
    out, last, hst, dtsum = plan.forward(*ops)
    return out, last, (*ops[:8], hst, dtsum), plan


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, want_last, overrides,
                a_is_log):
        out, last, saved, plan = _forward(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                          delta_softplus, want_last, overrides, needs_grad=True, a_is_log=a_is_log)
        ctx.save_for_backward(*saved)
        ctx.plan = plan
        ctx.set_materialize_grads(False)
        return (out, last) if want_last else out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        u, delta, A32, B, C, Df, z, bias, hst, dtsum = ctx.saved_tensors
        plan = ctx.plan
        bdim, Bdt, Cdt, Adt, Ddt, biasdt, h0dt = plan.dtypes
        dout = torch.zeros_like(u) if dout is None else dout
        dlast = dlast.float().contiguous() if dlast is not None else None
        du, ddelta, dA, dBC, dD, dz, dbias, dh0 = _bwd(plan, dout, dlast, u, delta, A32, B, C, Df, z, bias, hst,
                                                       dtsum, collapse_groups=bdim == 3)
        if Bdt == Cdt:  # dBC is in their dtype already
            dB, dC = dBC.unbind(0)
        else:
            dB, dC = dBC[0].to(Bdt), dBC[1].to(Cdt)
        if plan.a_is_log:  # A = -exp(A_log): dL/dA_log = dL/dA * A
            dA = dA * -torch.exp(A32.float())
        return (du, ddelta, _as(dA, Adt), dB, dC, _as(dD, Ddt), dz, _as(dbias, biasdt), _as(dh0, h0dt),
                None, None, None, None)


def _as(grad: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
    """An fp32 gradient in its input's dtype (no op where it is fp32 already)."""
    return grad if grad is None or dtype == torch.float32 else grad.to(dtype)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
    A_is_log: bool = False,
    _config: dict | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused selective scan (kernels/CONTRACT.md semantics) on CUDA tensors, or on CPU tensors under
    TRITON_INTERPRET=1. Differentiable in u, delta, A, B, C, D, z, delta_bias and initial_state.
    With A_is_log, A is A_log (A = -exp(A_log)) and its gradient is the one of A_log.
    The inputs are checked against the contract the first time their signature is seen."""
    if not u.is_cuda and not _INTERPRET:
        raise ValueError(
            "selective_scan_triton needs CUDA tensors (or TRITON_INTERPRET=1 set before import "
            "to run the kernels on the CPU)"
        )
    args = (u, delta, A, B, C, D, z, delta_bias, initial_state,
            bool(delta_softplus), bool(return_last_state), _config)
    if needs_autograd(*args[:9]):
        result = _SelectiveScanFn.apply(*args, bool(A_is_log))
        out, last = result if return_last_state else (result, None)
    else:  # nothing to differentiate: no autograd node, nothing saved
        out, last, _saved, _plan = _forward(*args, a_is_log=bool(A_is_log))
    return (out, last) if return_last_state else out
