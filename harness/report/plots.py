"""A report as pictures: metric, time per token and memory against length, and the sweep's
schedule."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

from seqbench.harness.config import format_length
from seqbench.harness.schedule import Schedule
from seqbench.harness.report.model import Report, ReportRow
from seqbench.harness.report.render import is_fraction_metric


def _plot(path: Path, report: Report, value_of: Callable[[ReportRow], float | None], ylabel: str,
          log_y: bool, fraction: bool = False, legend_suffix: dict[str, str] | None = None,
          seed_range: bool = False) -> None:
    """One line per model over the finished cells; an × with the status at the bottom edge where a
    cell did not finish, so a reader sees where each family stopped; with `seed_range`, a cell of
    several seeds also shows the range of their values (the main metric's, which `value_of` gives)."""
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
        if seed_range:  # a cell of several seeds: the range of their values about the mean
            for r in report.rows:
                if r.model == model and r.status == "ok" and r.spread and (v := value_of(r)) is not None:
                    _, low, high = r.spread
                    ax.errorbar([r.seq_len], [v], yerr=[[v - low], [high - v]], fmt="none", ecolor=color,
                                capsize=3, alpha=0.7)
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


def plot_eval_lengths(path: Path, report: Report, lengths: list[int]) -> None:
    """The main metric against the evaluation length, one line per run (model, training length),
    with the training length marked: how far each model extrapolates."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullLocator, PercentFormatter

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(r for r in report.rows if r.at_eval_length):
        points = sorted(row.at_eval_length.items())
        label = row.model if len({r.seq_len for r in report.rows}) == 1 else f"{row.model} @ {format_length(row.seq_len)}"
        if row.status != "ok":
            label += f" ({row.status})"
        ax.plot(*zip(*points), marker="o", markersize=4, color=colors[i % len(colors)], label=label)
    for n in sorted({r.seq_len for r in report.rows}):
        ax.axvline(n, color="gray", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_length(int(round(x)))))
    ax.xaxis.set_minor_locator(NullLocator())
    if is_fraction_metric(report.main_metric):
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel("evaluation length (tokens); dotted: training length")
    ax.set_ylabel(report.main_metric)
    ax.set_title(f"{report.task}: {report.main_metric} vs evaluation length")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
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
