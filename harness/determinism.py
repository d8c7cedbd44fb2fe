"""Deterministic training on request (`--deterministic`).

GPU runs of one seed are not bitwise reproducible by default: some of PyTorch's CUDA kernels
(index and scatter backwards among them) accumulate with atomics, cuDNN and cuBLAS may pick
algorithms whose reduction order varies. Inside `deterministic_algorithms(True)` PyTorch uses its
deterministic algorithms where it has them (`torch.use_deterministic_algorithms`, warn-only:
an op without one names itself in a warning instead of stopping the run), cuDNN makes
deterministic choices, and cuBLAS gets the fixed workspace it needs for them. The names of the ops
that warned are collected, for the run to record. seqbench's own Triton kernels use no atomics
(every partial sum has its own slot), so they are deterministic as they are.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic results (CUDA 10.2 and later)
_NO_DETERMINISTIC = " does not have a deterministic implementation"


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[set[str]]:
    """With `enabled`, deterministic algorithms inside the block; yields the set of op names that
    warned they have none (filled as they run). The previous settings come back afterwards."""
    found: set[str] = set()
    if not enabled:
        yield found
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def note(message, category, filename, lineno, file=None, line=None):
            text = str(message)
            if _NO_DETERMINISTIC in text:
                found.add(text.split(_NO_DETERMINISTIC)[0].strip().strip("`'\""))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.filterwarnings("always", message=f".*{_NO_DETERMINISTIC}")  # every op, not only the first
        warnings.showwarning = note
        try:
            yield found
        finally:
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
