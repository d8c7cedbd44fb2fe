"""Data-parallel plumbing for one run spread over processes started by torchrun.

torchrun (``python -m torch.distributed.run``) starts one process per device and tells each its
place through the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). This module reads
that, joins the process group (NCCL on CUDA with device cuda:LOCAL_RANK, gloo on the CPU), shards
the training batches, reduces metrics and lets only rank 0 talk to MLflow. Without torchrun every
helper is the single-process identity, so the runner has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from seqbench.core.devices import pick_device
from seqbench.core.errors import SeqbenchError
from seqbench.tasks.base import Batch


@dataclass(frozen=True)
class Context:
    """This process's place in the run: rank of world_size, and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to MLflow, writes checkpoints, evaluates and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise SeqbenchError(f"${name} must be an integer (torchrun sets it), got {text!r}") from None


def setup(device_choice: str) -> Context:
    """Read torchrun's environment and join the process group; a plain process gets rank 0 of 1.

    CUDA ranks use NCCL on cuda:LOCAL_RANK; CPU ranks use gloo."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    device = pick_device(device_choice)
    if world_size <= 1:
        return Context(0, 1, 0, device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SeqbenchError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                                "--nproc-per-node must be at most the GPUs of the host")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return Context(rank, world_size, local_rank, device)


def teardown(ctx: Context) -> None:
    """Leave the process group (a no-op for a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """DistributedDataParallel around the model (gradients averaged over ranks), or the model itself."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def shard(batch: Batch, ctx: Context) -> Batch:
    """Rows rank·B … (rank+1)·B−1 of a global batch of world_size·B rows.

    The runner draws the global batch from the task's seeded generator on every rank and keeps its
    own slice: exactly the rows a single process with the global batch size sees, at the price of
    generating world_size times the data on each rank (cheap for our generators and token stores;
    the model's forward and backward dominate). DDP averages the ranks' gradients, i.e. of the
    ranks' mean losses: the single process's mean over the global batch whenever every row scores
    as many positions, as in our tasks."""
    if not ctx.distributed:
        return batch
    rows = batch.inputs.shape[0] // ctx.world_size
    part = slice(ctx.rank * rows, (ctx.rank + 1) * rows)
    return Batch(batch.inputs[part], batch.targets[part])


# The latest reduction stays referenced from Python until the next one (or the interpreter's
# exit, on the main thread). Otherwise gloo's worker thread drops the last reference a moment after
# the caller has moved on, and freeing the tensor it holds needs the GIL, which a thread cannot take
# once the interpreter is exiting: a rank that ends right after a reduction aborted ("terminate
# called without an active exception").
_latest_reduction: list[dist.Work] = []


def mean(value: float, ctx: Context) -> float:
    """The mean of `value` over ranks (every rank gets it; the same number decides divergence)."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    work = dist.all_reduce(tensor, async_op=True)
    work.wait()
    _latest_reduction[:] = [work]
    return float(tensor) / ctx.world_size


def barrier(ctx: Context) -> None:
    """Wait for every rank (e.g. while rank 0 evaluates)."""
    if ctx.distributed:
        dist.barrier()


def broadcast(value, ctx: Context):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
