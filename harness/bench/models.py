"""Model speed benchmark: forward and forward+backward time, tokens/s and peak memory.

A script behind `seqbench bench models`, not a test. Each (model, size, length, batch) is built
fresh, run on random token ids under bf16 autocast (as training does on CUDA), timed with CUDA
events (median of repeats after warm-up); an out-of-memory is a recorded result, not a crash.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from seqbench.core.measure import measure_generation, measure_model, peak_gb
from seqbench.models import build_model
from seqbench.models.presets import LM_VOCAB, preset
from seqbench.core.types import HeadSpec

FIELDS = ["model", "size", "n_parameters", "seq_len", "batch", "status", "fwd_ms", "fwd_bwd_ms",
          "train_tokens_per_s", "peak_memory_gb"]


def language_model(family: str, size: str) -> torch.nn.Module:
    """A named preset of `family` as a byte-level language model on the current CUDA device."""
    return build_model(family, vocab_size=LM_VOCAB, head=HeadSpec("token", LM_VOCAB), **preset(family, size)).cuda()


def bench_one(family: str, size: str, seq_len: int, batch: int, repeats: int = 10, warmup: int = 3) -> dict:
    """Time one configuration on the current CUDA device; an OOM is a recorded status."""
    device = torch.device("cuda")
    row = {"model": family, "size": size, "seq_len": seq_len, "batch": batch}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = None
    try:
        torch.manual_seed(0)
        model = language_model(family, size)
        row["n_parameters"] = model.num_parameters()
        row.update(measure_model(model, LM_VOCAB, seq_len, batch, device, repeats, warmup))
        row["status"] = "ok"
    except torch.OutOfMemoryError:
        row["status"] = "oom"
    finally:
        row["peak_memory_gb"] = peak_gb(device)
        model = None
        torch.cuda.empty_cache()
    return row


def write_csv(rows: list[dict], path: Path, fields: list[str] | None = None) -> None:
    """Write rows to `path` through a temporary file (never a half-written CSV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


def save_png(figure, path: Path) -> None:
    """Write a matplotlib figure to `path` through a temporary file (never a half-written PNG)."""
    tmp = path.with_name(path.name + ".tmp.png")
    figure.savefig(tmp, dpi=120)
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


GENERATION_FIELDS = ["model", "size", "n_parameters", "dtype", "batch", "prompt_len", "new_tokens", "cuda_graph", "status",
                     "gen_ms", "gen_tokens_per_s"]


def read_generation_csv(path: Path) -> list[dict]:
    """Rows of a generation CSV written by `run_generation_bench`, numbers parsed."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [name for name in ("model", "size", "n_parameters", "batch", "status", "gen_tokens_per_s")
               if rows and name not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path} is not a generation CSV (missing: {', '.join(missing) or 'every row'})")
    for row in rows:
        row["batch"], row["n_parameters"] = int(row["batch"]), int(row["n_parameters"])
        row["gen_tokens_per_s"] = float(row["gen_tokens_per_s"]) if row["gen_tokens_per_s"] else None
    return rows


def generation_ratios(rows: list[dict]) -> dict[str, dict[int, float]]:
    """Mamba over the Transformer of the nearest parameter count, per batch both finished:
    {"mamba:1.4b / transformer:1.3b": {batch: ratio}} (the paper's comparison in Figure 8, right)."""
    done = [r for r in rows if r["status"] == "ok" and r.get("gen_tokens_per_s")]
    by_model: dict[tuple[str, str], dict[int, dict]] = {}
    for r in done:
        by_model.setdefault((r["model"], r["size"]), {})[r["batch"]] = r
    transformers = [key for key in by_model if key[0] == "transformer"]
    ratios = {}
    for key, per_batch in by_model.items():
        if key[0] != "mamba" or not transformers:
            continue
        params = next(iter(per_batch.values()))["n_parameters"]
        other = min(transformers, key=lambda t: abs(next(iter(by_model[t].values()))["n_parameters"] - params))
        shared = sorted(set(per_batch) & set(by_model[other]))
        ratios[f"mamba:{key[1]} / transformer:{other[1]}"] = {
            b: per_batch[b]["gen_tokens_per_s"] / by_model[other][b]["gen_tokens_per_s"] for b in shared}
    return ratios


def plot_generation(rows: list[dict], path: Path) -> None:
    """Two panels: tokens/s vs batch per model (log-log), and Mamba / Transformer at similar size."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    speed, ratio = figure.subplots(1, 2)
    for model, size in dict.fromkeys((r["model"], r["size"]) for r in rows):
        points = [(r["batch"], r["gen_tokens_per_s"]) for r in rows
                  if (r["model"], r["size"]) == (model, size) and r["status"] == "ok" and r.get("gen_tokens_per_s")]
        if points:
            speed.plot(*zip(*points), marker="o", markersize=4, label=f"{model}:{size}",
                       linestyle="-" if model == "mamba" else "--")
    first = rows[0] if rows else {}
    speed.set(yscale="log", xlabel="batch", ylabel="generated tokens / s",
              title=f"prompt {first.get('prompt_len', '?')}, {first.get('new_tokens', '?')} new tokens")
    for label, per_batch in generation_ratios(rows).items():
        if per_batch:
            ratio.plot(list(per_batch), list(per_batch.values()), marker="o", markersize=4, label=label)
    ratio.axhline(1.0, color="grey", linewidth=0.8)
    ratio.set(xlabel="batch", ylabel="throughput ratio", title="Mamba / Transformer of similar size")
    for axis in (speed, ratio):
        axis.set_xscale("log", base=2)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    save_png(figure, path)


def run_generation_bench(configs: list[tuple[str, str]], prompt_len: int, new_tokens: int, batches: list[int],
                         out_csv: Path | None, cuda_graph: bool = True, dtype: str = "bf16") -> list[dict]:
    """Generation throughput of every (model, size) at every batch (paper Figure 8, right): batch ×
    new tokens / time of prefill plus decoding; an out-of-memory ends that model's larger batches.
    `dtype` "bf16" runs on bf16 weights (inference as deployed), "fp32" on fp32 weights under
    bf16 autocast (as training holds them)."""
    from rich.console import Console
    from rich.table import Table

    device = torch.device("cuda")
    rows = []
    for family, size in configs:
        torch.manual_seed(0)
        model = language_model(family, size)
        if dtype == "bf16":
            model = model.to(torch.bfloat16)
        for batch in batches:
            row = {"model": family, "size": size, "n_parameters": model.num_parameters(), "dtype": dtype, "batch": batch,
                   "prompt_len": prompt_len, "new_tokens": new_tokens, "status": "ok"}
            try:
                row.update(measure_generation(model, LM_VOCAB, prompt_len, new_tokens, batch, device,
                                              cuda_graph=cuda_graph))
            except torch.OutOfMemoryError:
                row["status"] = "oom"
            rows.append(row)
            print(f"# {family}:{size} batch {batch}: {row['status']} "
                  f"{row.get('gen_tokens_per_s', float('nan')):,.0f} tokens/s", flush=True)
            if out_csv is not None:  # after every row: a cut-short run keeps what it measured
                write_csv(rows, out_csv, GENERATION_FIELDS)
                plot_generation(rows, out_csv.with_suffix(".png"))
            torch.cuda.empty_cache()
            if row["status"] == "oom":
                break
        model = None
        torch.cuda.empty_cache()
    table = Table(title=f"generation · prompt {prompt_len} · {new_tokens} new tokens · {torch.cuda.get_device_name()}")
    for name in ("model", "size", "batch", "CUDA graph", "status", "tokens/s"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(r["model"], r["size"], str(r["batch"]), "yes" if r.get("cuda_graph") else "no", r["status"],
                      f"{r.get('gen_tokens_per_s', float('nan')):,.0f}")
    Console().print(table)
    return rows
