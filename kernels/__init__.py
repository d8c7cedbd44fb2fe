"""Selective-scan kernels: fused Triton on CUDA, plain PyTorch reference on CPU."""

from seqbench.kernels.selective_scan import selective_scan

__all__ = ["selective_scan", "selective_state_update", "causal_conv1d", "causal_conv1d_update"]

_LAZY = {
    "selective_state_update": "seqbench.kernels.state_update",
    "causal_conv1d": "seqbench.kernels.causal_conv",
    "causal_conv1d_update": "seqbench.kernels.causal_conv",
}


def __getattr__(name: str):
    # The decode-step and conv kernels import Triton; load them only when asked for, so that
    # `import kernels` stays as light as the public scan entry point.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
