"""When and where each child of a sweep ran: the wall-time side of `seqbench sweep --jobs K`.

A parallel sweep finishes no sooner than its longest child, nor sooner than the children's total
time over K slots. The report compares the wall time with that bound and draws the children as bars
per slot, so a long child that started last (the sweep starts the shortest lengths first) shows.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.config import format_length

PLOT = "schedule.png"
# Tags the sweep sets on each child as it launches it: the worker slot (a GPU under --jobs on a
# multi-GPU machine) and the launch time in ms since the epoch (a retried child's run is older;
# a Slurm job's launch is its submission, so its time in the queue counts).
SLOT_TAG, LAUNCHED_TAG = "sweep_slot", "sweep_launched_ms"


@dataclass(frozen=True)
class ChildSpan:
    """One launched child: its slot, its start and duration in seconds from the sweep's start, and
    of that duration its training and evaluation time (None where the run did not log them)."""

    model: str
    seq_len: int
    status: str
    slot: int
    start_s: float
    seconds: float
    train_s: float | None = None
    eval_s: float | None = None

    @property
    def fixed_s(self) -> float | None:
        """The rest of the child's time: process start, imports, device set-up, MLflow records."""
        if self.train_s is None:
            return None
        return max(0.0, self.seconds - self.train_s - (self.eval_s or 0.0))


@dataclass(frozen=True)
class Schedule:
    """A sweep's children on its slots, and its wall time (parent run start to end)."""

    slots: int
    wall_seconds: float
    spans: tuple[ChildSpan, ...]

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.spans)

    @property
    def longest(self) -> ChildSpan:
        return max(self.spans, key=lambda s: s.seconds)

    @property
    def bound_seconds(self) -> float:
        """A lower bound on the wall time of any order of these children on `slots` slots."""
        return max(self.longest.seconds, self.total_seconds / self.slots)

    @property
    def busy_slots(self) -> float:
        """Slots busy on average over the wall time (children's total ÷ wall time)."""
        return self.total_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def busy_seconds(self, slot: int) -> float:
        return sum(s.seconds for s in self.spans if s.slot == slot)

    def split_seconds(self) -> tuple[float, float, float] | None:
        """(training, evaluation, fixed cost) summed over the children that logged their times."""
        timed = [s for s in self.spans if s.train_s is not None]
        if not timed:
            return None
        return (sum(s.train_s for s in timed), sum(s.eval_s or 0.0 for s in timed), sum(s.fixed_s for s in timed))


def schedule_of(parent, runs: list, label_of: Callable[[object], str]) -> Schedule | None:
    """The schedule of `parent`'s child `runs` (MLflow runs; `label_of(run)` names the model), or
    None when no child carries a slot tag (sweeps recorded before the tag existed, single runs).
    A child's time runs from its launch to its run's end (now, for one still running); a resumed
    sweep's wall time spans its attempts and the pause between them."""
    now_ms = int(time.time() * 1000)
    start_ms = parent.info.start_time
    spans = []
    for run in runs:
        tags = run.data.tags
        if SLOT_TAG not in tags or LAUNCHED_TAG not in tags:
            continue  # never launched: skipped before its turn
        launched = int(tags[LAUNCHED_TAG])
        ended = run.info.end_time or now_ms
        spans.append(ChildSpan(model=label_of(run), seq_len=int(tags.get("seq_len", 0)),
                               status=tags.get("status", "?"), slot=int(tags[SLOT_TAG]),
                               start_s=(launched - start_ms) / 1000, seconds=max(0.0, (ended - launched) / 1000),
                               train_s=run.data.metrics.get("train_seconds"),
                               eval_s=run.data.metrics.get("eval_seconds")))
    if not spans:
        return None
    end_ms = parent.info.end_time or max(now_ms if r.info.end_time is None else r.info.end_time for r in runs)
    try:
        jobs = int(parent.data.params.get("jobs", "1"))
    except ValueError:
        jobs = 1
    slots = max(jobs, 1 + max(s.slot for s in spans))
    spans.sort(key=lambda s: (s.start_s, s.slot))
    return Schedule(slots=slots, wall_seconds=(end_ms - start_ms) / 1000, spans=tuple(spans))


def render_markdown(schedule: Schedule) -> list[str]:
    """The report's schedule section: wall time against the bound, and each slot's busy time."""
    longest = schedule.longest
    lines = ["", "## Schedule", "",
             f"{len(schedule.spans)} children on {schedule.slots} slot{'s' * (schedule.slots > 1)}: "
             f"wall time **{schedule.wall_seconds:,.0f} s**; the children took "
             f"{schedule.total_seconds:,.0f} s in all, the longest {longest.seconds:,.0f} s "
             f"({longest.model} at {format_length(longest.seq_len)}). No order of these children on "
             f"{schedule.slots} slot{'s' * (schedule.slots > 1)} finishes before "
             f"max(longest, total ÷ slots) = {schedule.bound_seconds:,.0f} s; this one kept "
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
    rows = []
    for slot in range(schedule.slots):
        busy = schedule.busy_seconds(slot)
        count = sum(1 for s in schedule.spans if s.slot == slot)
        rows.append([str(slot), str(count), f"{busy:,.0f}", f"{max(0.0, schedule.wall_seconds - busy):,.0f}"])
    lines += ["| slot | children | busy (s) | idle (s) |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"![schedule]({PLOT})", ""]
    return lines


def plot(path: Path, schedule: Schedule, models: list[str], title: str) -> None:
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
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)
