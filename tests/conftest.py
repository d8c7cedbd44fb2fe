"""Shared test setup: GPU tests are skipped without CUDA; Triton kernels run in the interpreter on CPU."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined: the CPU tests run the kernels in Triton's
    # NumPy interpreter on small shapes.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (run on the H200)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
