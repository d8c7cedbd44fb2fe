"""The sweep itself: its parent MLflow run and one child run per (model, length), resumed by
config hash; children started K at a time, shortest first (or longest), stopped on a time budget
or Ctrl-C, and a family's longer lengths skipped after an out-of-memory or a timeout."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from seqbench.harness.config import RunConfig, format_length
from seqbench.core.errors import SeqbenchError
from seqbench.harness.interrupts import interrupt_once
from seqbench.harness.sweep.plan import Child, child_stem, model_label, plan, sweep_hash
from seqbench.harness.tracking import RunTracker, resolve_tracking_uri, setup_experiment
from seqbench.harness import records
from seqbench.harness.progress import plain_progress_seconds
from seqbench.harness.sweep.launch import (LaunchedChild, Launcher, LocalLauncher, check_launcher, children_device_type,
                                          shared_gpu_note)


if TYPE_CHECKING:
    from seqbench.harness.slurm import SlurmOptions


# Statuses a resumed sweep keeps: running them again would give the same answer.
FINAL = ("ok", "oom", "diverged")
# Statuses after which a family is not tried at longer lengths.
STOPS_FAMILY = ("oom", "timeout")


@dataclass
class SweepResult:
    parent_run_id: str
    status: str  # ok (every child has an outcome) or interrupted
    children: list[Child]


def _stop(proc: LaunchedChild, status: str, message: str) -> None:
    """Stop a running child and remember the status it ends with (the first reason wins)."""
    if proc.child.stopped_as is None:
        proc.child.stopped_as = (status, message)
    proc.stop()


class Sweep:
    """Runs the children of one sweep against one store and records every outcome."""

    def __init__(self, base: RunConfig, models: list[tuple[str, str | None]], lengths: list[int],
                 time_budget: float | None = None, jobs: int = 1, resume: bool = False,
                 console: Console | None = None, progress: bool = True, launcher: str = "local",
                 slurm: "SlurmOptions | None" = None, batch_tokens: int | None = None,
                 longest_first: bool = False, resume_command: str | None = None,
                 children: list[Child] | None = None, name: str | None = None,
                 retry: tuple[str, ...] = (), seeds: list[int] | None = None) -> None:
        if jobs < 1:
            raise SeqbenchError(f"--jobs must be >= 1, got {jobs}")
        check_launcher(launcher, jobs, slurm)
        if time_budget is not None and time_budget <= 0:
            raise SeqbenchError(f"--time-budget must be > 0 seconds, got {time_budget}")
        self.device_type = children_device_type(base.device, launcher, slurm)
        self.uri = resolve_tracking_uri(base.tracking_uri)
        self.base = replace(base, tracking_uri=self.uri, experiment=base.experiment or base.task)
        self.models, self.lengths = models, sorted(lengths)
        self.time_budget, self.jobs, self.resume = time_budget, jobs, resume
        unknown = [status for status in retry if status not in FINAL]
        if unknown:
            raise SeqbenchError(f"--retry takes the final statuses {', '.join(FINAL)}; got {', '.join(unknown)}")
        self.retry = tuple(retry)  # on resume, final statuses run again (an oom caused by a shared GPU, say)
        self.console = console or Console(stderr=True)
        self.progress = progress
        # a suite (MAD) brings its children, of several tasks; a sweep plans (model, length) of one
        self.children = children if children is not None else plan(self.base, models, self.lengths,
                                                                     self.device_type, batch_tokens, seeds)
        self.name = name or self.base.task  # what the parent run is a sweep of
        stems = [child_stem(c) for c in self.children]
        if len(set(stems)) != len(stems):  # children sharing a spec file would run each other's config
            raise SeqbenchError(f"two children of this sweep share the file name {max(stems, key=stems.count)!r}")
        self.batch_tokens = batch_tokens
        self.longest_first = longest_first
        self.launcher_name, self.slurm = launcher, slurm
        # what continues this sweep after an interruption (the CLI passes the exact command line)
        self.resume_command = resume_command or "seqbench sweep ... --resume"
        self.stopped: dict[str, tuple[str, int]] = {}  # family label -> (status, length) that stopped it

    # --- MLflow -------------------------------------------------------------------------------

    def _open_parent(self, experiment_id: str) -> RunTracker:
        identity = sweep_hash(self.name, self.children)
        if self.resume:
            found = self.client.search_runs(
                [experiment_id], f"tags.`{records.SWEEP}` = 'true' and tags.`{records.SWEEP_HASH}` = '{identity}'",
                order_by=["attributes.start_time DESC"], max_results=1)
            if found:
                self.console.print(f"resuming sweep {found[0].info.run_id}")
                parent = RunTracker(self.uri, experiment_id, run_id=found[0].info.run_id)
                parent.set_tags({records.STATUS: "running"})
                return parent
        tags = {records.SWEEP: "true", records.SWEEP_HASH: identity, records.TASK: self.name,
                records.MODALITY: self.children[0].params["modality"], records.STATUS: "running",
                records.MODELS: ",".join(model_label(*m) for m in self.models),
                records.LENGTHS: ",".join(str(n) for n in self.lengths)}
        parent = RunTracker(self.uri, experiment_id, run_name=f"sweep-{self.name}", tags=tags)
        params = {k: v for k, v in self.children[0].params.items() if k not in ("model", "size", "seq_len", "config_hash")
                  and not k.startswith("model.")}
        params.update({"models": tags[records.MODELS], "lengths": tags[records.LENGTHS], "jobs": str(self.jobs),
                       "launcher": self.launcher_name,
                       "order": "longest-first" if self.longest_first else "shortest-first",
                       "time_budget_s": str(self.time_budget)})
        if self.batch_tokens is not None:  # the batch differs per length: the children hold theirs
            params.pop("batch_size", None)
            params["batch_tokens"] = str(self.batch_tokens)
        seeds = list(dict.fromkeys(c.config.seed for c in self.children))
        if len(seeds) > 1:  # the children hold theirs
            params["seed"] = ",".join(str(seed) for seed in seeds)
        parent.log_params(params)
        return parent

    def _recall_finished(self, parent_id: str, experiment_id: str) -> None:
        """On resume: children that finished under this parent keep their outcome and run."""
        previous = self.client.search_runs([experiment_id], f"tags.`{records.PARENT}` = '{parent_id}'")
        by_hash = {}
        for run in sorted(previous, key=lambda r: r.info.start_time):
            by_hash[run.data.tags.get(records.CONFIG_HASH)] = run
        for child in self.children:
            run = by_hash.get(child.config_hash)
            if run is None:
                continue
            child.run_id = run.info.run_id
            status = run.data.tags.get(records.STATUS, "")
            if status in FINAL and status not in self.retry:
                child.status, child.message = status, run.data.tags.get(records.ERROR, "")
                child.metric = self._main_metric(run.data.metrics, child)
                if status in STOPS_FAMILY:
                    self._stop_family(child)

    def _child_tracker(self, child: Child, experiment_id: str, parent_id: str) -> RunTracker:
        """The child's run, created by the sweep so that every cell has a row whatever happens."""
        if child.run_id:
            return RunTracker(self.uri, experiment_id, run_id=child.run_id)
        tags = {records.TASK: child.config.task, records.MODALITY: child.params["modality"],
                records.MODEL: child.config.model, records.SEQ_LEN: str(child.seq_len), records.STATUS: "pending",
                records.CONFIG_HASH: child.config_hash, **child.tags}
        if child.config.size:
            tags[records.SIZE] = child.config.size
        tracker = RunTracker(self.uri, experiment_id,
                             run_name=records.run_name(child.config.task, child.label, format_length(child.seq_len),
                                                       child.tags.get(records.SEED)),
                             tags=tags, parent_run_id=parent_id)
        tracker.log_params(child.params)
        child.run_id = tracker.run_id
        return tracker

    @functools.cached_property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def _main_metric(self, metrics: dict[str, float], child: Child) -> float | None:
        from seqbench.harness.report.query import main_metric_of

        return metrics.get(f"{main_metric_of(child.config.task)}/{child.seq_len}")

    # --- scheduling ---------------------------------------------------------------------------

    def _stop_family(self, child: Child) -> None:
        known = self.stopped.get(child.label)
        if known is None or child.seq_len < known[1]:
            self.stopped[child.label] = (child.status, child.seq_len)

    def _blocked_by(self, child: Child) -> str | None:
        stop = self.stopped.get(child.label)
        if stop and child.seq_len > stop[1]:
            return f"{stop[0]} at {format_length(stop[1])}"
        return None

    def launch_order(self) -> list[Child]:
        """Shortest lengths first, so a family that fails at a length skips its longer ones; with
        `longest_first` the longest first, so under --jobs K the slowest children do not start last
        (a failure then skips nothing: the longer lengths have run)."""
        if not self.longest_first:
            return list(self.children)
        return sorted(self.children, key=lambda c: -c.seq_len)  # stable: the models keep their order

    def _spec(self, child: Child, parent_id: str, retry: bool) -> dict:
        """What the child process runs: its config (resuming its checkpoint when run before) and run."""
        return {"config": asdict(replace(child.config, resume=retry)), "run_id": child.run_id, "parent_run_id": parent_id}

    def run(self) -> SweepResult:
        """Run every child; Ctrl-C (or SIGTERM, e.g. a scheduler's time limit) stops the running
        children politely and records the sweep as interrupted."""
        with interrupt_once():
            return self._run()

    def _run(self) -> SweepResult:
        experiment_id = setup_experiment(self.uri, self.base.experiment)
        parent = self._open_parent(experiment_id)
        self.console.print(f"sweep {parent.run_id} (parent run) in experiment {self.base.experiment!r} "
                           f"of {self.uri}", highlight=False, markup=False, soft_wrap=True)
        if self.resume:
            self._recall_finished(parent.run_id, experiment_id)
        workdir = (Path(self.base.checkpoint_dir).parent / "sweeps" / parent.run_id).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        launcher = self._launcher(workdir)
        if self.launcher_name == "local" and self.device_type == "cuda":
            import torch

            note = shared_gpu_note(self.jobs, torch.cuda.device_count())
            if note:
                self.console.print(note, highlight=False, markup=False, soft_wrap=True)
        free = list(range(launcher.slots))
        running: dict[int, LaunchedChild] = {}
        pending = [c for c in self.launch_order() if c.status not in FINAL]
        for child in self.children:
            if child.status in FINAL:
                self.console.print(f"{child.label} {format_length(child.seq_len)}: {child.status} (finished before; skipped)")
        status = "ok"
        bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                       TimeElapsedColumn(), console=self.console, disable=not (self.progress and self.console.is_terminal))
        plain = self.progress and not self.console.is_terminal  # piped: a line at a steady interval instead
        every, last_line, started = plain_progress_seconds(), time.monotonic(), time.monotonic()
        try:
            with bar:
                job = bar.add_task("sweep", total=len(self.children), completed=len(self.children) - len(pending), info="")
                while pending or running:
                    with launcher.submitting():  # e.g. one Slurm job array for every child startable now
                        for child in list(pending):
                            reason = self._blocked_by(child)
                            if reason:
                                pending.remove(child)
                                self._record_skip(child, reason, experiment_id, parent.run_id)
                                bar.update(job, advance=1)
                            elif free:
                                pending.remove(child)
                                retry = child.run_id is not None
                                slot = free.pop(0)
                                tracker = self._child_tracker(child, experiment_id, parent.run_id)
                                tracker.set_tags({records.SLOT: str(slot), records.LAUNCHED: str(int(time.time() * 1000))})
                                running[slot] = launcher.start(child, self._spec(child, parent.run_id, retry),
                                                               workdir, slot)
                                child.status, child.stopped_as = "running", None
                    for slot, proc in list(running.items()):
                        if proc.poll() is None:
                            if self.time_budget and proc.elapsed() > self.time_budget:
                                _stop(proc, "timeout", f"ran past its time budget of {self.time_budget:g} s")
                            reason = self._blocked_by(proc.child)
                            if reason:
                                _stop(proc, "skipped", reason)
                            continue
                        del running[slot]
                        free.append(slot)
                        self._finish(proc, experiment_id)
                        bar.update(job, advance=1)
                    bar.update(job, info="  ".join(f"{p.child.label} {format_length(p.child.seq_len)}"
                                                   for p in running.values()))
                    if plain and time.monotonic() - last_line >= every and (pending or running):
                        last_line = time.monotonic()
                        done = len(self.children) - len(pending) - len(running)
                        now = ", ".join(f"{p.child.label} {format_length(p.child.seq_len)} ({p.elapsed():,.0f} s)"
                                        for p in running.values()) or "none"
                        self.console.print(f"sweep {done}/{len(self.children)} children done, running: {now}; "
                                           f"{last_line - started:,.0f} s elapsed", highlight=False)
                    time.sleep(0.2)
        except KeyboardInterrupt:
            status = "interrupted"
            for proc in running.values():
                _stop(proc, "interrupted", "interrupted by the user (Ctrl-C)")
            while running:
                for slot, proc in list(running.items()):
                    if proc.poll() is not None:
                        del running[slot]
                        self._finish(proc, experiment_id)
                time.sleep(0.2)
            self.console.print("[yellow]sweep interrupted; continue it with:")
            self.console.print(self.resume_command, highlight=False, markup=False, soft_wrap=True)
        counts: dict[str, int] = {}
        for child in self.children:
            counts[child.status] = counts.get(child.status, 0) + 1
        parent.log_metrics({f"children/{k}": v for k, v in counts.items()}, step=0)
        parent.finish(status)
        return SweepResult(parent.run_id, status, self.children)

    def _record_skip(self, child: Child, reason: str, experiment_id: str, parent_id: str) -> None:
        tracker = self._child_tracker(child, experiment_id, parent_id)
        child.status, child.message = "skipped", reason
        tracker.set_tags({records.ERROR: reason})
        tracker.finish("skipped")
        self.console.print(f"{child.label} {format_length(child.seq_len)}: skipped ({reason})")

    def _launcher(self, workdir: Path) -> Launcher:
        if self.launcher_name == "local":
            return LocalLauncher(self.jobs, self.device_type)
        from seqbench.harness.slurm import SlurmOptions, SubmititLauncher

        cluster = "slurm" if self.launcher_name == "slurm" else "local"
        return SubmititLauncher(self.slurm or SlurmOptions(), workdir / "slurm", len(self.children), self.device_type,
                                cluster=cluster)

    def _finish(self, proc: LaunchedChild, experiment_id: str) -> None:
        """Read the child's own record; classify what it could not record itself."""
        child = proc.child
        child.seconds = proc.elapsed()
        run = self.client.get_run(child.run_id)
        recorded = run.data.tags.get(records.STATUS, "pending")
        child.metric = self._main_metric(run.data.metrics, child)
        code = proc.returncode
        if recorded == "ok":  # finished just as it was being stopped
            status, message = "ok", ""
        elif child.stopped_as is not None:  # the sweep stopped it: timeout, skipped or interrupted
            status, message = child.stopped_as
        elif recorded in ("pending", "running"):  # died before it could record an ending
            status = "failed"
            message = (f"killed by signal {-code} (SIGKILL often means the host ran out of memory)"
                       if code is not None and code < 0 else f"exited with code {code}: {proc.log_tail()}")
        else:
            status, message = recorded, run.data.tags.get(records.ERROR, "")
        child.status, child.message = status, message
        if status != recorded:
            tracker = RunTracker(self.uri, experiment_id, run_id=child.run_id)
            if message:
                tracker.set_tags({records.ERROR: message[:5000]})
            tracker.finish(status)
        for path in proc.log_paths:
            if path.exists():
                self.client.log_artifact(child.run_id, str(path), "logs")
        if status in STOPS_FAMILY:
            self._stop_family(child)
        shown = f"{child.metric:.4g}" if child.metric is not None else "-"
        self.console.print(f"{child.label} {format_length(child.seq_len)}: {status}  metric {shown}  "
                           f"({child.seconds:.0f} s){'  ' + message if message and status != 'ok' else ''}")
