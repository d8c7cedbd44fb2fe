"""Evaluation of a model on a task at one length: the loss, accuracy and task metrics the runner
logs, at once or, for a streaming model, chunk by chunk with the state carried across chunks.

A streaming model (every mixer's state has a constant size, `SequenceModel.streams`: Mamba) gives
exactly the metrics of one forward when run in chunks, in the memory of one chunk, so it can be
evaluated at lengths whose one forward would not fit. `eval_chunk` chooses: None (auto) evaluates
in one forward and, when that runs out of memory, again in chunks (AUTO_CHUNK, halved until it
fits); 0 never chunks; N > 0 chunks every length above N.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from seqbench.core.devices import autocast, is_out_of_memory
from seqbench.harness.train_step import scored
from seqbench.models.backbone import cross_entropy
from seqbench.tasks.base import IGNORE_INDEX, Task

AUTO_CHUNK = 1 << 16  # the first chunk an out-of-memory evaluation retries with
MIN_CHUNK = 1 << 10  # chunks are not halved below this (a smaller one is launch-bound)


def position_bins(seq_len: int) -> list[tuple[int, int]]:
    """[start, end) of the positions binned by `loss_by_position`: 0, 1, 2-3, 4-7, ... (powers of two)."""
    return [(0, 1)] + [(1 << k, min(seq_len, 2 << k)) for k in range(max(1, seq_len).bit_length()) if 1 << k < seq_len]


def evaluate(model, task: Task, seq_len: int, n_samples: int, batch_size: int, device: torch.device,
             precision: str = "auto", chunk: int | None = None, by_position: bool = False) -> dict:
    """Loss and accuracy over up to `n_samples` held-out sequences of length `seq_len`, plus the
    task's derived metrics; for a class head also the confusion matrix (rows: true class). The
    sums stay on the device until the end (one read-back per length, not per batch). With
    `chunk`, a streaming model (SequenceModel.stream) runs each sequence `chunk` positions at a
    time with its state carried over: the same metrics in the memory of one chunk. With
    `by_position` (a token head), also "loss_by_position": [start, end, mean loss] per bin of
    `position_bins`, the loss as a function of how much context precedes a position."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x scored, correct, scored
    tokens = sequences = 0
    classes = task.head.n_outputs if task.head.kind == "class" else 0
    confusion = torch.zeros(classes * classes, dtype=torch.long, device=device)
    bins = position_bins(seq_len) if by_position and task.head.kind != "class" else []
    bin_sums = torch.zeros(2, len(bins), dtype=torch.float64, device=device)  # loss sum, scored count
    start = time.perf_counter()
    for batch in task.eval_batches(seq_len, n_samples, batch_size, device=device):
        batch = batch.to(device)
        with autocast(device, precision):
            for first, logits, targets in _scored_parts(model, task, batch, chunk):
                if bins:
                    _add_by_position(bin_sums, first, logits, targets)
                mask = targets != IGNORE_INDEX
                n = mask.sum()
                predicted = logits.argmax(-1)
                right = ((predicted == targets) & mask).sum()
                loss = cross_entropy(logits, targets).double() * n
                loss = torch.where(n > 0, loss, torch.zeros_like(loss))  # a chunk may hold no scored position
                sums += torch.stack([loss, right.double(), n.double()])
                if classes:
                    confusion += torch.bincount(targets * classes + predicted, minlength=classes**2)
        tokens += batch.inputs.numel()
        sequences += batch.inputs.shape[0]
    total_loss, correct, scored_n = sums.tolist()
    seconds = time.perf_counter() - start
    model.train()
    metrics = {
        "loss": total_loss / max(1, scored_n),
        "accuracy": correct / max(1, scored_n),
        "samples": float(sequences),
        "tokens_per_s": tokens / max(seconds, 1e-9),
    }
    metrics.update(task.derived_metrics(metrics))
    if classes:
        metrics["confusion"] = confusion.view(classes, classes).tolist()
    if bins:
        loss_sum, count = bin_sums.tolist()
        metrics["loss_by_position"] = [[a, b, s / n] for (a, b), s, n in zip(bins, loss_sum, count) if n > 0]
    return metrics


def _add_by_position(bin_sums: torch.Tensor, first: int, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Per-token losses of positions first, first + 1, ... summed into their power-of-two bins."""
    losses = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                               reduction="none")  # (b, l)
    scored = targets != IGNORE_INDEX
    positions = torch.arange(first, first + targets.shape[1], device=targets.device)
    # bin of position p: 0 for p = 0, else floor(log2 p) + 1 (position_bins: 0 | 1 | 2-3 | 4-7 | ...)
    index = torch.where(positions == 0, 0, torch.floor(torch.log2(positions.clamp(min=1).double())).long() + 1)
    index = index.clamp(max=bin_sums.shape[1] - 1).expand_as(losses)
    bin_sums[0].scatter_add_(0, index[scored], losses[scored].double())
    bin_sums[1].scatter_add_(0, index[scored], torch.ones_like(losses[scored], dtype=torch.float64))


def _scored_parts(model, task: Task, batch, chunk: int | None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(position of the first column, logits, targets) at the scored positions of `batch`: at
    once, or chunk by chunk (a class head's position is 0: it has one prediction per sequence)."""
    length = batch.inputs.shape[1]
    last_only = task.head.kind == "token" and task.scores_last_position_only
    if not chunk or length <= chunk:
        logits, targets = scored(task, model(batch.inputs, last_only=task.scores_last_position_only), batch.targets)
        yield (length - 1 if last_only else 0), logits, targets
        return
    for start, logits in model.stream(batch.inputs, chunk):
        if task.head.kind == "class":
            yield 0, logits, batch.targets
        elif last_only:
            if start + logits.shape[1] == length:  # the last chunk holds the one scored position
                yield (length - 1, *scored(task, logits, batch.targets))
        else:
            yield start, logits, batch.targets[:, start:start + logits.shape[1]]


def evaluate_length(model, task: Task, seq_len: int, n_samples: int, batch_size: int, device: torch.device,
                    precision: str, eval_chunk: int | None, by_position: bool = False) -> tuple[dict, int | None]:
    """(metrics, chunk used or None) at `seq_len` under the `eval_chunk` policy (module docstring).
    Out of memory where no chunk is left to try, it raises torch.OutOfMemoryError."""
    chunk = eval_chunk if eval_chunk and model.streams and seq_len > eval_chunk else None
    while True:
        try:
            return evaluate(model, task, seq_len, n_samples, batch_size, device, precision, chunk, by_position), chunk
        except Exception as exc:
            if not is_out_of_memory(exc) or eval_chunk is not None or not model.streams:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            chunk = min(AUTO_CHUNK, seq_len // 2) if chunk is None else chunk // 2
            if chunk < MIN_CHUNK:
                raise


def eval_plan(config, seq_len: int) -> tuple[int, int]:
    """(samples, batch size) at `seq_len`: `eval_samples` at most, fewer at long lengths so one
    length costs about `eval_tokens` tokens, never fewer than 16 samples (or eval_samples)."""
    samples = max(min(16, config.eval_samples), min(config.eval_samples, config.eval_tokens // seq_len))
    batch = max(1, min(64, samples, config.eval_tokens // 16 // seq_len or 1))
    return samples, batch
