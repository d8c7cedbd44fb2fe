"""Writing a report: its files (temporary name, then renamed) and the same files logged to the
sweep's parent run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from seqbench.core.errors import SeqbenchError
from seqbench.harness.schedule import schedule_of
from seqbench.harness.tracking import resolve_tracking_uri
from seqbench.harness import records
from seqbench.harness.report.fits import _fits
from seqbench.harness.report.model import (ARTIFACT_FOLDER, DEFAULT_FORMATS, EVAL_LENGTH_PLOT, FILES, FORMATS, JSON_FILE,
                                           Report, SCHEDULE_PLOT)
from seqbench.harness.report.plots import _plot, plot_eval_lengths, plot_schedule
from seqbench.harness.report.positions import position_curves, write_position_files
from seqbench.harness.report.query import (_client, _newest_per_cell, _ordered, _with_last_validation, main_metric_of,
                                           merge_seeds, row_of, run_label, select_runs)
from seqbench.harness.report.render import (_memory_unit, evaluated_beyond, is_fraction_metric, metric_key, render_csv,
                                            render_json, render_markdown)


def parse_formats(text: str) -> tuple[str, ...]:
    """'md,csv,json' -> ('md', 'csv', 'json'); SeqbenchError naming the accepted ones otherwise."""
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise SeqbenchError(f"--format takes comma-separated {', '.join(FORMATS)}; got {text!r}")
    return chosen


def check_out_dir(path: Path, option: str = "--out") -> None:
    """A report folder that cannot be one (an existing file, a file on its way) is one line, before
    anything is read or written."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise SeqbenchError(f"{option} {path}: {folder} is a file, not a folder; the report writes "
                                    f"report.md, report.csv and its plots into a folder")
            return


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_files(report: Report, out_dir: Path, started_ms: int | None,
                 formats: tuple[str, ...] = DEFAULT_FORMATS) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, table, metric_png, time_png, memory_png = (out_dir / name for name in FILES)
    paths = []
    if "md" in formats:
        _write_text(md, render_markdown(report, started_ms))
        paths.append(md)
    if "csv" in formats:
        _write_text(table, render_csv(report))
        paths.append(table)
    if "json" in formats:
        _write_text(out_dir / JSON_FILE, render_json(report))
        paths.append(out_dir / JSON_FILE)
    if "png" not in formats:
        return paths
    main = report.main_metric
    fraction = is_fraction_metric(main)
    _plot(metric_png, report, lambda r: r.main_value, main, log_y=not fraction, fraction=fraction, seed_range=True)
    _plot(time_png, report, lambda r: r.seconds_per_token * 1e6 if r.seconds_per_token else None,
          "time per token (µs)", log_y=True,
          legend_suffix={m: rf"  time $\propto L^{{{f.exponent:.2f}}}$" + (f" ({len(f.lengths)} points)" * f.few_points)
                         for m, f in report.exponents.items()})
    unit, scale = _memory_unit(report.rows)
    _plot(memory_png, report, lambda r: r.peak_memory_mb / scale if r.peak_memory_mb is not None else None,
          f"peak memory ({unit})", log_y=True)
    paths += [metric_png, time_png, memory_png]
    beyond = evaluated_beyond(report)
    if beyond:
        paths.append(out_dir / EVAL_LENGTH_PLOT)
        plot_eval_lengths(paths[-1], report, beyond)
    if report.schedule is not None:
        paths.append(out_dir / SCHEDULE_PLOT)
        plot_schedule(paths[-1], report.schedule, report.models, report.task)
    return paths


def _log_to_parent(client, parent_run_id: str, report: Report) -> None:
    from mlflow.entities import Metric

    for path in report.paths:
        client.log_artifact(parent_run_id, str(path), artifact_path=ARTIFACT_FOLDER)
    now = int(time.time() * 1000)
    metrics = [Metric(f"time_exponent/{metric_key(m)}", fit.exponent, now, 0) for m, fit in report.exponents.items()]
    if metrics:
        client.log_batch(parent_run_id, metrics=metrics)


def write_report(out_dir: Path, tracking_uri: str | None = None, sweep_run_id: str | None = None,
                 experiment: str | None = None, log_to_parent: bool = True,
                 formats: tuple[str, ...] = DEFAULT_FORMATS) -> Report:
    """Write report.md, report.csv and three PNGs for one sweep into `out_dir` (`formats` chooses
    among md, csv, png and json: report.json holds the CSV's numbers); runs evaluated with
    --loss-by-position add loss_by_position.md / .csv / .png (harness.report.positions).

    Runs: the children of `sweep_run_id`; else the newest sweep parent in `experiment`, or, when
    that experiment has none, its top-level runs (newest per model and length); else the newest
    sweep parent in the store. With a sweep parent and `log_to_parent`, the files go to its
    artifacts under report/ and the exponents to its metrics time_exponent/<model>.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SeqbenchError(f"unknown report format {unknown[0]!r}; accepted: {', '.join(FORMATS)}")
    check_out_dir(Path(out_dir))
    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    parent, runs = select_runs(client, sweep_run_id, experiment)
    runs = _newest_per_cell(runs)
    if parent is not None:
        task = parent.data.tags.get(records.TASK) or next((r.data.tags[records.TASK] for r in runs if records.TASK in r.data.tags), "")
        name = parent.info.run_name or parent.info.run_id
        source, started = f"sweep `{name}` (run {parent.info.run_id})", parent.info.start_time
    else:
        newest = max(runs, key=lambda r: r.info.start_time or 0)
        task = newest.data.tags.get(records.TASK, "")
        runs = [r for r in runs if r.data.tags.get(records.TASK) == task]  # an experiment may mix tasks
        source, started = f"experiment `{experiment}`, newest run per model and length", newest.info.start_time
    if not task:
        raise SeqbenchError(f"the runs in {uri} have no task tag; only runs recorded by seqbench can be reported")
    main = main_metric_of(task)
    model_order = [m for m in (parent.data.tags.get(records.MODELS, "") if parent else "").split(",") if m]
    rows = _ordered(merge_seeds([_with_last_validation(client, row, main)
                                 for run in runs if (row := row_of(run, main)) is not None]), model_order)
    if not rows:
        raise SeqbenchError(f"none of the runs of {source} has a seq_len tag; nothing to report")
    planned = parent.data.tags.get(records.LENGTHS, "") if parent else ""
    lengths = sorted({r.seq_len for r in rows} | {int(n) for n in planned.split(",") if n.strip().isdigit()})
    report = Report(parent_run_id=parent.info.run_id if parent else None, task=task, main_metric=main,
                    rows=rows, exponents=_fits(rows), lengths=lengths, source=source,
                    schedule=schedule_of(parent, runs, lambda r: run_label(r.data.tags, r.data.params))
                    if parent is not None else None)
    report.paths = _write_files(report, Path(out_dir), started, tuple(formats))
    curves = position_curves(client, runs)  # runs evaluated with --loss-by-position
    if curves:
        report.paths += write_position_files(curves, Path(out_dir), task, tuple(formats))
    if parent is not None and log_to_parent:
        _log_to_parent(client, parent.info.run_id, report)
    return report
