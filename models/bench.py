"""Model speed benchmark: forward and forward+backward time, tokens/s and peak memory.

A script behind `seqbench bench models`, not a test. Each (model, size, length, batch) is built
fresh, run on random token ids under bf16 autocast (as training does on CUDA), timed with CUDA
events (median of repeats after warm-up); an out-of-memory is a recorded result, not a crash.
"""

from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path

import torch

from models import build_model
from models.presets import LM_VOCAB, preset
from tasks.base import HeadSpec

FIELDS = ["model", "size", "n_parameters", "seq_len", "batch", "status", "fwd_ms", "fwd_bwd_ms",
          "train_tokens_per_s", "peak_memory_gb"]


def _median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def bench_one(family: str, size: str, seq_len: int, batch: int, repeats: int = 10, warmup: int = 3) -> dict:
    """Time one configuration on the current CUDA device."""
    row = {"model": family, "size": size, "seq_len": seq_len, "batch": batch}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        torch.manual_seed(0)
        model = build_model(family, vocab_size=LM_VOCAB, head=HeadSpec("token", LM_VOCAB), **preset(family, size)).cuda()
        row["n_parameters"] = model.num_parameters()
        ids = torch.randint(0, LM_VOCAB, (batch, seq_len), device="cuda")

        def forward():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(ids)

        def forward_backward():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(ids)
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
            loss.backward()
            model.zero_grad(set_to_none=True)

        row["fwd_ms"] = _median_ms(forward, repeats, warmup)
        row["fwd_bwd_ms"] = _median_ms(forward_backward, repeats, warmup)
        row["train_tokens_per_s"] = batch * seq_len / (row["fwd_bwd_ms"] / 1000)
        row["status"] = "ok"
    except torch.OutOfMemoryError:
        row["status"] = "oom"
    finally:
        row["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        model = ids = None
        torch.cuda.empty_cache()
    return row


def write_csv(rows: list[dict], path: Path) -> None:
    """Write rows to `path` through a temporary file (never a half-written CSV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


def run_model_bench(configs: list[tuple[str, str]], lengths: list[int], batch: int, out_csv: Path | None) -> list[dict]:
    """Benchmark every (model, size) at every length; print a table, write the CSV if asked."""
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    jobs = [(family, size, n) for family, size in configs for n in lengths]
    rows = [bench_one(family, size, n, batch) for family, size, n in track(jobs, description="bench models")]
    table = Table(title=f"models · batch {batch} · bf16 autocast · {torch.cuda.get_device_name()}")
    for name in ("model", "size", "params", "length", "status", "fwd ms", "fwd+bwd ms", "tokens/s", "peak GB"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(r["model"], r["size"], f"{r.get('n_parameters', 0) / 1e6:.1f}M", str(r["seq_len"]), r["status"],
                      f"{r.get('fwd_ms', float('nan')):.2f}", f"{r.get('fwd_bwd_ms', float('nan')):.2f}",
                      f"{r.get('train_tokens_per_s', float('nan')):,.0f}", f"{r['peak_memory_gb']:.2f}")
    Console().print(table)
    if out_csv is not None:
        write_csv(rows, out_csv)
    return rows
