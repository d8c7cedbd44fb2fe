"""Plain PyTorch residual add + RMSNorm: the CPU path and the test oracle."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["add_rms_norm_ref"]


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def add_rms_norm_ref(hidden: Tensor, residual: Tensor | None, weight: Tensor, eps: float = 1e-5,
                     residual_in_fp32: bool = True, out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """PyTorch reference of `add_rms_norm` (same semantics and output dtypes); differentiable."""
    compute = _compute_dtype(hidden, residual, weight)
    res_dtype = torch.promote_types(hidden.dtype, torch.float32) if residual_in_fp32 else hidden.dtype
    total = hidden.to(compute) if residual is None else residual.to(compute) + hidden.to(compute)
    new_residual = total.to(res_dtype)
    r = new_residual.to(compute)
    normed = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute)
    return normed.to(out_dtype or weight.dtype), new_residual
