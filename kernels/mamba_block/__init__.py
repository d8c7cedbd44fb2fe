"""The inner Mamba block as one autograd node: causal conv + SiLU -> x_proj -> dt_proj -> the
selective scan -> out_proj, keeping for backward only what is cheap to keep.

A chain of separate autograd nodes saves every intermediate: the conv's output (the scan's u and
x_proj's input), dt (the scan's delta) and the scan's output (out_proj's input), each (batch,
d_inner, length). This node saves the conv's input, z, the small x_proj output and the scan's
tile-start states; the backward recomputes the conv and the two thin projections, and the scan's
backward kernel, which recomputes h anyway, also writes the forward's output for out_proj's
weight gradient (3 of the 5 large saved tensors gone for one conv, two thin GEMMs and one store).

Every tensor is channel-major (batch, channels, length) as in models/mamba.py, in either row
layout of kernels/layout.py (x's): channel-outer makes every projection, weight gradients
included, one 2-D GEMM; B and C are row slices of the x_proj output and reach the scan kernels
without a copy. Triton only (CUDA, or CPU tensors under TRITON_INTERPRET=1); models/mamba.py
composes the same block from separate ops on the reference path and is the oracle the tests
compare this node with.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.kernels.conv import causal_conv1d
from seqbench.kernels.layout import channel_outer, mix_channels, to_tokens, to_tokens_input_grad, to_tokens_weight_grad
from seqbench.kernels.scan import triton as triton_scan


def _pre_scan(x: Tensor, conv_w: Tensor, conv_b: Tensor | None, xproj_w: Tensor, dt_w: Tensor, dt_rank: int):
    """conv + SiLU, x_proj and dt_proj: (u, x_dbl, delta), each (b, ., l) in x's layout."""
    u = causal_conv1d(x, conv_w, conv_b, activation="silu", backend="triton")
    x_dbl = mix_channels(xproj_w, u)
    delta = mix_channels(dt_w, x_dbl[:, :dt_rank])
    return u, x_dbl, delta


class _MambaInnerFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, z, conv_w, conv_b, xproj_w, dt_w, A_log, D, dt_bias, out_w, dt_rank, d_state):
        u, x_dbl, delta = _pre_scan(x, conv_w, conv_b, xproj_w, dt_w, dt_rank)
        B, C = x_dbl[:, dt_rank:dt_rank + d_state], x_dbl[:, dt_rank + d_state:]
        y, _, saved, plan = triton_scan._forward(u, delta, A_log, B, C, D, z, dt_bias, None, True, False, None,
                                                 needs_grad=True, a_is_log=True)  # A = -exp(A_log) in the kernels
        hst, dtsum = saved[-2:]
        out = to_tokens(y, out_w)  # (b, l, d_model)
        ctx.save_for_backward(x, z, conv_w, conv_b, xproj_w, dt_w, A_log, D, dt_bias, out_w, x_dbl, hst, dtsum)
        ctx.plan, ctx.dt_rank, ctx.d_state = plan, dt_rank, d_state
        return out

    @staticmethod
    def backward(ctx, dout):
        x, z, conv_w, conv_b, xproj_w, dt_w, A_log, D, dt_bias, out_w, x_dbl_saved, hst, dtsum = ctx.saved_tensors
        R, N = ctx.dt_rank, ctx.d_state
        # (b, d_inner, l) in x's layout, the layout of every such tensor of the block
        dy = to_tokens_input_grad(dout, out_w, channel_outer(x))
        leaves = [t.detach().requires_grad_(True) if t is not None else None for t in (x, conv_w, conv_b, xproj_w, dt_w)]
        with torch.enable_grad():  # the recomputed part, differentiated by autograd below
            u, x_dbl, delta = _pre_scan(*leaves, R)
        B, C = x_dbl_saved[:, R:R + N], x_dbl_saved[:, R + N:]
        ops = ctx.plan.operands(u.detach(), delta.detach(), A_log, B, C, D, z, dt_bias, None)  # as the forward's
        y = torch.empty_like(ops[0])  # u's layout; recomputed by the scan's backward kernel
        du, ddelta, dA, dBC, dD, dz, dbias, _ = triton_scan._bwd(ctx.plan, dy, None, *ops[:8], hst, dtsum,
                                                                 collapse_groups=True, out=y)
        dout_w = to_tokens_weight_grad(dout, y)  # (d_model, d_inner)
        dx_dbl = torch.zeros_like(x_dbl)
        dx_dbl[:, R:R + N] = dBC[0]
        dx_dbl[:, R + N:] = dBC[1]
        torch.autograd.backward([u, x_dbl, delta], [du, dx_dbl, ddelta])
        dx, dconv_w, dconv_b, dxproj_w, ddt_w = (t.grad if t is not None else None for t in leaves)
        dA_log = (dA * -torch.exp(A_log.float())).to(A_log.dtype)  # A = -exp(A_log)
        return (dx, dz, dconv_w, dconv_b, dxproj_w, ddt_w, dA_log, dD.to(D.dtype), dbias.to(dt_bias.dtype),
                dout_w, None, None)


def mamba_inner(x: Tensor, z: Tensor, conv_w: Tensor, conv_b: Tensor | None, xproj_w: Tensor, dt_w: Tensor,
                A_log: Tensor, D: Tensor, dt_bias: Tensor, out_w: Tensor, dt_rank: int, d_state: int) -> Tensor:
    """The Mamba block's output (b, l, d_model) from in_proj's x and z (b, d_inner, l) and the
    block's parameters (weights in the compute dtype; A_log, D, dt_bias fp32): conv + SiLU,
    x_proj (dt_rank + 2 d_state rows), dt_proj, scan with softplus(dt + dt_bias), D skip and
    SiLU(z) gate, out_proj (no bias). Differentiable in every tensor; the backward recomputes the
    conv and projections, and the scan's output comes back from its backward kernel."""
    return _MambaInnerFn.apply(x, z, conv_w, conv_b, xproj_w, dt_w, A_log, D, dt_bias, out_w, dt_rank, d_state)
