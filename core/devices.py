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


PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(precision: str, device: torch.device) -> None:
    """`precision` is one of PRECISIONS, and bf16 autocast is asked for on CUDA only."""
    if precision not in PRECISIONS:
        raise SeqbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type != "cuda":
        raise SeqbenchError("--precision bf16 (autocast) runs on CUDA only; on the CPU use auto or fp32")


def uses_autocast(device: torch.device, precision: str = "auto") -> bool:
    """Whether a run at `precision` computes under bf16 autocast: auto means yes on CUDA."""
    return device.type == "cuda" and precision in ("auto", "bf16")


def precision_name(device: torch.device, precision: str = "auto") -> str:
    """What a run at `precision` computes in, as recorded: bf16-autocast or fp32."""
    return "bf16-autocast" if uses_autocast(device, precision) else "fp32"


def autocast(device: torch.device, precision: str = "auto", cache: bool = True):
    """bf16 autocast on CUDA (how GPU runs train and are timed unless `precision` is fp32), plain
    fp32 elsewhere. `cache=False` for code captured in a CUDA graph (autocast's cast cache would
    hand the graph casts made outside it)."""
    if uses_autocast(device, precision):
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
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
