"""How time per token grows with length: the exponent of time per sequence fitted per model over
its longest lengths."""

from __future__ import annotations

import math
from typing import Sequence

from seqbench.harness.report.model import ReportRow, ScalingFit


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
