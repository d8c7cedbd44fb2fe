"""A report as text: the markdown tables, the CSV, the console table and the number formats they
share."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from datetime import datetime, timezone

from seqbench.harness.config import format_length
from seqbench.harness.schedule import Schedule
from seqbench.harness.report.model import (EVAL_LENGTH_PLOT, MIN_FIT_POINTS, Report, ReportRow, SCHEDULE_PLOT, ScalingFit,
                                           THROUGHPUT)


def is_fraction_metric(name: str) -> bool:
    """Accuracy-like metrics live in [0, 1]: shown as percentages on a linear axis."""
    return "accuracy" in name


def format_number(value: float | None) -> str:
    """3 significant digits, without exponents for everyday magnitudes: 0.0123, 2.35, 123,000."""
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    if 1000 <= abs(value) < 1e15:
        return f"{float(f'{value:.3g}'):,.0f}"
    return f"{value:.3g}"


def format_metric(name: str, value: float | None) -> str:
    if value is not None and is_fraction_metric(name):
        return f"{100 * value:.1f}%"
    return format_number(value)


def status_text(row: ReportRow, with_detail: bool = True, limit: int = 60) -> str:
    """'oom', or with the error: 'skipped (oom at 4k)'; long errors cut at `limit` characters."""
    if row.status == "ok" or not row.error or not with_detail:
        return row.status
    detail = row.error.splitlines()[0]
    return f"{row.status} ({detail[:limit] + '…' if len(detail) > limit else detail})"


def pivot_cell(row: ReportRow | None, main_metric: str) -> str:
    """The main metric where the cell finished, else why not (details only for skipped cells)."""
    if row is None:
        return ""
    if row.seeds:  # several seeds: their mean ± sample standard deviation, and how many finished
        done = sum(v is not None for v in row.seed_values)
        if not done:
            return status_text(row, with_detail=row.status == "skipped") + f" (0/{len(row.seeds)} seeds)"
        spread = row.spread
        sd = f" ± {format_metric(main_metric, spread[0])}" if spread else ""
        return f"{format_metric(main_metric, row.main_value)}{sd} ({done}/{len(row.seeds)} seeds)"
    if row.status == "ok":
        return format_metric(main_metric, row.main_value)
    return status_text(row, with_detail=row.status == "skipped") + progress_text(row, main_metric)


def progress_text(row: ReportRow, main_metric: str) -> str:
    """' (val 43.4% at step 4,000)' for a run stopped after an in-training validation, else ''."""
    if row.status == "ok" or row.last_validation is None:
        return ""
    steps, value = row.last_validation
    return f" (val {format_metric(main_metric, value)} at step {steps:,})"


def _memory_unit(rows: list[ReportRow]) -> tuple[str, float]:
    """GB when any cell reached a gigabyte, else MB: (unit, MB per unit)."""
    largest = max((r.peak_memory_mb for r in rows if r.peak_memory_mb is not None), default=0.0)
    return ("GB", 1024.0) if largest >= 1024 else ("MB", 1.0)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_md_cell, cells)) + " |" for cells in body]


def _fit_text(fit: ScalingFit | None) -> str:
    """'L^1.02', or 'L^1.02 (2 points)' for an exponent fitted on fewer than MIN_FIT_POINTS lengths."""
    if not fit:
        return "—"
    return f"L^{fit.exponent:.2f}" + (f" ({len(fit.lengths)} points)" if fit.few_points else "")


def _date(ms: int | None) -> str:
    seconds = ms / 1000 if ms else time.time()
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render_markdown(report: Report, started_ms: int | None = None) -> str:
    """report.md: title, pivot table, long table, fitted exponents and the plots."""
    main = report.main_metric
    unit, scale = _memory_unit(report.rows)
    cells = {(r.model, r.seq_len): r for r in report.rows}
    lines = [f"# {report.task}: sequence-length sweep", "",
             f"{report.source} · started {_date(started_ms)} · report written {_date(None)}", "",
             f"## {main} by length", ""]
    lines += _md_table(["model"] + [format_length(n) for n in report.lengths],
                       [[m] + [pivot_cell(cells.get((m, n)), main) for n in report.lengths] for m in report.models])
    lines += ["", "## Every cell", ""]
    main_column = main != THROUGHPUT  # the speed task's main metric is the throughput itself
    lines += _md_table(
        ["model", "length"] + [main] * main_column + ["tokens/s", "µs/token", f"peak memory ({unit})", "status"],
        [[r.model, format_length(r.seq_len)] + [format_metric(main, r.main_value)] * main_column
         + [format_number(r.tokens_per_s), format_number(r.seconds_per_token * 1e6 if r.seconds_per_token else None),
            format_number(r.peak_memory_mb / scale if r.peak_memory_mb is not None else None),
            status_text(r) + progress_text(r, main)]
         for r in report.rows])
    lines += _eval_length_table(report)
    lines += ["", "Throughput is training tokens per second (the speed task's own measurement where it ran). "
              "Peak memory is CUDA peak allocated on GPU runs, the process's peak resident set on CPU runs.",
              "", "## Scaling of time per sequence", "",
              "time per sequence ∝ L^k with k = 1 + the least-squares slope of log(time per token) vs log(L), "
              "fitted over the upper half of each model's finished lengths (at least 2). "
              "k ≈ 1 is linear in length (Mamba), k ≈ 2 quadratic (attention). "
              f"An exponent fitted on fewer than {MIN_FIT_POINTS} lengths is marked with its number of points: "
              "a line through two points always fits, so nothing says whether time follows a power law.", ""]
    lines += _md_table(["model", "time ∝", "fitted lengths"],
                       [[m, _fit_text(report.exponents.get(m)),
                         (", ".join(format_length(n) for n in report.exponents[m].lengths)
                          if m in report.exponents else "fewer than 2 finished lengths")] for m in report.models])
    lines += ["", "## Plots", "", f"![{main} vs length](metric_vs_length.png)", "",
              "![time per token vs length](time_per_token_vs_length.png)", "",
              "![peak memory vs length](memory_vs_length.png)", ""]
    if report.schedule is not None:
        lines += schedule_markdown(report.schedule)
    return "\n".join(lines)


def schedule_markdown(schedule: Schedule) -> list[str]:
    """The schedule section: wall time against its lower bound, where the children's time went,
    and each slot's busy and idle time."""
    longest, slots = schedule.longest, f"{schedule.slots} slot{'s' * (schedule.slots > 1)}"
    lines = ["", "## Schedule", "",
             f"{len(schedule.spans)} children on {slots}: wall time **{schedule.wall_seconds:,.0f} s**; the "
             f"children took {schedule.total_seconds:,.0f} s in all, the longest {longest.seconds:,.0f} s "
             f"({longest.model} at {format_length(longest.seq_len)}). No order of these children on {slots} "
             f"finishes before max(longest, total ÷ slots) = {schedule.bound_seconds:,.0f} s; this one kept "
             f"{schedule.busy_slots:.2f} slots busy on average. A slot is one of the `--jobs` workers "
             f"(a GPU each where there are several; a Slurm array gives each child its own). A child's "
             f"time runs from its launch (process start, imports and kernel compilation included) to "
             f"the end of its run.", ""]
    split = schedule.split_seconds()
    if split is not None:
        train, evaluation, fixed = split
        whole = max(train + evaluation + fixed, 1e-9)
        lines += [f"Of the children's time, training took {train:,.0f} s ({100 * train / whole:.0f}%), evaluation "
                  f"{evaluation:,.0f} s ({100 * evaluation / whole:.0f}%), and {fixed:,.0f} s "
                  f"({100 * fixed / whole:.0f}%) was each child's fixed cost: process start, imports, device "
                  f"set-up, MLflow records (kernel compilation falls in the first training step).", ""]
    body = []
    for slot in range(schedule.slots):
        busy = schedule.busy_seconds(slot)
        body.append([str(slot), str(sum(1 for s in schedule.spans if s.slot == slot)), f"{busy:,.0f}",
                     f"{max(0.0, schedule.wall_seconds - busy):,.0f}"])
    return lines + _md_table(["slot", "children", "busy (s)", "idle (s)"], body) + [
        "", f"![schedule]({SCHEDULE_PLOT})", ""]


def evaluated_beyond(report: Report) -> list[int]:
    """Every evaluation length when runs were evaluated beyond their training length (e.g.
    induction heads trained at 256, tested to 2^20), else none."""
    if not any(len(r.at_eval_length) > 1 for r in report.rows):
        return []
    return sorted({n for r in report.rows for n in r.at_eval_length})


def _eval_length_table(report: Report) -> list[str]:
    """The main metric at every evaluation length, one row per run (when runs were evaluated
    beyond their training length), and its plot."""
    lengths = evaluated_beyond(report)
    if not lengths:
        return []
    rows = [[r.model, format_length(r.seq_len), status_text(r)]
            + [format_metric(report.main_metric, r.at_eval_length.get(n)) if n in r.at_eval_length else "–"
               for n in lengths] for r in report.rows]
    return ["", f"## {report.main_metric} at every evaluation length", "",
            "– : not evaluated (beyond the model's positions, or the run stopped first)", ""] + _md_table(
        ["model", "trained at", "status"] + [format_length(n) for n in lengths], rows) + [
        "", f"![{report.main_metric} vs evaluation length]({EVAL_LENGTH_PLOT})", ""]


def _long_table(report: Report) -> tuple[list[str], list[list]]:
    """The long table's columns and, per row, its values at full precision (None where not logged):
    what report.csv and report.json both hold."""
    beyond = evaluated_beyond(report)  # one column per evaluation length, as the runs name them
    header = ["model", "seq_len", "status", report.main_metric, "tokens_per_s", "us_per_token",
              "peak_memory_mb", "error", "run_id", "last_val_step", f"last_val_{report.main_metric}",
              "slot", "launched_s", "seconds", "train_seconds", "eval_seconds", "seeds",
              f"{report.main_metric}_by_seed", f"{report.main_metric}_sd", f"{report.main_metric}_min",
              f"{report.main_metric}_max"] + [f"{report.main_metric}/{n}" for n in beyond]
    spans = {(s.model, s.seq_len): s for s in report.schedule.spans} if report.schedule else {}
    rows = []
    for r in report.rows:
        span = spans.get((r.model, r.seq_len))
        us = r.seconds_per_token * 1e6 if r.seconds_per_token else None
        last_step, last_value = r.last_validation or (None, None)
        timing = ([span.slot, round(span.start_s, 3), round(span.seconds, 3)]
                  + [None if v is None else round(v, 3) for v in (span.train_s, span.eval_s)]
                  if span else [None] * 5)
        spread = r.spread or (None, None, None)
        by_seed = (";".join(f"{seed}:{'' if v is None else repr(v)}" for seed, v in zip(r.seeds, r.seed_values))
                   if r.seeds else None)
        seeds = ";".join(map(str, r.seeds)) if r.seeds else (None if r.seed is None else str(r.seed))
        rows.append([r.model, r.seq_len, r.status, r.main_value, r.tokens_per_s, us, r.peak_memory_mb, r.error,
                     r.run_id, last_step, last_value] + timing + [seeds, by_seed, *spread]
                    + [r.at_eval_length.get(n) for n in beyond])
    return header, rows


def render_csv(report: Report) -> str:
    """report.csv: the long table with full-precision numbers (empty where not logged)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header, rows = _long_table(report)
    writer.writerow(header)
    for values in rows:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, (int, float)) else v for v in values])
    return buffer.getvalue()


def render_json(report: Report) -> str:
    """report.json: the CSV's rows (the same numbers, null where the CSV is empty) with what the
    report is of and the fitted exponents."""
    header, rows = _long_table(report)
    document = {
        "schema": 1,
        "task": report.task,
        "main_metric": report.main_metric,
        "source": report.source,
        "parent_run_id": report.parent_run_id,
        "lengths": report.lengths,
        "rows": [{key: _json_number(v) for key, v in zip(header, values)} for values in rows],
        "exponents": {model: {"exponent": fit.exponent, "lengths": list(fit.lengths), "points": len(fit.lengths),
                              "few_points": fit.few_points} for model, fit in report.exponents.items()},
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def _json_number(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render_console_table(report: Report):
    """The pivot table and fitted exponents, for the terminal."""
    from rich.table import Table

    table = Table(title=f"{report.task}: {report.main_metric} by length")
    table.add_column("model", style="bold")
    for n in report.lengths:
        table.add_column(format_length(n), justify="right")
    table.add_column("time ∝", justify="right")
    cells = {(r.model, r.seq_len): r for r in report.rows}
    for m in report.models:
        table.add_row(m, *[pivot_cell(cells.get((m, n)), report.main_metric) for n in report.lengths],
                      _fit_text(report.exponents.get(m)))
    return table


def metric_key(name: str) -> str:
    """A metric name MLflow accepts on every platform: other characters (':', '+', ...) become '_'."""
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", name)
