"""Sweep children as Slurm jobs, submitted through submitit (`pip install seqbench[slurm]`).

`SubmititLauncher` is the sweep's launcher for `--launcher slurm`: every child the scheduler can
start goes out in one `executor.batch()`, i.e. one Slurm job array, at once (the first pass starts
all of them, since the launcher has a slot per child); Slurm runs at most `--max-parallel` of the
array at a time (`slurm_array_parallelism`). Each job runs the same `seqbench.harness.sweep.child` a local
child runs, so it records its own ending on its MLflow run.

The rules of the local launcher hold because the sweep's scheduler stays in charge: it polls the
jobs, and when a family ends oom or timeout at length L it cancels that family's longer jobs,
queued or running, and records them `skipped` ("oom at L"), just as a local `--jobs K` sweep stops
a longer child already running. `--time-budget` counts from the moment a job starts running, not
from its submission; `--time` is Slurm's own hard limit (`timeout_min`) and should leave headroom.
A cancelled job gets SIGTERM, which the job turns into Ctrl-C: the run checkpoints and records
itself, so `--resume` continues it. The spec files, checkpoints and a SQLite store (or better, an
`mlflow server`) must be on a filesystem the compute nodes share.

`cluster="local"` runs the same path through submitit's local executor, which starts every job of
the array at once on this machine; the tests use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from seqbench.core.errors import SeqbenchError
from seqbench.harness.sweep.plan import Child, write_spec

DEFAULT_TIME_MINUTES = 60


@dataclass(frozen=True)
class SlurmOptions:
    """What `--partition`, `--gpus-per-job`, `--max-parallel` and `--time` ask of Slurm."""

    partition: str | None = None
    gpus_per_job: int | None = None
    max_parallel: int | None = None
    time_minutes: int | None = None

    def given(self) -> bool:
        return any(v is not None for v in (self.partition, self.gpus_per_job, self.max_parallel, self.time_minutes))

    def executor_parameters(self) -> dict:
        """submitit's AutoExecutor parameters (each becomes an `#SBATCH` line)."""
        for flag, value, least in (("--gpus-per-job", self.gpus_per_job, 0), ("--max-parallel", self.max_parallel, 1),
                                   ("--time", self.time_minutes, 1)):
            if value is not None and value < least:
                raise SeqbenchError(f"{flag} must be >= {least}, got {value}")
        params: dict = {"name": "seqbench-sweep", "timeout_min": self.time_minutes or DEFAULT_TIME_MINUTES}
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.gpus_per_job is not None:
            params["gpus_per_node"] = self.gpus_per_job
        if self.max_parallel is not None:
            params["slurm_array_parallelism"] = self.max_parallel
        return params


def require_submitit(cluster: str = "slurm"):
    """The submitit module, or a user error saying what is missing (submitit; Slurm's srun)."""
    try:
        import submitit
    except ImportError:
        raise SeqbenchError("--launcher slurm needs submitit: pip install 'seqbench[slurm]'") from None
    if cluster == "slurm" and shutil.which("srun") is None:
        raise SeqbenchError("--launcher slurm needs Slurm (srun and sbatch on PATH); run the sweep on a login node "
                            "of the cluster, or use --launcher local")
    return submitit


def run_child(spec_path: str, env: dict[str, str]) -> int:
    """What a job runs: the sweep child, with SIGTERM (scancel, a time limit) read as Ctrl-C."""
    os.environ.update(env)  # before torch is imported: thread counts take effect

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # submitit's own handler would ignore it
    from seqbench.harness.sweep.child import main

    return main(spec_path)


class SubmittedChild:
    """One child as a submitit job: polled, cancelled and read like a local child process."""

    def __init__(self, child: Child, spec_path: Path, env: dict[str, str]) -> None:
        self.child, self.spec_path, self.env = child, spec_path, env
        self.job = None  # set when the batch it belongs to is submitted
        self._cancelled = False
        self._started: float | None = None
        self._code: int | None = None
        self._ended = False

    def poll(self) -> int | None:
        if self._ended:
            return self._code
        if self.job is None:  # never submitted (the sweep was interrupted while submitting)
            self._ended, self._code = True, 1
            return self._code
        if self._started is None and self.job.state not in ("PENDING", "REQUEUED", "CONFIGURING", "UNKNOWN"):
            self._started = time.monotonic()
        if not self.job.done():
            return None
        try:
            result = self.job.result()
            self._code = result if isinstance(result, int) else 0
        except Exception:  # failed, cancelled or killed: the child's run or its log says how
            self._code = 1
        self._ended = True
        return self._code

    def stop(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            if self.job is not None:
                self.job.cancel(check=False)

    def elapsed(self) -> float:
        return 0.0 if self._started is None else time.monotonic() - self._started

    @property
    def returncode(self) -> int | None:
        return self._code

    @property
    def log_paths(self) -> list[Path]:
        if self.job is None:
            return []
        return [self.job.paths.stderr, self.job.paths.stdout]

    def log_tail(self, lines: int = 1) -> str:
        text: list[str] = []
        for path in self.log_paths:
            if path.exists():
                text += path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])


class SubmititLauncher:
    """Children as jobs of a submitit executor: Slurm, or submitit's local executor."""

    def __init__(self, options: SlurmOptions, folder: Path, n_children: int, device_type: str,
                 cluster: str = "slurm") -> None:
        submitit = require_submitit(cluster)
        folder.mkdir(parents=True, exist_ok=True)
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(**options.executor_parameters())
        self.slots = max(1, n_children)  # every child in the first array; Slurm throttles it
        # A local executor starts every job at once: they share the cores. On a cluster each job
        # gets its own allocation and Slurm sets CUDA_VISIBLE_DEVICES.
        threads = str(max(1, (os.cpu_count() or 1) // self.slots))
        self.env = ({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "SEQBENCH_THREADS": threads}
                    if cluster == "local" and device_type != "cuda" else {})
        self._batch: list[SubmittedChild] | None = None

    @contextmanager
    def submitting(self) -> Iterator[None]:
        """Children started inside go out as one job array when the block ends."""
        self._batch = []
        try:
            yield
            batch = self._batch
        finally:
            self._batch = None
        if batch:
            with self.executor.batch():
                jobs = [self.executor.submit(run_child, str(c.spec_path), c.env) for c in batch]
            for handle, job in zip(batch, jobs):
                handle.job = job

    def start(self, child: Child, spec: dict, workdir: Path, slot: int) -> SubmittedChild:
        if self._batch is None:
            raise RuntimeError("SubmititLauncher.start is called inside submitting()")
        handle = SubmittedChild(child, write_spec(workdir, child, spec), self.env)
        self._batch.append(handle)
        return handle
