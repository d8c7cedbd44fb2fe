"""Training batches on the device, made ahead of the step that needs them.

A generated task makes its batch on the device itself (tasks.counter_random: the same data as on
the CPU, no host work or transfer). A data-backed task reads windows from its token store on the
CPU: a background thread makes the next step's batch, pins it and starts its copy while the
current step runs, so the GPU does not wait for the host between steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch

from seqbench.core.types import Batch
from seqbench.tasks.base import GeneratedTask


class TrainBatches:
    """`batches.get(step)` -> the (global) batch of `step` on `device`, for steps asked in order.

    `shape_of(step)` gives (length, batch size) at each step (the config's length schedule)."""

    def __init__(self, task, device: torch.device, shape_of: Callable[[int], tuple[int, int]],
                 start_step: int, end_step: int, prefetch: int = 2) -> None:
        self.task, self.device, self.shape_of = task, device, shape_of
        self.on_device = isinstance(task, GeneratedTask) or device.type != "cuda"
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        if not self.on_device:
            self._queue = queue.Queue(maxsize=prefetch)
            self._thread = threading.Thread(target=self._produce, args=(start_step, end_step), daemon=True,
                                            name="seqbench-batches")
            self._thread.start()

    def _make(self, step: int) -> Batch:
        length, batch_size = self.shape_of(step)
        return self.task.train_batch(step, batch_size, length, device=self.device if self.on_device else None)

    def _produce(self, start: int, end: int) -> None:
        stream = torch.cuda.Stream(self.device)
        for step in range(start, end):
            if self._stop.is_set():
                return
            try:
                batch = self._make(step)
                with torch.cuda.stream(stream):
                    moved = Batch(batch.inputs.pin_memory().to(self.device, non_blocking=True),
                                  batch.targets.pin_memory().to(self.device, non_blocking=True))
                    ready = torch.cuda.Event()
                    ready.record(stream)
                item = (step, moved, ready, None)
            except BaseException as exc:  # handed to the training loop, which raises it
                item = (step, None, None, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[3] is not None:
                return

    def get(self, step: int) -> Batch:
        if self.on_device:
            return self._make(step).to(self.device)
        got, batch, ready, error = self._queue.get()
        if error is not None:
            raise error
        assert got == step, f"batches asked out of order: {step} after {got}"
        torch.cuda.current_stream(self.device).wait_event(ready)
        # The copy ran on the producer's stream; tell the allocator the tensors are used here now.
        batch.inputs.record_stream(torch.cuda.current_stream(self.device))
        batch.targets.record_stream(torch.cuda.current_stream(self.device))
        return batch

    def close(self) -> None:
        """Stop the producer (a run that ends early)."""
        self._stop.set()
