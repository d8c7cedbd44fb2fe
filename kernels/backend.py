"""One backend choice for every op: "auto" (Triton on CUDA tensors, the PyTorch reference
elsewhere), "triton" (CPU tensors only under TRITON_INTERPRET=1, as the tests run) or "reference"."""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "triton", "reference")


def _fail(message: str) -> None:
    raise ValueError(message)


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'triton' on CUDA, 'reference' elsewhere; checks that a forced choice can run."""
    if backend not in BACKENDS:
        _fail(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "reference"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        _fail("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 to run the kernels on the CPU)")
    return backend


def needs_autograd(*tensors: object) -> bool:
    """Whether a call must record an autograd node: gradients are on and some tensor argument
    requires one. Without it a kernel's forward runs directly (inference: no Function.apply,
    whose host cost is a large share of a short launch)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
