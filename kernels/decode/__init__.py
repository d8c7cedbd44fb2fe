"""One decode step of the selective scan (Mamba's recurrent inference path): input checks and
dispatch (triton.py: the fused Triton kernel; reference.py: plain PyTorch).

`selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False)`:
state (batch, dim, N) fp32 is updated in place to exp(dt*A) * state + dt * x * B and
y = <state, C> + D * x (times silu(z)) is returned as (batch, dim) in x's dtype. B, C are
(batch, N) or grouped (batch, groups, N).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.kernels.backend import resolve_backend
from seqbench.kernels.decode.reference import selective_state_update_ref

__all__ = ["selective_state_update"]


def selective_state_update(
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
    backend: str = "auto",
    A_is_log: bool = False,
) -> Tensor:
    """One recurrent step; `state` is updated in place. Returns y (batch, dim) in x's dtype.
    x, dt, z, B, C may be row slices of wider tensors (only their last dimension must be
    contiguous); D and dt_bias are read in any float dtype. With `A_is_log`, A holds A_log and
    the kernel uses A = -exp(A_log) (the Mamba parameterisation), so a decode step needs no
    kernels to prepare its parameters. `backend`: auto (Triton on CUDA, the reference
    elsewhere), triton or reference."""
    if state.dim() != 3 or x.dim() != 2:
        raise ValueError(f"state must be (batch, dim, N) and x (batch, dim); got {tuple(state.shape)}, {tuple(x.shape)}")
    batch, dim, n = state.shape
    if tuple(x.shape) != (batch, dim) or tuple(dt.shape) != (batch, dim) or (z is not None and tuple(z.shape) != (batch, dim)):
        raise ValueError(f"x, dt, z must be (batch, dim) = {(batch, dim)}")
    if tuple(A.shape) != (dim, n):
        raise ValueError(f"A must be (dim, N) = {(dim, n)}, got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        ok = (t.dim() == 2 and tuple(t.shape) == (batch, n)) or (
            t.dim() == 3 and t.shape[0] == batch and t.shape[2] == n and dim % t.shape[1] == 0)
        if not ok:
            raise ValueError(f"{name} must be (batch, N) or (batch, groups, N), got {tuple(t.shape)}")
    if state.dtype != torch.float32:
        raise ValueError(f"state must be float32, got {state.dtype}")
    use_triton = resolve_backend(backend, state.device) == "triton"
    if not use_triton or x.dtype == torch.float64:
        if A_is_log:
            A = -torch.exp(A.float())
        return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    from seqbench.kernels.decode.triton import selective_state_update_triton  # lazily: Triton only where used

    return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, A_is_log)
