"""What a sweep report holds: its rows (one per model and length, the seeds of a cell merged),
the fitted scaling exponents, and the files it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seqbench.harness import records
from seqbench.harness.schedule import Schedule


ARTIFACT_FOLDER = "report"
THROUGHPUT = records.TRAIN_TOKENS_PER_S  # per length from the speed task, else the training run's own
FILES = ("report.md", "report.csv", "metric_vs_length.png", "time_per_token_vs_length.png", "memory_vs_length.png")
JSON_FILE = "report.json"  # written on request (--format json): the CSV's numbers as JSON
FORMATS = ("md", "csv", "png", "json")  # what `seqbench report --format` chooses from
DEFAULT_FORMATS = ("md", "csv", "png")
EVAL_LENGTH_PLOT = "metric_vs_eval_length.png"  # written too where runs were evaluated beyond their length
SCHEDULE_PLOT = "schedule.png"  # written too for a sweep whose children carry their slots


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
    seed: int | None = None  # the run's seed (None for runs that did not record one)
    # a cell of several seeds (one run each): their seeds and main values, None where a seed did not
    # finish; main_value is then the mean of those that did
    seeds: tuple[int | None, ...] = ()
    seed_values: tuple[float | None, ...] = ()

    @property
    def spread(self) -> tuple[float, float, float] | None:
        """(sample standard deviation, min, max) of the finished seeds' values; None under two."""
        done = [v for v in self.seed_values if v is not None]
        if len(done) < 2:
            return None
        mean = sum(done) / len(done)
        sd = (sum((v - mean) ** 2 for v in done) / (len(done) - 1)) ** 0.5
        return sd, min(done), max(done)

    @property
    def seconds_per_token(self) -> float | None:
        return 1.0 / self.tokens_per_s if self.tokens_per_s else None


MIN_FIT_POINTS = 3  # an exponent fitted on fewer lengths is marked: two points always fit exactly


@dataclass(frozen=True)
class ScalingFit:
    """time per sequence ∝ L^exponent, fitted over `lengths`."""

    exponent: float
    lengths: tuple[int, ...]

    @property
    def few_points(self) -> bool:
        """Fitted on fewer than MIN_FIT_POINTS lengths: a line through two points, with nothing to
        say how well a power law fits (the report marks it)."""
        return len(self.lengths) < MIN_FIT_POINTS


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
