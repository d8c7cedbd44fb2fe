"""Loss against position: the `--loss-by-position` artifacts of a report's runs (each evaluation
length's loss per power-of-two bin of positions) as one figure, beside what each evaluation cost
(its wall time and GPU peak memory, streamed or not). Does the loss keep falling with context (the
Mamba paper's Figures 5 and 7), and does the streamed path keep memory flat and time linear?"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from seqbench.harness import records
from seqbench.harness.config import format_length
from seqbench.harness.report.plots import _save_png
from seqbench.harness.report.query import run_label

ARTIFACTS = "loss_by_position"  # the runner's folder: <length>.json per evaluation length
FILES = ("loss_by_position.md", "loss_by_position.csv", "loss_by_position.png")


@dataclass
class PositionCurve:
    """One run's loss per bin of positions [start, end) at one evaluation length, and its cost."""

    label: str
    length: int
    chunk: int | None  # the streamed chunk, None for one forward
    bins: list[tuple[int, int, float]]
    loss: float | None
    wall_seconds: float | None
    peak_memory_mb: float | None


def position_curves(client, runs) -> list[PositionCurve]:
    """Every (run, evaluation length) that logged loss_by_position/<L>.json, by label then length."""
    curves = []
    for run in runs:
        if run.data.params.get("loss_by_position") != "True":  # asked for by the run (no listing otherwise)
            continue
        run_id, metrics = run.info.run_id, run.data.metrics
        names = [f.path for f in client.list_artifacts(run_id, ARTIFACTS) if f.path.endswith(".json")]
        if not names:
            continue
        with tempfile.TemporaryDirectory() as folder:
            for name in names:
                data = json.loads(Path(client.download_artifacts(run_id, name, folder)).read_text())
                length = int(data["length"])
                seed = run.data.tags.get(records.SEED)  # a sweep over seeds: one curve per seed
                curves.append(PositionCurve(
                    label=run_label(run.data.tags, run.data.params) + (f"/s{seed}" if seed else ""),
                    length=length, chunk=data.get("chunk"),
                    bins=[(int(b["start"]), int(b["end"]), float(b["loss"])) for b in data["bins"]],
                    loss=metrics.get(f"loss/{length}"), wall_seconds=metrics.get(f"eval_wall_seconds/{length}"),
                    peak_memory_mb=metrics.get(f"eval_peak_memory_mb/{length}")))
    return sorted(curves, key=lambda c: (c.label, c.length))


def _bin_name(start: int, end: int) -> str:
    return format_length(start) if end == start + 1 else f"{format_length(start)}–{format_length(end)}"


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render_markdown(curves: list[PositionCurve], title: str) -> str:
    """The loss per bin (a column per run and length) and the cost per evaluation."""
    bins = sorted({(s, e) for c in curves for s, e, _ in c.bins})
    heads = [f"{c.label} @ {format_length(c.length)}" for c in curves]
    lines = [f"# {title}: loss against position", "",
             "Loss (nats per token) of the tokens at positions [start, end) of each evaluated sequence, "
             "per power-of-two bin; one column per run and evaluation length.", "",
             "| positions | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    by_curve = [{(s, e): loss for s, e, loss in c.bins} for c in curves]
    for s, e in bins:
        cells = [_number(values.get((s, e))) for values in by_curve]
        lines.append(f"| {_bin_name(s, e)} | " + " | ".join(cells) + " |")
    lines += ["", "## What each evaluation cost", "",
              "| run | length | streamed in chunks of | loss | wall time (s) | peak GPU memory (MB) |",
              "|---|---|---|---|---|---|"]
    for c in curves:
        chunk = format_length(c.chunk) if c.chunk else "one forward"
        lines.append(f"| {c.label} | {format_length(c.length)} | {chunk} | {_number(c.loss)} | "
                     f"{_number(c.wall_seconds, 2)} | {_number(c.peak_memory_mb, 0)} |")
    lines += ["", "![loss against position](loss_by_position.png)", ""]
    return "\n".join(lines)


def render_csv(curves: list[PositionCurve]) -> str:
    """One row per (run, length, bin): label,length,chunk,start,end,loss,wall_seconds,peak_memory_mb."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "length", "chunk", "start", "end", "loss", "eval_wall_seconds", "eval_peak_memory_mb"])
    for c in curves:
        for s, e, loss in c.bins:
            writer.writerow([c.label, c.length, c.chunk or "", s, e, f"{loss:.6g}",
                             "" if c.wall_seconds is None else f"{c.wall_seconds:.6g}",
                             "" if c.peak_memory_mb is None else f"{c.peak_memory_mb:.6g}"])
    return buffer.getvalue()


def plot(path: Path, curves: list[PositionCurve], title: str) -> None:
    """Loss against position (log2 axis at each bin's end), one line per run and length."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for c in curves:
        ax.plot([e for _, e, _ in c.bins], [loss for _, _, loss in c.bins], marker="o", markersize=3,
                label=f"{c.label} @ {format_length(c.length)}")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_length(int(round(x)))))
    ax.set_xlabel("position in the sequence (end of each power-of-two bin)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"{title}: loss against position")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    _save_png(fig, path)


def write_position_files(curves: list[PositionCurve], out_dir: Path, title: str,
                         formats: tuple[str, ...]) -> list[Path]:
    """loss_by_position.md / .csv / .png into `out_dir` (as `formats` asks), each written whole."""
    from seqbench.harness.report.write import _write_text

    md, table, png = (Path(out_dir) / name for name in FILES)
    paths = []
    if "md" in formats:
        _write_text(md, render_markdown(curves, title))
        paths.append(md)
    if "csv" in formats:
        _write_text(table, render_csv(curves))
        paths.append(table)
    if "png" in formats:
        plot(png, curves, title)
        paths.append(png)
    return paths
