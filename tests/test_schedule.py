"""`seqbench.harness.schedule`: a sweep's children on its slots and the wall-time bound; the report's schedule
section and plot (`seqbench.harness.report`).
(That a real sweep tags its children and its report draws them is in tests/test_sweep.py.)"""

import pytest

from seqbench.harness.report import plot_schedule, schedule_markdown
from seqbench.harness.schedule import ChildSpan, Schedule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_bound_is_the_longest_child_or_the_total_over_the_slots(tmp_path):
    straggler = Schedule(slots=2, wall_seconds=110.0, spans=(
        ChildSpan("mamba", 64, "ok", slot=0, start_s=0.0, seconds=10.0),
        ChildSpan("transformer", 1 << 20, "ok", slot=1, start_s=0.5, seconds=100.0),
        ChildSpan("mamba", 128, "timeout", slot=0, start_s=10.0, seconds=30.0)))
    assert straggler.total_seconds == 140.0 and straggler.longest.seq_len == 1 << 20
    assert straggler.bound_seconds == 100.0  # no order beats the longest child
    assert straggler.busy_slots == pytest.approx(140 / 110)
    assert straggler.busy_seconds(0) == 40.0 and straggler.busy_seconds(1) == 100.0

    even = Schedule(slots=2, wall_seconds=150.0, spans=tuple(
        ChildSpan("mamba", 64 << i, "ok", slot=0, start_s=50.0 * i, seconds=50.0) for i in range(3)))
    assert even.bound_seconds == 75.0  # three 50 s children on two slots: 150 / 2

    text = "\n".join(schedule_markdown(straggler))
    assert "wall time **110 s**" in text and "the longest 100 s (transformer at 1m)" in text
    assert "| 0 | 2 | 40 | 70 |" in text and "| 1 | 1 | 100 | 10 |" in text
    assert "![schedule](schedule.png)" in text

    assert straggler.split_seconds() is None and "fixed cost" not in text  # no run logged its times

    path = tmp_path / "schedule.png"
    plot_schedule(path, straggler, ["mamba", "transformer"], "induction-heads")
    assert path.read_bytes().startswith(PNG_MAGIC) and not list(tmp_path.glob(".*.tmp"))


def test_a_child_time_splits_into_training_evaluation_and_fixed_cost(tmp_path):
    timed = Schedule(slots=1, wall_seconds=43.0, spans=(
        ChildSpan("mamba", 64, "ok", slot=0, start_s=0.0, seconds=20.0, train_s=4.0, eval_s=1.0),
        ChildSpan("mamba", 128, "ok", slot=0, start_s=21.0, seconds=21.0, train_s=9.0, eval_s=None),
        ChildSpan("mamba", 256, "failed", slot=0, start_s=42.0, seconds=1.0)))  # died before logging
    assert [s.fixed_s for s in timed.spans] == [15.0, 12.0, None]
    assert timed.split_seconds() == (13.0, 1.0, 27.0)  # over the two children that logged their times
    text = "\n".join(schedule_markdown(timed))
    assert "training took 13 s (32%), evaluation 1 s (2%), and 27 s (66%) was each child's fixed cost" in text
    path = tmp_path / "schedule.png"
    plot_schedule(path, timed, ["mamba"], "induction-heads")
    assert path.read_bytes().startswith(PNG_MAGIC)
