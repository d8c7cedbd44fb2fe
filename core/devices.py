"""Device choices shared by training and benchmarks: which device, which autocast, peak memory."""

from __future__ import annotations

import resource
from contextlib import nullcontext

import torch

from seqbench.core.errors import SeqbenchError


def pick_device(choice: str) -> torch.device:
    """auto -> CUDA when present, else CPU; an explicit cuda without a GPU is a user error."""
    if choice not in ("auto", "cpu", "cuda"):
        raise SeqbenchError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SeqbenchError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (how every GPU run trains and is timed), plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    """Peak tensor memory on CUDA; on CPU the process's peak resident set (covers everything)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; the CPU allocator raises a RuntimeError saying so."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))
