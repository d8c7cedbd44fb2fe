"""The selective scan's input contract as one check: shapes, groupings, dtypes and devices
(kernels/CONTRACT.md). Every backend calls it; the Triton path once per call signature."""

from __future__ import annotations

import torch
from torch import Tensor

_FLOAT_INPUTS = (torch.float32, torch.float16, torch.bfloat16)


def _fail(message: str) -> None:
    raise ValueError(message)


def check_scan_inputs(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, initial_state: Tensor | None, allow_float64: bool,
) -> None:
    """Raise ValueError with a one-line reason when the inputs break the contract."""
    allowed = _FLOAT_INPUTS + ((torch.float64,) if allow_float64 else ())
    if u.dim() != 3:
        _fail(f"u must be (batch, dim, length), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if u.dtype not in allowed:
        _fail(f"u has dtype {u.dtype}; accepted: {', '.join(str(d) for d in allowed)}")
    for name, t in (("delta", delta), ("z", z)):
        if t is not None and tuple(t.shape) != (batch, dim, length):
            _fail(f"{name} must have u's shape {(batch, dim, length)}, got {tuple(t.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        _fail(f"A must be (dim, N) = ({dim}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            ok = tuple(t.shape) == (batch, n, length)
        elif t.dim() == 4:
            ok = t.shape[0] == batch and t.shape[2:] == (n, length) and t.shape[1] > 0 and dim % t.shape[1] == 0
        else:
            ok = False
        if not ok:
            _fail(
                f"{name} must be (batch, N, length) = {(batch, n, length)} or (batch, groups, N, length) "
                f"with groups dividing dim={dim}, got {tuple(t.shape)}"
            )
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        _fail(f"B and C must have the same grouping, got {tuple(B.shape)} and {tuple(C.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (dim,):
            _fail(f"{name} must be (dim,) = ({dim},), got {tuple(t.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (batch, dim, n):
        _fail(f"initial_state must be (batch, dim, N) = {(batch, dim, n)}, got {tuple(initial_state.shape)}")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if t is None:
            continue
        if t.device != u.device:
            _fail(f"{name} is on {t.device} but u is on {u.device}; all inputs must share a device")
        if t.dtype not in allowed:
            _fail(f"{name} has dtype {t.dtype}; accepted: {', '.join(str(d) for d in allowed)}")
