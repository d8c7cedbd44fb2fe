"""Training-step wall time of the paper's small synthetic models: eager vs captured (CUDA only).

Each row builds the task's own model (its defaults: 2 layers, width 64-128) and runs the runner's
step loop -- the learning rate set, the step (which makes its batch on the GPU: inside the graph
when captured), its loss kept on the device and read back every 10 steps -- once with the eager step and once with the captured one, and
reports the median wall time per step over several timed windows. `gpu_busy_ms` is the summed
kernel time of one step (torch profiler over eager steps: the same kernels the graph replays):
the floor a step's wall time can reach.

    seqbench bench step-time --out results/h200/step-time.csv
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from seqbench.core.measure import cuda_kernel_times
from seqbench.harness.bench.models import save_png, write_csv
from seqbench.harness.config import RunConfig
from seqbench.harness.train_step import StepLog, TrainStep, generated_batches, make_optimizer
from seqbench.models import build_model
from seqbench.tasks import get_task

FIELDS = ["task", "family", "batch", "seq_len", "eager_ms", "captured_ms", "gpu_busy_ms", "captured_over_busy",
          "speedup", "kernels_per_step"]
# The small-model rows: (task, family, batch, length).
ROWS = (
    ("induction-heads", "mamba", 8, 256),
    ("induction-heads", "mamba", 16, 256),
    ("induction-heads", "transformer", 16, 256),
    ("induction-heads", "hyena", 16, 256),
    ("selective-copying", "mamba", 64, 4096),
)
LOG_EVERY = 10


def _setup(task_name: str, family: str, batch: int, seq_len: int, mode: str, device: torch.device):
    task = get_task(task_name)
    config = RunConfig(task=task_name, model=family, seq_len=seq_len, batch_size=batch).resolve(task, "cuda")
    torch.manual_seed(0)
    model = build_model(family, vocab_size=task.vocab_size, head=task.head, **config.model_kwargs).to(device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, device, mode)
    return task, config, TrainStep(model, task, optimizer, config.grad_clip, device, "auto", mode,
                                   make_batch=generated_batches(task, device))


def _loop(task, config, step_fn: TrainStep, log: StepLog, start: int, steps: int, device: torch.device) -> float:
    """Seconds for `steps` runner-style steps (ending with the read-back and a sync)."""
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for step in range(start, start + steps):
        step_fn.set_lr(config.lr)
        log.add(step, step_fn(step, config.seq_len, config.batch_size))
        if step % LOG_EVERY == 0 or log.full:
            log.read()
    log.read()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def wall_ms(task_name: str, family: str, batch: int, seq_len: int, mode: str, device: torch.device,
            windows: int = 5) -> float:
    """Median ms per step over `windows` timed windows (after a warm-up that also captures)."""
    task, config, step_fn = _setup(task_name, family, batch, seq_len, mode, device)
    log = StepLog(LOG_EVERY + 1, device)
    steps = 200 if seq_len <= 1024 else 20
    _loop(task, config, step_fn, log, 0, 10, device)  # compiles, warms up, captures
    times = [_loop(task, config, step_fn, log, 10 + w * steps, steps, device) / steps * 1e3 for w in range(windows)]
    return statistics.median(times)


def gpu_busy(task_name: str, family: str, batch: int, seq_len: int, device: torch.device,
             steps: int = 5) -> tuple[float, int, list[tuple[str, float]]]:
    """(kernel ms per step, kernels per step, the top kernels by time) of eager steps."""
    from torch.profiler import ProfilerActivity, profile

    task, config, step_fn = _setup(task_name, family, batch, seq_len, "eager", device)
    log = StepLog(LOG_EVERY + 1, device)
    _loop(task, config, step_fn, log, 0, 5, device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _loop(task, config, step_fn, log, 5, steps, device)
    kernels = cuda_kernel_times(prof, steps)
    total = sum(ms for _, _, ms in kernels)
    count = int(sum(n for _, n, _ in kernels))
    return total, count, [(name, ms) for name, _, ms in kernels[:8]]


def run_step_time(out_csv: Path | None, profile_top: bool = False) -> list[dict]:
    """Every row eager and captured in this one process; print the table, write the CSV."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    device = torch.device("cuda")
    rows = []
    for task_name, family, batch, seq_len in ROWS:
        eager = wall_ms(task_name, family, batch, seq_len, "eager", device)
        captured = wall_ms(task_name, family, batch, seq_len, "captured", device)
        busy, count, top = gpu_busy(task_name, family, batch, seq_len, device)
        rows.append({"task": task_name, "family": family, "batch": batch, "seq_len": seq_len, "eager_ms": eager,
                     "captured_ms": captured, "gpu_busy_ms": busy, "captured_over_busy": captured / busy,
                     "speedup": eager / captured, "kernels_per_step": count})
        if profile_top:
            console.print(f"[bold]{family} {batch}x{seq_len}[/]: top kernels of one eager step ({busy:.3f} ms)")
            for name, ms in top:
                console.print(f"  {ms:7.3f} ms {100 * ms / busy:5.1f}%  {name[:100]}", highlight=False)
    table = Table(title="training step wall time (ms, median): eager vs captured")
    for name in FIELDS:
        table.add_column(name, justify="left" if name in ("task", "family") else "right")
    for row in rows:
        table.add_row(*[f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in FIELDS])
    console.print(table)
    if out_csv is not None:
        write_csv(rows, out_csv, FIELDS)
        plot_step_time(rows, out_csv.with_suffix(".png"))
        console.print(f"wrote {out_csv} and {out_csv.with_suffix('.png')}")
    return rows


def plot_step_time(rows: list[dict], path: Path) -> None:
    """Bars per row: eager, captured and GPU busy ms per step (log scale), written atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.27
    for k, (key, label) in enumerate((("eager_ms", "eager"), ("captured_ms", "captured (one CUDA graph)"),
                                      ("gpu_busy_ms", "GPU busy (kernel time)"))):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        values = [float(r[key]) for r in rows]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['family']}\n{r['batch']} x {r['seq_len']}" for r in rows], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=6 * max(float(r["eager_ms"]) for r in rows))  # room for the legend above the bars
    ax.set_title("paper's small models: a training step's wall time, eager vs captured")
    ax.set_ylabel("ms per training step (median)")
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    save_png(fig, path)


def plot_step_time_csv(csv_path: Path) -> None:
    """The plot of a CSV this benchmark wrote (beside it, as .png)."""
    import csv

    with Path(csv_path).open() as f:
        plot_step_time(list(csv.DictReader(f)), Path(csv_path).with_suffix(".png"))
