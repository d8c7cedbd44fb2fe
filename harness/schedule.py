"""When and where each child of a sweep ran: the wall-time side of `seqbench sweep --jobs K`.

A parallel sweep finishes no sooner than its longest child, nor sooner than the children's total
time over K slots. `seqbench.harness.report` compares the wall time with that bound and draws the children
as bars per slot, so a long child that started last (the sweep starts the shortest lengths first)
shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from seqbench.harness import records

# Tags the sweep sets on each child as it launches it: the worker slot (a GPU under --jobs on a
# multi-GPU machine) and the launch time in ms since the epoch (a retried child's run is older;
# a Slurm job's launch is its submission, so its time in the queue counts).


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
        if records.SLOT not in tags or records.LAUNCHED not in tags:
            continue  # never launched: skipped before its turn
        launched = int(tags[records.LAUNCHED])
        ended = run.info.end_time or now_ms
        spans.append(ChildSpan(model=label_of(run), seq_len=int(tags.get(records.SEQ_LEN, 0)),
                               status=tags.get(records.STATUS, "?"), slot=int(tags[records.SLOT]),
                               start_s=(launched - start_ms) / 1000, seconds=max(0.0, (ended - launched) / 1000),
                               train_s=run.data.metrics.get(records.TRAIN_SECONDS),
                               eval_s=run.data.metrics.get(records.EVAL_SECONDS)))
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
