"""Plain PyTorch decode step of the selective scan: the CPU path and the test oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqbench.kernels.scan.reference import _discretize_dt

__all__ = ["selective_state_update_ref"]


def selective_state_update_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
) -> Tensor:
    """One decode step. state (b, d, N) fp32 is updated in place; x, dt, z (b, d);
    B, C (b, N) or (b, g, N). Returns y (b, d) in x's dtype."""
    dtype = state.dtype
    dim = x.shape[1]
    dtf = _discretize_dt(dt, dt_bias, dt_softplus, dtype)[:, :, None]
    Bd = B.to(dtype) if B.dim() == 3 else B.to(dtype)[:, None, :]
    Cd = C.to(dtype) if C.dim() == 3 else C.to(dtype)[:, None, :]
    if Bd.shape[1] not in (1, dim):
        Bd = Bd.repeat_interleave(dim // Bd.shape[1], dim=1)
        Cd = Cd.repeat_interleave(dim // Cd.shape[1], dim=1)
    new_state = torch.exp(dtf * A.to(dtype)) * state + dtf * x.to(dtype)[:, :, None] * Bd
    state.copy_(new_state)
    y = (new_state * Cd).sum(-1)
    if D is not None:
        y = y + D.to(dtype) * x.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(x.dtype)
