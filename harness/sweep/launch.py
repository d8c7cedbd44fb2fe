"""Where a sweep's children run: what the scheduler needs of a launched child, and the local
launcher (one process per child, K slots: a GPU each where there are several, else CPU processes
sharing the cores). Slurm jobs: seqbench.harness.slurm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from seqbench.core.errors import SeqbenchError
from seqbench.harness.sweep.plan import Child, child_stem, write_spec

if TYPE_CHECKING:
    from seqbench.harness.slurm import SlurmOptions


# Seconds a child gets to checkpoint and record itself after SIGINT before it is killed.
GRACE_SECONDS = 30.0
# Where children run: processes here, Slurm jobs (submitit), or submitit's local executor (tests).
LAUNCHERS = ("local", "slurm", "local-submitit")


class LaunchedChild(Protocol):
    """A child being run somewhere: what the scheduler needs, whatever the launcher."""

    child: Child

    def poll(self) -> int | None:
        """None while it runs; its exit code once it has ended."""

    def stop(self) -> None:
        """Ask it to stop (it checkpoints and records itself); asking again changes nothing."""

    def elapsed(self) -> float:
        """Seconds it has been running (not waiting in a queue)."""

    @property
    def returncode(self) -> int | None: ...

    @property
    def log_paths(self) -> list[Path]: ...

    def log_tail(self, lines: int = 1) -> str: ...


class Launcher(Protocol):
    """Starts children: `slots` at a time; those started inside one `submitting()` go out together."""

    slots: int

    def submitting(self) -> AbstractContextManager: ...

    def start(self, child: Child, spec: dict, workdir: Path, slot: int) -> LaunchedChild: ...


class ChildProcess:
    """A child's process: started with its own spec file and log, stopped politely then firmly."""

    def __init__(self, child: Child, spec: dict, workdir: Path, env: dict[str, str]) -> None:
        self.spec_path = write_spec(workdir, child, spec)
        self.log_path = workdir / f"{child_stem(child)}.log"
        self.child = child
        self.started = time.monotonic()
        self._stopped_at: float | None = None
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "seqbench.harness.sweep.child", str(self.spec_path)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        """SIGINT: the runner checkpoints and records itself; killed if it has not ended in time."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
            self._signal(signal.SIGINT)

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is None and self._stopped_at is not None and time.monotonic() - self._stopped_at > GRACE_SECONDS:
            self._signal(signal.SIGKILL)
        return code

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def log_paths(self) -> list[Path]:
        return [self.log_path]

    def log_tail(self, lines: int = 1) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines() if self.log_path.exists() else []
        return " | ".join(text[-lines:])


class LocalLauncher:
    """Children as processes on this machine, `jobs` at a time (a GPU each, or a share of the cores)."""

    def __init__(self, jobs: int, device_type: str) -> None:
        self.envs = _slots(jobs, device_type)
        self.slots = jobs

    def submitting(self) -> AbstractContextManager:
        return nullcontext()

    def start(self, child: Child, spec: dict, workdir: Path, slot: int) -> ChildProcess:
        return ChildProcess(child, spec, workdir, {**os.environ, **self.envs[slot]})


def shared_gpu_note(jobs: int, gpus: int) -> str | None:
    """What to say when local children outnumber the GPUs: a GPU time-slices the processes on it,
    so each child runs slower than alone (a small model's step, mostly launch latency, much slower)."""
    if gpus < 1 or jobs <= gpus:
        return None
    return (f"{jobs} children at a time on {gpus} GPU{'s' if gpus > 1 else ''}: the processes sharing a GPU are "
            f"time-sliced, so each runs slower than alone (small models most); --jobs {gpus} runs one per GPU")


def _slots(jobs: int, device_type: str) -> list[dict[str, str]]:
    """Environment of each of the `jobs` worker slots: a GPU each (round robin) or a share of the cores."""
    if device_type == "cuda":
        import torch

        gpus = max(1, torch.cuda.device_count())
        return [{"CUDA_VISIBLE_DEVICES": str(i % gpus)} for i in range(jobs)]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "SEQBENCH_THREADS": threads}] * jobs


def check_launcher(launcher: str, jobs: int, slurm: "SlurmOptions | None") -> None:
    """Bad launcher flags and a missing submitit or Slurm fail before anything is tracked."""
    if launcher not in LAUNCHERS:
        raise SeqbenchError(f"--launcher must be local or slurm, got {launcher!r}")
    if launcher == "local":
        if slurm is not None and slurm.given():
            raise SeqbenchError("--partition, --gpus-per-job, --max-parallel and --time are for --launcher slurm")
        return
    if jobs != 1:
        raise SeqbenchError("--jobs is for --launcher local; with slurm, --max-parallel caps the jobs running at once")
    from seqbench.harness.slurm import SlurmOptions, require_submitit

    require_submitit("slurm" if launcher == "slurm" else "local")
    (slurm or SlurmOptions()).executor_parameters()


def children_device_type(device: str, launcher: str, slurm: "SlurmOptions | None") -> str:
    """The device type the children will resolve their configs on (their hashes depend on it): this
    machine's, except for Slurm jobs given GPUs, which run on GPU nodes whatever the login node has."""
    from seqbench.core.devices import pick_device

    if launcher == "slurm" and slurm is not None and slurm.gpus_per_job and device != "cpu":
        return "cuda"
    return pick_device(device).type
