"""One training step (forward, loss, backward, gradient clipping, AdamW), eager or captured.

The paper's synthetic models are tiny (2 layers, width 64-128): in eager PyTorch their step is a
few hundred kernel launches that take ten times the GPU's work to issue. A captured step records
the whole step once as a CUDA graph and replays it, one launch a step: a generated task's batch is
made inside the graph from a step counter on the device (tasks.counter_random: the same data as
eagerly), a data-backed task's batch is copied into the graph's own buffers, the learning rate
lives in a device tensor that each step fills, and AdamW is fused and `capturable` (its step
count on the device). The first `WARMUP_STEPS` steps
at a shape run eagerly on a side stream (real steps: Triton compiles, AdamW makes its state, the
allocator settles), then the next step is captured and replayed; a new shape (a sequence-length
warm-up's next length) drops the graph and does the same again.

Nothing here reads a value back: the step returns its loss and gradient norm as device tensors,
and the runner reads them once per logging interval (`StepLog`), so a divergence is still found
at the step it happened. Eager is the mode on the CPU and under data parallelism (DDP's gradient
all-reduce is not captured here); `choose_mode` says which mode a run gets and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from seqbench.core.devices import autocast
from seqbench.core.errors import SeqbenchError
from seqbench.core.types import Batch
from seqbench.models.backbone import cross_entropy, parameter_groups
from seqbench.tasks.base import GeneratedTask

STEP_MODES = ("auto", "eager", "captured")
WARMUP_STEPS = 3


def choose_mode(requested: str, device: torch.device, world_size: int) -> tuple[str, str]:
    """(mode, why): the step mode a run gets. `auto` captures wherever capture is possible."""
    if requested not in STEP_MODES:
        raise SeqbenchError(f"--train-step must be one of {', '.join(STEP_MODES)}, got {requested!r}")
    if requested == "eager":
        return "eager", "asked for with --train-step eager"
    if device.type != "cuda":
        if requested == "captured":
            raise SeqbenchError("--train-step captured needs a CUDA device (CUDA graphs); use auto or eager")
        return "eager", "CUDA graphs need a GPU"
    if world_size > 1:
        if requested == "captured":
            raise SeqbenchError("--train-step captured runs on one process; data-parallel runs train eagerly")
        return "eager", "data-parallel: DDP's gradient all-reduce runs eagerly"
    return "captured", "one CUDA graph per step, replayed"


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device,
                   mode: str) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95; decay on matrices only), fused on CUDA (one kernel for every
    parameter, in either mode: every family gets it) and capturable when the step is captured."""
    cuda = device.type == "cuda"
    return torch.optim.AdamW(parameter_groups(model, weight_decay, lr), lr=lr, betas=(0.9, 0.95),
                             fused=cuda or None, capturable=mode == "captured")


def scored(task, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets at the scored positions, aligned (handles the last-position-only head)."""
    if task.head.kind == "token" and task.scores_last_position_only:
        return logits[:, -1:], targets[:, -1:]
    return logits, targets


def loss_of(model, task, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device,
            precision: str = "auto", cache: bool = True) -> torch.Tensor:
    """The training loss of one batch at `precision` (bf16 autocast on CUDA unless fp32)."""
    with autocast(device, precision, cache=cache):
        logits = model(inputs, last_only=task.scores_last_position_only)
    return cross_entropy(*scored(task, logits, targets))


BatchMaker = Callable[[int | torch.Tensor, int, int], Batch]


def generated_batches(task, device: torch.device) -> BatchMaker | None:
    """A generated task's batches made on `device` by the step itself (inside a captured step's
    graph); None for a data-backed task, whose batches the runner brings."""
    if not isinstance(task, GeneratedTask):
        return None
    return lambda step, batch_size, length: task.train_batch(step, batch_size, length, device=device)


class TrainStep:
    """`step(step, length, batch_size, batch) -> (loss, grad_norm)` as one (2,) device tensor;
    `set_lr(lr)` before each step. With `make_batch(step, batch_size, length)` (a generated
    task's batches, made on the device) the step makes its own batch and `batch` is None.

    Create it after the optimizer's state is loaded (a resumed run): it moves the learning rates
    into device tensors when it captures."""

    def __init__(self, model: torch.nn.Module, task, optimizer: torch.optim.Optimizer, grad_clip: float,
                 device: torch.device, precision: str = "auto", mode: str = "eager",
                 make_batch: BatchMaker | None = None) -> None:
        self.model, self.task, self.optimizer, self.make_batch = model, task, optimizer, make_batch
        self.grad_clip, self.device, self.precision, self.mode = grad_clip, device, precision, mode
        self._graph: torch.cuda.CUDAGraph | None = None
        self._shape: tuple | None = None
        self._warm = 0
        self.captures = 0  # graphs captured so far (one per shape)
        self._lr_set: dict[int, float] = {}
        self._adopt_optimizer()

    def _adopt_optimizer(self) -> None:
        """Make the optimizer's flags and state fit this mode, whatever a loaded checkpoint said
        (load_state_dict takes the saved groups' flags): fused on CUDA, capturable when captured
        (learning rates in device tensors), step counts where those need them."""
        cuda = self.device.type == "cuda"
        captured = self.mode == "captured"
        for group in self.optimizer.param_groups:
            group.update(fused=cuda or None, foreach=None, capturable=captured)
            lr = float(group["lr"])
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=self.device) if captured else lr
        for state in self.optimizer.state.values():
            if "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(
                    self.device if cuda else "cpu")

    def set_lr(self, lr: float) -> None:
        """The schedule's learning rate for the next step (each group scales it by its lr_ratio)."""
        for n, group in enumerate(self.optimizer.param_groups):
            value = lr * group.get("lr_ratio", 1.0)
            if isinstance(group["lr"], torch.Tensor):
                if self._lr_set.get(n) != value:  # a launch only when the value changes
                    group["lr"].fill_(value)
                    self._lr_set[n] = value
            else:
                group["lr"] = value

    @property
    def generates(self) -> bool:
        """Whether the step makes its own batches (the runner then passes none)."""
        return self.make_batch is not None

    def __call__(self, step: int, length: int, batch_size: int, batch: Batch | None = None) -> torch.Tensor:
        if self.mode == "eager":
            return self._eager(self._batch(step, length, batch_size, batch))
        if (length, batch_size) != self._shape:  # a new shape: drop the graph, warm up again
            self._graph, self._shape, self._warm = None, (length, batch_size), 0
        if self._graph is None:
            if self._warm < WARMUP_STEPS:
                self._warm += 1
                return self._side_stream(self._batch(step, length, batch_size, batch))
            self._capture(step, length, batch_size, batch)
        if self.generates:
            self._step.fill_(step)
        else:
            self._inputs.copy_(batch.inputs, non_blocking=True)
            self._targets.copy_(batch.targets, non_blocking=True)
        self._graph.replay()
        return self._out

    def _batch(self, step, length: int, batch_size: int, batch: Batch | None) -> Batch:
        return self.make_batch(step, batch_size, length) if self.generates else batch

    def _train(self, batch: Batch, cache: bool = True) -> torch.Tensor:
        """Forward, backward, clip, update; (loss, grad norm) as one (2,) tensor."""
        loss = loss_of(self.model, self.task, batch.inputs, batch.targets, self.device, self.precision, cache=cache)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        self.optimizer.step()
        return torch.stack([loss.detach().float(), norm.float()])

    def _eager(self, batch: Batch, cache: bool = True) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self._train(batch, cache)

    def _side_stream(self, batch: Batch) -> torch.Tensor:
        """An eager warm-up step on a side stream, as CUDA graph capture asks."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = self._eager(batch, cache=False)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out

    def _capture(self, step: int, length: int, batch_size: int, batch: Batch | None) -> None:
        """Record one whole step into a graph (with the batch's making, for a generated task);
        its output is the graph's own (loss, grad norm) tensor."""
        if self.generates:
            self._step = torch.full((), step, dtype=torch.int64, device=self.device)
        else:
            self._inputs, self._targets = batch.inputs.clone(), batch.targets.clone()
        self.optimizer.zero_grad(set_to_none=True)  # gradients are then the graph's own memory
        graph = torch.cuda.CUDAGraph()
        # thread_local: the batch producer's pinning and copies (harness/batches.py), on its own
        # thread and stream, would otherwise invalidate a capture they happen to overlap
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            made = self.make_batch(self._step, batch_size, length) if self.generates else Batch(self._inputs,
                                                                                                 self._targets)
            self._out = self._train(made, cache=False)
        self._graph = graph
        self.captures += 1


@dataclass
class LoggedStep:
    step: int
    loss: float
    grad_norm: float


class StepLog:
    """Losses and gradient norms kept on the device between read-backs: one copy a step (no
    sync), one transfer per logging interval. `read()` returns the steps since the last read."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.values = torch.zeros(max(1, capacity), 2, dtype=torch.float32, device=device)
        self.steps: list[int] = []

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def full(self) -> bool:
        return len(self.steps) == self.values.shape[0]

    def add(self, step: int, values: torch.Tensor) -> None:
        """Keep `step`'s (loss, grad norm) (one device copy)."""
        self.values[len(self.steps)].copy_(values, non_blocking=True)
        self.steps.append(step)

    def read(self) -> list[LoggedStep]:
        rows = self.values[:len(self.steps)].tolist()  # the one sync
        out = [LoggedStep(step, loss, norm) for step, (loss, norm) in zip(self.steps, rows)]
        self.steps = []
        return out


def first_nonfinite(rows: list[LoggedStep]) -> LoggedStep | None:
    """The first step whose loss is NaN or infinite (where a run diverged), if any."""
    return next((row for row in rows if not math.isfinite(row.loss)), None)
