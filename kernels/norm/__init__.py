"""Fused residual add + RMSNorm (the backbone's pre-norm block), input checks and dispatch
(triton.py: the Triton forward and backward; reference.py: plain PyTorch).

    normed, new_residual = add_rms_norm(hidden, residual, weight, eps=1e-5)

    new_residual = residual + hidden        (hidden alone when residual is None), summed in fp32,
                                            kept in fp32 (residual_in_fp32) or in hidden's dtype
    normed       = new_residual * rsqrt(mean(new_residual^2, -1) + eps) * weight, in fp32,
                                            stored in out_dtype (default weight.dtype)

Why: in PyTorch the add, the casts, the square, the mean, the rsqrt and the two products are ~8
kernels, each a pass over the activations; here one kernel reads hidden and residual once and
writes normed and new_residual once (the backward: one kernel plus a small sum for d_weight).
Keeping the residual stream in fp32 keeps the sum of many bf16 block outputs accurate.

The norm reads new_residual as stored (rounded to its dtype). Only new_residual and one fp32 rstd
per row are saved for backward; xhat is recomputed. Triton runs on CUDA tensors (and on CPU
tensors under TRITON_INTERPRET=1); CPU tensors, float64 and rows wider than 65536 use the PyTorch
reference `add_rms_norm_ref`, which computes in fp32 (float64 when an input is float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.kernels.backend import resolve_backend
from seqbench.kernels.norm.reference import add_rms_norm_ref

__all__ = ["add_rms_norm", "add_rms_norm_ref"]

_MAX_D = 65536  # one row per register tile; wider rows would spill (they take the reference)


def _check(hidden: Tensor, residual: Tensor | None, weight: Tensor) -> None:
    if hidden.dim() < 1 or not hidden.is_floating_point():
        raise ValueError(f"hidden must be a floating-point tensor (..., d), got {hidden.dtype} {tuple(hidden.shape)}")
    if residual is not None and residual.shape != hidden.shape:
        raise ValueError(f"residual must have hidden's shape {tuple(hidden.shape)}, got {tuple(residual.shape)}")
    if tuple(weight.shape) != (hidden.shape[-1],):
        raise ValueError(f"weight must be (d,) = ({hidden.shape[-1]},), got {tuple(weight.shape)}")
    for name, t in (("residual", residual), ("weight", weight)):
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name} is on {t.device} but hidden is on {hidden.device}")


def add_rms_norm(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float = 1e-5,
                 residual_in_fp32: bool = True, out_dtype: torch.dtype | None = None,
                 backend: str = "auto") -> tuple[Tensor, Tensor]:
    """(normed, new_residual) of the pre-norm block (module docstring); differentiable in hidden,
    residual and weight. backend: 'auto' (Triton on CUDA), 'triton' or 'reference'."""
    _check(hidden, residual, weight)
    chosen = resolve_backend(backend, hidden.device)
    use_triton = (
        chosen == "triton"
        and torch.float64 not in (hidden.dtype, weight.dtype, residual.dtype if residual is not None else None)
        and hidden.numel() > 0
        and hidden.shape[-1] <= _MAX_D
    )
    if not use_triton:
        return add_rms_norm_ref(hidden, residual, weight, eps, residual_in_fp32, out_dtype)
    from seqbench.kernels.norm.triton import add_rms_norm_triton  # imported lazily: Triton only where used

    res_dtype = torch.float32 if residual_in_fp32 else hidden.dtype
    return add_rms_norm_triton(hidden, residual, weight, float(eps), res_dtype, out_dtype or weight.dtype)
