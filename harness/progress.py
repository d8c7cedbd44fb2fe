"""How often long work prints a plain progress line when its console is no terminal."""

from __future__ import annotations

import os


def plain_progress_seconds() -> float:
    """Seconds between plain progress lines when the console is no terminal (Slurm and CI logs,
    `| tee`): $SEQBENCH_PROGRESS_SECONDS, default 10. Training and sweeps print them instead of a
    live bar, which a pipe would show only once, at the end."""
    try:
        return max(0.0, float(os.environ.get("SEQBENCH_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0
