"""Sweep report: one sequence-length sweep from MLflow as a markdown table, a CSV and PNG plots.

The MLflow UI shows runs one at a time; a sweep's story (where each family stops, how its time grows
with length) needs them side by side. The same files are logged to the sweep's parent run under
`report/`, so the UI shows them next to the runs.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from seqbench.harness.config import format_length
from seqbench.core.errors import SeqbenchError
from seqbench.harness.schedule import Schedule, schedule_of
from seqbench.harness.sweep_plan import model_label
from seqbench.harness.tracking import resolve_tracking_uri, sqlite_path
from seqbench.harness import records

ARTIFACT_FOLDER = "report"
THROUGHPUT = "train_tokens_per_s"  # per length from the speed task, else the training run's own
FILES = ("report.md", "report.csv", "metric_vs_length.png", "time_per_token_vs_length.png", "memory_vs_length.png")
SCHEDULE_PLOT = "schedule.png"  # written too for a sweep whose children carry their slots
# MLflow run status -> our status tag, for runs that never set one.
_STATUS_OF_MLFLOW = {"FINISHED": "ok", "KILLED": "interrupted", "RUNNING": "running", "FAILED": "failed"}


@dataclass(frozen=True)
class ReportRow:
    """One (model, length) cell: the child run's outcome and measurements (None where not logged)."""

    model: str  # label: family, or family:size
    seq_len: int
    status: str  # ok, oom, timeout, skipped, failed, ...; for a length the run could not reach, that reason
    error: str
    main_value: float | None
    tokens_per_s: float | None
    peak_memory_mb: float | None
    run_id: str
    at_eval_length: dict[int, float] = field(default_factory=dict)  # main metric at every length evaluated
    last_validation: tuple[int, float] | None = None  # unfinished run: (steps, val_<main metric>) last logged

    @property
    def seconds_per_token(self) -> float | None:
        return 1.0 / self.tokens_per_s if self.tokens_per_s else None


@dataclass(frozen=True)
class ScalingFit:
    """time per sequence ∝ L^exponent, fitted over `lengths`."""

    exponent: float
    lengths: tuple[int, ...]


@dataclass
class Report:
    """What `write_report` found and wrote."""

    parent_run_id: str | None
    task: str
    main_metric: str
    rows: list[ReportRow]
    exponents: dict[str, ScalingFit]
    lengths: list[int] = field(default_factory=list)  # the sweep's lengths, ascending, run or not
    paths: list[Path] = field(default_factory=list)
    source: str = ""  # one line: which runs these are
    schedule: Schedule | None = None  # when and on which slot each child ran (sweeps that tag it)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(row.model for row in self.rows))


# --- scaling fit -----------------------------------------------------------------------------------------


def fit_window(lengths: Sequence[float], seconds_per_token: Sequence[float | None]) -> list[tuple[float, float]]:
    """The (length, time) points the exponent is fitted on: the upper half of the finished lengths
    (at least 2), because short lengths are dominated by fixed overheads. Empty when fewer than 2."""
    points = sorted((float(n), float(t)) for n, t in zip(lengths, seconds_per_token)
                    if t is not None and n > 0 and t > 0 and math.isfinite(t))
    keep = points[-max(2, math.ceil(len(points) / 2)):]
    return keep if len({n for n, _ in keep}) >= 2 else []


def fit_exponent(lengths: Sequence[float], seconds_per_token: Sequence[float | None]) -> float | None:
    """k in time per sequence ∝ L^k: 1 + the least-squares slope of log(time per token) vs log(L)
    over `fit_window`. ≈1 for a linear-time model (Mamba), ≈2 for attention; None with < 2 points."""
    points = fit_window(lengths, seconds_per_token)
    if not points:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
             / sum((x - mean_x) ** 2 for x in xs))
    return 1.0 + slope


def _fits(rows: list[ReportRow]) -> dict[str, ScalingFit]:
    fits = {}
    for model in dict.fromkeys(row.model for row in rows):
        done = [row for row in rows if row.model == model and row.status == "ok"]
        lengths = [row.seq_len for row in done]
        times = [row.seconds_per_token for row in done]
        exponent = fit_exponent(lengths, times)
        if exponent is not None:
            fits[model] = ScalingFit(exponent, tuple(int(n) for n, _ in fit_window(lengths, times)))
    return fits


# --- which runs ------------------------------------------------------------------------------------------


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # MLflow would create an empty store here
        raise SeqbenchError(f"no tracking store at {db}; pass --tracking-uri, or run where mlflow.db is")
    return MlflowClient(uri)


def _search(client, experiment_ids: list[str], filter_string: str = "") -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiments(client) -> list:
    found, token = [], None
    while True:
        page = client.search_experiments(page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _experiment_ids(client) -> list[str]:
    return [e.experiment_id for e in _experiments(client)]


def _newest_sweep(client, experiment_ids: list[str]):
    if not experiment_ids:
        return None
    found = client.search_runs(experiment_ids, f"tags.`{records.SWEEP}` = 'true'", max_results=1,
                               order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def _children(client, parent) -> list:
    children = _search(client, _experiment_ids(client), f"tags.`{records.PARENT}` = '{parent.info.run_id}'")
    if not children:
        raise SeqbenchError(f"run {parent.info.run_id} has no child runs; --sweep takes the id of a sweep's "
                            f"parent run (tag {records.SWEEP}=true) that has started at least one cell")
    return children


def select_runs(client, sweep_run_id: str | None = None, experiment: str | None = None) -> tuple[object, list]:
    """(sweep parent run or None, its child runs); see `write_report` for the rules."""
    from mlflow.exceptions import MlflowException

    if sweep_run_id and experiment:
        raise SeqbenchError("pass either --sweep RUN_ID or --experiment NAME, not both")
    if sweep_run_id:
        try:
            parent = client.get_run(sweep_run_id)
        except MlflowException:
            raise SeqbenchError(f"no run with id {sweep_run_id!r}; --sweep takes a sweep parent's run id "
                                f"(see the MLflow UI or `seqbench ui`)") from None
        return parent, _children(client, parent)
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in _experiments(client))
            raise SeqbenchError(f"no experiment {experiment!r}; experiments: {', '.join(names) or 'none'}")
        parent = _newest_sweep(client, [found.experiment_id])
        if parent is not None:
            return parent, _children(client, parent)
        runs = [r for r in _search(client, [found.experiment_id]) if records.PARENT not in r.data.tags]
        if not runs:
            raise SeqbenchError(f"experiment {experiment!r} has no runs")
        return None, runs
    parent = _newest_sweep(client, _experiment_ids(client))
    if parent is None:
        raise SeqbenchError(f"no sweep (a run tagged {records.SWEEP}=true) in {client.tracking_uri}; "
                            f"pass --experiment NAME to report on an experiment's runs")
    return parent, _children(client, parent)


# --- runs -> rows ----------------------------------------------------------------------------------------


def main_metric_of(task: str) -> str:
    """The task's headline metric (accuracy, loss, train_tokens_per_s, ...)."""
    from seqbench.core.registry import registry

    return registry("tasks").load(task).main_metric


def run_label(tags: dict[str, str], params: dict[str, str] | None = None) -> str:
    """A run's model label (sweep_plan.model_label) from its tags, or its params for older runs."""
    return model_label(tags.get(records.MODEL, "?"), tags.get(records.SIZE) or (params or {}).get("size"))


def _length_status(run_status: str, tags: dict[str, str], seq_len: int) -> tuple[str, str]:
    """A finished run may still have missed this length: speed's status/<L>, the runner's
    skipped/<L> (beyond the model's positions) or eval_oom_from."""
    if run_status != "ok":
        return run_status, tags.get(records.ERROR, "")
    status, _, detail = tags.get(f"status/{seq_len}", "ok").partition(": ")
    if status != "ok":
        return status, detail
    if f"skipped/{seq_len}" in tags:
        return "skipped", tags[f"skipped/{seq_len}"]
    oom_from = tags.get(records.EVAL_OOM_FROM, "")
    if oom_from.isdigit() and int(oom_from) <= seq_len:
        return "oom", f"evaluation ran out of memory from {format_length(int(oom_from))}"
    return "ok", ""


def row_of(run, main_metric: str) -> ReportRow | None:
    """The report row of one child run; None for a run without a seq_len tag (not a sweep cell)."""
    tags, metrics = run.data.tags, run.data.metrics
    try:
        seq_len = int(tags.get(records.SEQ_LEN, ""))
    except ValueError:
        return None
    run_status = tags.get(records.STATUS) or _STATUS_OF_MLFLOW.get(run.info.status, run.info.status.lower())
    status, error = _length_status(run_status, tags, seq_len)
    memory_gb = metrics.get(f"peak_memory_gb/{seq_len}")
    return ReportRow(
        model=run_label(tags, run.data.params), seq_len=seq_len, status=status, error=error,
        main_value=metrics.get(f"{main_metric}/{seq_len}"),
        tokens_per_s=metrics.get(f"{THROUGHPUT}/{seq_len}", metrics.get(THROUGHPUT)),
        peak_memory_mb=memory_gb * 1024 if memory_gb is not None else metrics.get("peak_memory_mb"),
        run_id=run.info.run_id,
        at_eval_length={int(n): v for key, v in metrics.items()
                        if (n := key.removeprefix(f"{main_metric}/")).isdigit()},
    )


def _newest_per_cell(runs: list) -> list:
    """A re-run cell keeps only its newest run."""
    newest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        newest[(run_label(run.data.tags, run.data.params), run.data.tags.get(records.SEQ_LEN))] = run
    return list(newest.values())


def _ordered(rows: list[ReportRow], model_order: list[str]) -> list[ReportRow]:
    """Models in the sweep's order (then alphabetically), lengths ascending."""
    rank = {name: i for i, name in enumerate(model_order)}
    return sorted(rows, key=lambda r: (rank.get(r.model, rank.get(r.model.split(":")[0], len(rank))),
                                       r.model, r.seq_len))


# --- formatting ------------------------------------------------------------------------------------------


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
    if row.status == "ok":
        return format_metric(main_metric, row.main_value)
    return status_text(row, with_detail=row.status == "skipped") + progress_text(row, main_metric)


def progress_text(row: ReportRow, main_metric: str) -> str:
    """' (val 43.4% at step 4,000)' for a run stopped after an in-training validation, else ''."""
    if row.status == "ok" or row.last_validation is None:
        return ""
    steps, value = row.last_validation
    return f" (val {format_metric(main_metric, value)} at step {steps:,})"


def _with_last_validation(client, row: ReportRow, main_metric: str) -> ReportRow:
    """An unfinished cell keeps the last validation value its run logged while training, so a sweep
    cut short (time-out, Ctrl-C, out of device time) still shows how far each model had got."""
    if row.status == "ok":
        return row
    history = client.get_metric_history(row.run_id, f"val_{main_metric}")
    if not history:
        return row
    last = max(history, key=lambda m: m.step)
    return replace(row, last_validation=(last.step + 1, last.value))


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
    return f"L^{fit.exponent:.2f}" if fit else "—"


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
              "k ≈ 1 is linear in length (Mamba), k ≈ 2 quadratic (attention).", ""]
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


def _eval_length_table(report: Report) -> list[str]:
    """When runs were evaluated beyond their training length (e.g. induction heads trained at 256,
    tested to 2^20): the main metric at every evaluation length, one row per run."""
    if not any(len(r.at_eval_length) > 1 for r in report.rows):
        return []
    lengths = sorted({n for r in report.rows for n in r.at_eval_length})
    rows = [[r.model, format_length(r.seq_len), status_text(r)]
            + [format_metric(report.main_metric, r.at_eval_length.get(n)) if n in r.at_eval_length else "–"
               for n in lengths] for r in report.rows]
    return ["", f"## {report.main_metric} at every evaluation length", "",
            "– : not evaluated (beyond the model's positions, or the run stopped first)", ""] + _md_table(
        ["model", "trained at", "status"] + [format_length(n) for n in lengths], rows)


def render_csv(report: Report) -> str:
    """report.csv: the long table with full-precision numbers (empty where not logged)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "seq_len", "status", report.main_metric, "tokens_per_s", "us_per_token",
                     "peak_memory_mb", "error", "run_id", "last_val_step", f"last_val_{report.main_metric}",
                     "slot", "launched_s", "seconds", "train_seconds", "eval_seconds"])
    spans = {(s.model, s.seq_len): s for s in report.schedule.spans} if report.schedule else {}
    for r in report.rows:
        span = spans.get((r.model, r.seq_len))
        us = r.seconds_per_token * 1e6 if r.seconds_per_token else None
        last_step, last_value = r.last_validation or (None, None)
        writer.writerow([r.model, r.seq_len, r.status] + ["" if v is None else repr(v) for v in
                        (r.main_value, r.tokens_per_s, us, r.peak_memory_mb)] + [r.error, r.run_id] +
                        ["" if v is None else repr(v) for v in (last_step, last_value)] +
                        ([span.slot, round(span.start_s, 3), round(span.seconds, 3)]
                         + ["" if v is None else round(v, 3) for v in (span.train_s, span.eval_s)]
                         if span else [""] * 5))
    return buffer.getvalue()


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


# --- plots -----------------------------------------------------------------------------------------------


def _plot(path: Path, report: Report, value_of: Callable[[ReportRow], float | None], ylabel: str,
          log_y: bool, fraction: bool = False, legend_suffix: dict[str, str] | None = None) -> None:
    """One line per model over the finished cells; an × with the status at the bottom edge where a
    cell did not finish, so a reader sees where each family stopped."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure  # no pyplot: no global state, no display
    from matplotlib.ticker import FuncFormatter, NullLocator, PercentFormatter

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    bottom = ax.get_xaxis_transform()  # x in data, y in axes fractions
    plotted = False
    for i, model in enumerate(report.models):
        color, name = colors[i % len(colors)], model + (legend_suffix or {}).get(model, "")
        points = sorted((r.seq_len, v) for r in report.rows if r.model == model and r.status == "ok"
                        and (v := value_of(r)) is not None and math.isfinite(v) and (v > 0 or not log_y))
        if points:
            ax.plot(*zip(*points), marker="o", color=color, label=name)
            plotted = True
        stopped = [r for r in report.rows if r.model == model and r.status != "ok"]
        for j, r in enumerate(stopped):
            y = 0.03 + 0.06 * i
            ax.plot([r.seq_len], [y], marker="x", markersize=8, color=color, linestyle="none", transform=bottom,
                    label=name if not points and j == 0 else None)
            ax.annotate(r.status, (r.seq_len, y), xycoords=bottom, xytext=(5, 0), textcoords="offset points",
                        fontsize=7, color=color, va="center")
    ax.set_xscale("log", base=2)
    ax.set_xticks(report.lengths)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_length(int(round(x)))))
    ax.xaxis.set_minor_locator(NullLocator())
    if fraction:
        ax.set_ylim(-0.02, 1.02)  # 0% and 100% points stay whole
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    elif log_y and plotted:
        ax.set_yscale("log")
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{report.task}: {ylabel} vs length")
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no cell logged this measurement", transform=ax.transAxes, ha="center", color="gray")
    _save_png(fig, path)


def plot_schedule(path: Path, schedule: Schedule, models: list[str], title: str) -> None:
    """One row per slot, one bar per child (colour: model; label: length; hatched: not ok); where
    the runs logged their times, pale for the fixed cost, solid for training, dotted for evaluation."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {m: colors[i % len(colors)] for i, m in enumerate(models)}
    fig = Figure(figsize=(9, 1.4 + 0.6 * schedule.slots), layout="constrained")
    ax = fig.subplots()
    width = max(schedule.wall_seconds, max(s.start_s + s.seconds for s in schedule.spans))
    for span in schedule.spans:
        color = color_of.get(span.model, "gray")
        ax.barh(span.slot, span.seconds, left=span.start_s, height=0.7, color=color,
                alpha=1.0 if span.fixed_s is None else 0.35, edgecolor="black", linewidth=0.5,
                hatch=None if span.status == "ok" else "//")
        if span.fixed_s is not None:  # solid: training, dotted: evaluation, after the fixed cost
            work_start = span.start_s + span.fixed_s
            ax.barh(span.slot, span.train_s, left=work_start, height=0.7, color=color, linewidth=0)
            ax.barh(span.slot, span.eval_s or 0.0, left=work_start + span.train_s, height=0.7, color=color,
                    hatch="..", edgecolor="white", linewidth=0)
        if span.seconds > 0.03 * width:
            ax.text(span.start_s + span.seconds / 2, span.slot, format_length(span.seq_len), ha="center",
                    va="center", fontsize=7)
    ax.axvline(schedule.wall_seconds, color="black", linestyle="--", linewidth=1)
    ax.axvline(schedule.bound_seconds, color="gray", linestyle=":", linewidth=1)
    ax.set_yticks(range(schedule.slots), [f"slot {i}" for i in range(schedule.slots)])
    ax.invert_yaxis()
    ax.set_xlim(0, width * 1.02)
    ax.set_xlabel("seconds since the sweep started")
    ax.set_title(f"{title}: wall {schedule.wall_seconds:,.0f} s (dashed), "
                 f"bound {schedule.bound_seconds:,.0f} s (dotted)", fontsize=10)
    handles = [Patch(color=color_of[m], label=m) for m in models if any(s.model == m for s in schedule.spans)]
    if schedule.split_seconds() is not None:
        handles += [Patch(facecolor="gray", alpha=0.35, label="fixed cost"), Patch(facecolor="gray", label="training"),
                    Patch(facecolor="gray", hatch="..", edgecolor="white", label="evaluation")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    """Write the figure under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_files(report: Report, out_dir: Path, started_ms: int | None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, table, metric_png, time_png, memory_png = (out_dir / name for name in FILES)
    _write_text(md, render_markdown(report, started_ms))
    _write_text(table, render_csv(report))
    main = report.main_metric
    fraction = is_fraction_metric(main)
    _plot(metric_png, report, lambda r: r.main_value, main, log_y=not fraction, fraction=fraction)
    _plot(time_png, report, lambda r: r.seconds_per_token * 1e6 if r.seconds_per_token else None,
          "time per token (µs)", log_y=True,
          legend_suffix={m: rf"  time $\propto L^{{{f.exponent:.2f}}}$" for m, f in report.exponents.items()})
    unit, scale = _memory_unit(report.rows)
    _plot(memory_png, report, lambda r: r.peak_memory_mb / scale if r.peak_memory_mb is not None else None,
          f"peak memory ({unit})", log_y=True)
    paths = [md, table, metric_png, time_png, memory_png]
    if report.schedule is not None:
        paths.append(out_dir / SCHEDULE_PLOT)
        plot_schedule(paths[-1], report.schedule, report.models, report.task)
    return paths


# --- MLflow ----------------------------------------------------------------------------------------------


def metric_key(name: str) -> str:
    """A metric name MLflow accepts on every platform: other characters (':', '+', ...) become '_'."""
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", name)


def _log_to_parent(client, parent_run_id: str, report: Report) -> None:
    from mlflow.entities import Metric

    for path in report.paths:
        client.log_artifact(parent_run_id, str(path), artifact_path=ARTIFACT_FOLDER)
    now = int(time.time() * 1000)
    metrics = [Metric(f"time_exponent/{metric_key(m)}", fit.exponent, now, 0) for m, fit in report.exponents.items()]
    if metrics:
        client.log_batch(parent_run_id, metrics=metrics)


def write_report(out_dir: Path, tracking_uri: str | None = None, sweep_run_id: str | None = None,
                 experiment: str | None = None, log_to_parent: bool = True) -> Report:
    """Write report.md, report.csv and three PNGs for one sweep into `out_dir`.

    Runs: the children of `sweep_run_id`; else the newest sweep parent in `experiment`, or, when
    that experiment has none, its top-level runs (newest per model and length); else the newest
    sweep parent in the store. With a sweep parent and `log_to_parent`, the files go to its
    artifacts under report/ and the exponents to its metrics time_exponent/<model>.
    """
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
    rows = _ordered([_with_last_validation(client, row, main)
                     for run in runs if (row := row_of(run, main)) is not None], model_order)
    if not rows:
        raise SeqbenchError(f"none of the runs of {source} has a seq_len tag; nothing to report")
    planned = parent.data.tags.get(records.LENGTHS, "") if parent else ""
    lengths = sorted({r.seq_len for r in rows} | {int(n) for n in planned.split(",") if n.strip().isdigit()})
    report = Report(parent_run_id=parent.info.run_id if parent else None, task=task, main_metric=main,
                    rows=rows, exponents=_fits(rows), lengths=lengths, source=source,
                    schedule=schedule_of(parent, runs, lambda r: run_label(r.data.tags, r.data.params))
                    if parent is not None else None)
    report.paths = _write_files(report, Path(out_dir), started)
    if parent is not None and log_to_parent:
        _log_to_parent(client, parent.info.run_id, report)
    return report
