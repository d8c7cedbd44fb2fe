"""Selective-scan kernels: fused Triton on CUDA, plain PyTorch reference on CPU."""

from kernels.selective_scan import selective_scan

__all__ = ["selective_scan"]
