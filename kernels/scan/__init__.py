"""The selective scan: the public entry point dispatches to a backend (triton.py: the fused
Triton forward and backward; reference.py: plain PyTorch). Both check the inputs against the
contract (checks.py); the Triton backend once per call signature, since a signature that passed
once passes again.

`backend="auto"` runs the fused Triton kernel on CUDA tensors and the chunked PyTorch scan on
CPU tensors; "triton" and "reference" force one. Semantics: scan/reference.py and kernels/CONTRACT.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.kernels.backend import resolve_backend
from seqbench.kernels.scan.checks import check_scan_inputs
from seqbench.kernels.scan.reference import selective_scan_chunked


def selective_scan(
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
    backend: str = "auto",
    A_is_log: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan (Mamba's S6) with kernels/CONTRACT.md's semantics; differentiable in every
    tensor. With `A_is_log`, A is given as A_log (A = -exp(A_log), the Mamba block's parameter as
    it is) and the gradient is A_log's: the Triton kernels make A as they load it."""
    chosen = resolve_backend(backend, u.device)
    if chosen == "reference":
        check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, allow_float64=True)
        if A_is_log:
            A = -torch.exp(A if A.dtype == torch.float64 else A.float())
        return selective_scan_chunked(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
            return_last_state=return_last_state, initial_state=initial_state,
        )
    # imported lazily (Triton only where used); it checks the inputs once per call signature
    from seqbench.kernels.scan.triton import selective_scan_triton

    return selective_scan_triton(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        return_last_state=return_last_state, initial_state=initial_state, A_is_log=A_is_log,
    )
