"""Sequence-length sweeps: one parent MLflow run, one child run per (model, length).

Each child trains and evaluates in its own process (`seqbench.harness.sweep.child`), so an
out-of-memory, a crash or a run past its time budget ends that child only: it becomes the child's
status (`oom`, `failed`, `timeout`) and the sweep goes on. A family that ran out of memory or time
at length L is not tried at longer lengths (`skipped`, "oom at 4k"). Children run shortest length
first (longest first on request), K at a time (`jobs`). Each child is tagged with its slot and
launch time; the report draws the schedule (`seqbench.harness.schedule`).

The store and the experiment are set up, and every child's config resolved and checked, before
any child starts: bad input fails at once. `resume` reopens the newest sweep with the same
children (the same config hashes) and skips the children that finished there (ok, oom,
diverged); the others run again, from their checkpoints.

Modules: plan (the children, the sweep's identity, spec files), launch (where children run:
local processes; Slurm jobs are seqbench.harness.slurm), scheduler (the sweep and its MLflow
bookkeeping), child (the process one child runs in).
"""

from seqbench.harness.sweep.plan import Child, model_label, parse_models, plan, sweep_hash
from seqbench.harness.sweep.scheduler import Sweep, SweepResult

__all__ = ["Child", "Sweep", "SweepResult", "model_label", "parse_models", "plan", "sweep_hash"]
