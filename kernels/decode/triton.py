"""The fused Triton kernel of one decode step of the selective scan; seqbench.kernels.decode
validates the inputs and dispatches here (semantics: decode/reference.py)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqbench.kernels.launch import launch

__all__ = ["selective_state_update_triton"]

_LOG2E = 1.4426950408889634


@triton.jit
def _softplus(x):
    e = tl.exp(x)
    w = 1.0 + e
    lp = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    dim, n_state, dpg, s_sb, s_sd, s_xb, s_dtb, s_zb, s_yb, s_Bb, s_Bg, s_Cb, s_Cg,
    BD: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    A_IS_LOG: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    dblk = tl.program_id(1)
    d = dblk * BD + tl.arange(0, BD)
    n = tl.arange(0, NP)
    dm = d < dim
    nm = n < n_state
    m2 = dm[:, None] & nm[None, :]
    d64 = d.to(tl.int64)
    sp = state_ptr + b * s_sb + d64[:, None] * s_sd + n[None, :]
    h = tl.load(sp, mask=m2, other=0.0)
    xv = tl.load(x_ptr + b * s_xb + d, mask=dm, other=0.0).to(tl.float32)
    dtv = tl.load(dt_ptr + b * s_dtb + d, mask=dm, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dtv += tl.load(bias_ptr + d, mask=dm, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dtv = _softplus(dtv)
    g = (d // dpg).to(tl.int64)
    Bv = tl.load(B_ptr + b * s_Bb + g[:, None] * s_Bg + n[None, :], mask=m2, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * s_Cb + g[:, None] * s_Cg + n[None, :], mask=m2, other=0.0).to(tl.float32)
    A2 = tl.load(A_ptr + d64[:, None] * n_state + n[None, :], mask=m2, other=0.0).to(tl.float32)
    if A_IS_LOG:  # A = -exp(A_log), computed here rather than by two more kernels per step
        A2 = -tl.exp(A2)
    A2 = A2 * 1.4426950408889634
    h = tl.exp2(dtv[:, None] * A2) * h + (dtv * xv)[:, None] * Bv
    tl.store(sp, h, mask=m2)
    y = tl.sum(h * Cv, axis=1)
    if HAS_D:
        y += tl.load(D_ptr + d, mask=dm, other=0.0).to(tl.float32) * xv
    if HAS_Z:
        zv = tl.load(z_ptr + b * s_zb + d, mask=dm, other=0.0).to(tl.float32)
        y = y * zv * tl.sigmoid(zv)
    tl.store(y_ptr + b * s_yb + d, y.to(y_ptr.dtype.element_ty), mask=dm)


def selective_state_update_triton(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                  D: Tensor | None, z: Tensor | None, dt_bias: Tensor | None, dt_softplus: bool,
                                  A_is_log: bool) -> Tensor:
    """The Triton decode step (inputs validated by seqbench.kernels.decode); state updated in place."""
    batch, dim, n = state.shape
    if state.stride(2) != 1:
        raise ValueError("state's last dimension must be contiguous (it is updated in place)")
    Bg = B if B.dim() == 3 else B.unsqueeze(1)
    Cg = C if C.dim() == 3 else C.unsqueeze(1)
    Bg = Bg if Bg.stride(2) == 1 else Bg.contiguous()
    Cg = Cg if Cg.stride(2) == 1 else Cg.contiguous()
    x = x if x.stride(1) == 1 else x.contiguous()
    dt = dt if dt.stride(1) == 1 else dt.contiguous()
    if z is not None and z.stride(1) != 1:
        z = z.contiguous()
    A = A.contiguous()
    y = torch.empty((batch, dim), device=x.device, dtype=x.dtype)
    NP = triton.next_power_of_2(n)
    BD = max(1, min(triton.next_power_of_2(dim), max(1, 2048 // NP), 64))
    grid = (batch, triton.cdiv(dim, BD))
    dummy = A
    launch(
        _state_update_kernel, grid,
        state, x, dt, A, Bg, Cg, D if D is not None else dummy, z if z is not None else x,
        dt_bias if dt_bias is not None else dummy, y,
        dim, n, dim // Bg.shape[1], state.stride(0), state.stride(1), x.stride(0), dt.stride(0),
        z.stride(0) if z is not None else 0, y.stride(0), Bg.stride(0), Bg.stride(1), Cg.stride(0), Cg.stride(1),
        BD=BD, NP=NP, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus), A_IS_LOG=bool(A_is_log), num_warps=4,
    )
    return y
