"""The process one sweep child runs in: `python -m seqbench.harness.sweep.child SPEC.json`.

The spec names the child's config, the MLflow run the sweep created for it and the parent run.
Whatever happens is recorded on that run: the runner records its own endings; what fails before
the runner tracks anything (a length the model cannot take, an out-of-memory while building the
model) is recorded here. The sweep reads the run's status when the process ends.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch

from seqbench.harness.config import RunConfig
from seqbench.core.devices import is_out_of_memory
from seqbench.core.errors import SeqbenchError
from seqbench.harness.runner import run
from seqbench.harness.tracking import RunTracker
from seqbench.harness import records


def _record(config: RunConfig, run_id: str, status: str, message: str) -> None:
    """Record an ending the runner did not (it records its own once the run is tracked)."""
    from mlflow.tracking import MlflowClient

    if MlflowClient(config.tracking_uri).get_run(run_id).data.tags.get(records.STATUS) not in ("pending", "running"):
        return
    tracker = RunTracker(config.tracking_uri, "", run_id=run_id)
    tracker.set_tags({records.ERROR: message[:5000]})
    tracker.finish(status)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    threads = os.environ.get("SEQBENCH_THREADS")
    if threads:  # K CPU children share the cores instead of each spinning on all of them
        torch.set_num_threads(int(threads))
    config = RunConfig(**spec["config"])
    run_id = spec["run_id"]
    try:
        result = run(config, progress=False, parent_run_id=spec["parent_run_id"], run_id=run_id)
    except SeqbenchError as exc:  # this config cannot run (e.g. beyond the model's positions)
        _record(config, run_id, "skipped", str(exc))
        print(f"skipped: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # before the run was tracked: building or moving the model
        if not is_out_of_memory(exc):
            raise
        _record(config, run_id, "oom", f"out of memory: {str(exc).splitlines()[0]}")
        print(f"out of memory: {exc}", file=sys.stderr)
        return 1
    print(f"status: {result.status} {result.message}".strip())
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    # Torch and MLflow leave a heap of long-lived objects; frozen, the collector no longer walks it,
    # during the run or at the interpreter's shutdown (measured: a tiny CPU child's exit 1.3 s -> 0.2 s).
    gc.freeze()
    code = main(sys.argv[1])
    gc.freeze()
    sys.exit(code)
