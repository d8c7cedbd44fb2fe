"""Triton kernels of the fused residual add + RMSNorm, forward and backward;
seqbench.kernels.norm validates the inputs and dispatches here (semantics: norm/reference.py)."""

from __future__ import annotations

import os
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqbench.kernels.backend import needs_autograd
from seqbench.kernels.launch import launch

__all__ = ["add_rms_norm_triton"]



@triton.jit
def _fwd_kernel(x_ptr, res_ptr, w_ptr, out_ptr, new_res_ptr, rstd_ptr, n_rows, d, stride_x, stride_res, eps,
                ROWS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    row_mask = rows < n_rows
    col_mask = cols < d
    mask = row_mask[:, None] & col_mask[None, :]
    rows = rows.to(tl.int64)
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(res_ptr + rows[:, None] * stride_res + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    offs = rows[:, None] * d + cols[None, :]
    r = x.to(new_res_ptr.dtype.element_ty)
    tl.store(new_res_ptr + offs, r, mask=mask)
    r = r.to(tl.float32)  # the norm sees new_residual as stored
    rstd = tl.rsqrt(tl.sum(r * r, axis=1) / d + eps)
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    y = r * rstd[:, None] * w[None, :]
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(dy_ptr, dres_out_ptr, r_ptr, w_ptr, rstd_ptr, da_ptr, db_ptr, dw_ptr,
                n_rows, d, stride_dy, stride_dres_out, tiles_per_program,
                ROWS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_DRES_OUT: tl.constexpr,
                STORE_A: tl.constexpr, STORE_B: tl.constexpr, HAS_DW: tl.constexpr):
    """dr = rstd * (g - xhat * mean(g * xhat)) + d_new_residual with g = dy * w, stored in up to two
    dtypes (da, db); this program's rows' sum of dy * xhat goes to row pid of dw (fp32)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < d
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)  # reduced over rows once, at the end
    first = pid.to(tl.int64) * tiles_per_program * ROWS
    for t in range(tiles_per_program):
        rows = first + t * ROWS + tl.arange(0, ROWS)
        row_mask = rows < n_rows
        mask = row_mask[:, None] & col_mask[None, :]
        offs = rows[:, None] * d + cols[None, :]
        r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        xhat = r * rstd[:, None]
        g = dy * w[None, :]
        dr = rstd[:, None] * (g - xhat * (tl.sum(g * xhat, axis=1) / d)[:, None])
        if HAS_DRES_OUT:
            dr += tl.load(dres_out_ptr + rows[:, None] * stride_dres_out + cols[None, :], mask=mask,
                          other=0.0).to(tl.float32)
        if STORE_A:
            tl.store(da_ptr + offs, dr.to(da_ptr.dtype.element_ty), mask=mask)
        if STORE_B:
            tl.store(db_ptr + offs, dr.to(db_ptr.dtype.element_ty), mask=mask)
        if HAS_DW:
            dw += dy * xhat
    if HAS_DW:
        tl.store(dw_ptr + pid * d + cols, tl.sum(dw, axis=0), mask=col_mask)


def _config(d: int) -> tuple[int, int, int]:
    """(ROWS, BLOCK_D, num_warps): a tile of ~4096 elements (several rows when d is small), about 16
    per thread, so each thread issues a few 16-byte loads per tensor. The interpreter gets ~256-element
    tiles so that the small test shapes still span several tiles and programs."""
    block_d = triton.next_power_of_2(d)
    target = 256 if os.environ.get("TRITON_INTERPRET") == "1" else 4096
    rows = max(1, target // block_d)
    num_warps = min(16, max(1, rows * block_d // 512))
    return rows, block_d, num_warps


@lru_cache(maxsize=None)
def _bwd_programs(device: torch.device) -> int:
    """Backward programs: 4 per SM (each loops over its share of row tiles), so the d_weight partial
    sums are (4 * SMs, d) fp32 however many rows there are; 3 on the CPU (interpreter)."""
    if device.type != "cuda":
        return 3
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


def _rows(t: Tensor, d: int) -> Tensor:
    """t as (M, d) with unit stride along d (a view when rows are evenly strided)."""
    t = t.reshape(-1, d)
    return t if t.stride(1) == 1 else t.contiguous()


def _add_rms_norm_fwd(hidden, residual, weight, eps, res_dtype, out_dtype):
    """The forward kernel: (normed, new_residual, weight as read, rstd)."""
    d = hidden.shape[-1]
    x = _rows(hidden, d)
    res = _rows(residual, d) if residual is not None else x
    w = weight.contiguous()
    n_rows = x.shape[0]
    normed = torch.empty(hidden.shape, dtype=out_dtype, device=hidden.device)
    new_residual = torch.empty(hidden.shape, dtype=res_dtype, device=hidden.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=hidden.device)
    rows, block_d, num_warps = _config(d)
    launch(_fwd_kernel, (triton.cdiv(n_rows, rows),), x, res, w, normed, new_residual, rstd,
           n_rows, d, x.stride(0), res.stride(0), eps,
           ROWS=rows, BLOCK_D=block_d, HAS_RESIDUAL=residual is not None, num_warps=num_warps)
    return normed, new_residual, w, rstd


class _AddRMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, residual, weight, eps, res_dtype, out_dtype):
        ctx.set_materialize_grads(False)
        normed, new_residual, w, rstd = _add_rms_norm_fwd(hidden, residual, weight, eps, res_dtype, out_dtype)
        ctx.save_for_backward(new_residual, w, rstd)
        ctx.hidden_dtype = hidden.dtype
        ctx.residual_dtype = residual.dtype if residual is not None else None
        return normed, new_residual

    @staticmethod
    def backward(ctx, d_normed, d_new_residual):
        new_residual, w, rstd = ctx.saved_tensors
        need_h, need_r, need_w = ctx.needs_input_grad[:3]
        # one fp32 gradient row serves hidden and residual: store it once per distinct dtype needed
        dtypes = [ctx.hidden_dtype] if need_h else []
        if need_r and ctx.residual_dtype not in dtypes:
            dtypes.append(ctx.residual_dtype)
        d_weight = None
        if d_normed is None:  # normed unused: the gradient is d_new_residual alone
            if d_new_residual is None:
                return None, None, None, None, None, None
            grads = {dt: d_new_residual.to(dt) for dt in dtypes}
        else:
            shape, d = new_residual.shape, new_residual.shape[-1]
            r = new_residual.view(-1, d)
            n_rows = r.shape[0]
            dy = _rows(d_normed, d)
            dres_out = _rows(d_new_residual, d) if d_new_residual is not None else dy
            grads = {dt: torch.empty(shape, dtype=dt, device=r.device) for dt in dtypes}
            da, db = (list(grads.values()) + [r, r])[:2]
            rows, block_d, num_warps = _config(d)
            n_tiles = triton.cdiv(n_rows, rows)
            tiles_per_program = triton.cdiv(n_tiles, _bwd_programs(r.device))
            n_programs = triton.cdiv(n_tiles, tiles_per_program)
            dw = torch.empty((n_programs, d), dtype=torch.float32, device=r.device) if need_w else rstd
            launch(_bwd_kernel, (n_programs,), dy, dres_out, r, w, rstd, da, db, dw,
                   n_rows, d, dy.stride(0), dres_out.stride(0), tiles_per_program,
                   ROWS=rows, BLOCK_D=block_d, HAS_DRES_OUT=d_new_residual is not None,
                   STORE_A=len(dtypes) > 0, STORE_B=len(dtypes) > 1, HAS_DW=need_w, num_warps=num_warps)
            d_weight = dw.sum(0).to(w.dtype) if need_w else None
        d_hidden = grads[ctx.hidden_dtype] if need_h else None
        d_residual = grads[ctx.residual_dtype] if need_r else None
        return d_hidden, d_residual, d_weight, None, None, None


def add_rms_norm_triton(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float,
                        residual_dtype: torch.dtype, out_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The Triton path (inputs validated by seqbench.kernels.norm); differentiable. With nothing
    to differentiate (inference) the kernel runs without an autograd node: no Function.apply on
    the host, nothing saved."""
    if needs_autograd(hidden, residual, weight):
        return _AddRMSNormFn.apply(hidden, residual, weight, eps, residual_dtype, out_dtype)
    return _add_rms_norm_fwd(hidden, residual, weight, eps, residual_dtype, out_dtype)[:2]
