"""Train and evaluate one (task, modality, model, length) and record it in MLflow.

The loop: AdamW with the task's schedule, gradient clipping, bf16 autocast on CUDA unless the run's
precision is fp32 (fp32 on CPU), each step one replayed CUDA graph on a GPU (harness.train_step;
eager on the CPU and under data parallelism), periodic evaluation at the training length, a final
evaluation at every requested length, and a checkpoint at the end (or on interruption) that
`resume` continues from. Every way a run can end
is a status: ok, diverged (NaN/inf loss), interrupted (Ctrl-C), oom, failed.

Under torchrun the same loop trains with DistributedDataParallel (harness.distributed): every rank
takes its shard of each global batch, gradients are averaged, the logged loss is the mean over
ranks and tokens/s counts every rank. Rank 0 alone creates the MLflow run, evaluates (the others
wait at a barrier during training and simply finish after it) and writes checkpoints; on resume
every rank loads rank 0's checkpoint. One exception: a rank that alone runs out of memory or
crashes records the run's ending itself (tag `failed_rank`), since rank 0 is then waiting for it in
a collective; its non-zero exit makes torchrun stop the others, and rank 0 keeps that record.
SIGTERM (a scheduler's limit, torchrun stopping its ranks) ends a run like Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from seqbench.harness import distributed
from seqbench.harness.determinism import deterministic_algorithms
from seqbench.harness.config import RunConfig, format_length
from seqbench.core.devices import check_precision, is_out_of_memory, peak_memory_mb, precision_name
from seqbench.core.errors import SeqbenchError
from seqbench.harness.interrupts import interrupt_once
from seqbench.harness.progress import plain_progress_seconds
from seqbench.harness.tracking import RunTracker, SilentTracker, code_version, resolve_tracking_uri, setup_experiment
from seqbench.harness import records
from seqbench.harness.batches import TrainBatches
from seqbench.harness.config_file import config_toml
from seqbench.harness.evaluation import eval_plan, evaluate, evaluate_length
from seqbench.harness.train_step import (StepLog, TrainStep, choose_mode, first_nonfinite, generated_batches,
                                         make_optimizer)
from seqbench.models import build_model
from seqbench.tasks import get_task, task_setting_values
from seqbench.tasks.base import MeasuringTask


@dataclass
class RunResult:
    """What a run produced: its status, MLflow run id, final metrics and where it stopped."""

    status: str
    run_id: str
    config: RunConfig
    metrics: dict[str, float] = field(default_factory=dict)
    steps_done: int = 0
    message: str = ""


def learning_rate(config: RunConfig, step: int) -> float:
    """Linear warmup, then constant or cosine decay to min(1e-5, lr)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    floor = min(1e-5, config.lr)
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@torch.no_grad()
def checkpoint_path(config: RunConfig, run_id: str) -> Path:
    """One checkpoint per run (runs of one config started together never overwrite each other)."""
    return Path(config.checkpoint_dir) / f"{config.task}-{config.model}-{config.hash()}-{run_id}.pt"


def find_checkpoint(config: RunConfig, run_id: str | None) -> Path | None:
    """The checkpoint to resume: run_id's own, else the newest one of this config."""
    if run_id is not None:
        path = checkpoint_path(config, run_id)
        return path if path.exists() else None
    found = sorted(Path(config.checkpoint_dir).glob(f"{config.task}-{config.model}-{config.hash()}-*.pt"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """A checkpoint's contents; a truncated or foreign file is one line naming it (SeqbenchError)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated, random bytes, another format: nothing to continue from
        raise SeqbenchError(f"checkpoint {path} cannot be read ({type(exc).__name__}); "
                            f"delete it to start afresh") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "run_id"} <= set(state):
        raise SeqbenchError(f"checkpoint {path} is not a seqbench checkpoint; delete it to start afresh")
    return state


def save_checkpoint(path: Path, model, optimizer, step: int, run_id: str) -> None:
    """Write to a temporary name, then rename: an interrupted save leaves the old checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    optimizer_state = optimizer.state_dict()
    for group in optimizer_state["param_groups"]:  # a captured step's rates are device tensors
        group["lr"] = float(group["lr"])
    torch.save({"model": model.state_dict(), "optimizer": optimizer_state, "step": step, "run_id": run_id}, tmp)
    os.replace(tmp, path)


def _progress(console: Console, enabled: bool) -> Progress:
    """A live bar on a terminal; elsewhere none (a rich bar there would print once, at the end:
    the training loop prints plain lines instead)."""
    enabled = enabled and console.is_terminal
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=not enabled, transient=False,
    )


# Endings one rank can reach alone; that rank records them (see the module docstring).
RANK_FAILURES = ("oom", "failed")


def run(config: RunConfig, console: Console | None = None, progress: bool = True,
        parent_run_id: str | None = None, run_id: str | None = None) -> RunResult:
    """Resolve, train, evaluate and track one run. Bad input raises SeqbenchError before any
    tracking starts; once the run exists, every ending is recorded as its status. `run_id` reopens
    a run created beforehand (a sweep creates its children's runs) instead of creating one.
    Started by torchrun, it trains data-parallel over the ranks (see the module docstring)."""
    ctx = distributed.setup(config.device)
    result = None
    with interrupt_once(), deterministic_algorithms(config.deterministic) as nondeterministic_ops:
        try:
            result = _run(config, ctx, console or Console(stderr=True), progress and ctx.is_main, parent_run_id,
                          run_id, nondeterministic_ops)
            return result
        finally:
            # A rank that failed alone leaves its peers inside a collective: leaving the group would
            # wait for them, so it just exits (torchrun then stops them).
            if result is not None and result.status not in RANK_FAILURES:
                distributed.teardown(ctx)


def _run(config: RunConfig, ctx: distributed.Context, console: Console, progress: bool,
         parent_run_id: str | None, run_id: str | None, nondeterministic_ops: set[str]) -> RunResult:
    device = ctx.device
    task = get_task(config.task, modality=config.modality, data=config.data, seed=config.seed, **config.task_kwargs)
    config = replace(config, world_size=ctx.world_size).resolve(task, device.type)
    if ctx.distributed and isinstance(task, MeasuringTask):
        raise SeqbenchError(f"{config.task} measures one device; run it without torchrun (or --nproc)")
    seed_everything(config.seed)
    model = build_model(config.model, vocab_size=task.vocab_size, head=task.head, **config.model_kwargs)
    if model.max_seq_len is not None and config.seq_len > model.max_seq_len and not isinstance(task, MeasuringTask):
        raise SeqbenchError(f"{config.model} takes at most {format_length(model.max_seq_len)} tokens "
                            f"(its positions); cannot train at {format_length(config.seq_len)}")
    model = model.to(device)
    check_precision(config.precision, device)
    mode, why = choose_mode(config.train_step, device, ctx.world_size)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, device, mode)

    start_step = 0
    found = find_checkpoint(config, run_id) if config.resume else None
    if found is not None:
        state = load_checkpoint(found, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, run_id = state["step"], state["run_id"]
        if ctx.is_main:
            console.print(f"resuming from {found} at step {start_step}")
    elif config.resume and ctx.is_main:
        console.print(f"--resume: no checkpoint of this config in {config.checkpoint_dir}; training starts at step 0")
        _mark_killed_runs(config, console)
    trained = distributed.wrap(model, ctx)  # after loading: every rank starts from the same weights
    train_step = TrainStep(trained, task, optimizer, config.grad_clip, device, config.precision, mode,
                           make_batch=None if ctx.distributed else generated_batches(task, device))

    tracker = _tracker(config, ctx, model, device, parent_run_id, run_id, console, start_step, mode)
    # From here the run exists: every ending, a Ctrl-C during the set-up too, is recorded.
    result = RunResult(status="ok", run_id=tracker.run_id, config=config, steps_done=start_step)
    ckpt = checkpoint_path(config, tracker.run_id)
    try:
        if ctx.is_main and not isinstance(task, MeasuringTask):  # once the run exists: bad input stays one line
            console.print(f"training step: {mode} ({why}); {precision_name(device, config.precision)}"
                          + ("; deterministic algorithms" if config.deterministic else ""), highlight=False)
        if start_step == 0 and run_id is not None and ctx.is_main:
            _mark_restart(tracker, ckpt, console)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if isinstance(task, MeasuringTask):  # a speed task: measure instead of training
            def record(metrics: dict, tags: dict) -> None:
                tracker.log_metrics(metrics, step=0)
                tracker.set_tags(tags)
                result.metrics.update(metrics)

            task.measure(model, config, device, record)
        else:
            _train(config, task, train_step, tracker, ctx, console, progress, result, start_step, ckpt)
            if result.status == "ok" and ctx.is_main:  # no collective follows: other ranks just finish
                start = time.perf_counter()
                try:
                    _final_eval(config, task, model, tracker, device, console, progress, result)
                finally:
                    _add_seconds(result, records.EVAL_SECONDS, start)
    except KeyboardInterrupt:
        result.status, result.message = "interrupted", "interrupted by the user (Ctrl-C)"
    except Exception as exc:
        if not is_out_of_memory(exc):  # recorded, then re-raised: a bug must stay visible
            result.status, result.message = "failed", f"{type(exc).__name__}: {exc}"
            if not _close(tracker, model, optimizer, ckpt, result, ctx, nondeterministic_ops):
                raise
            return result  # a peer's failure broke this rank's collective: the peer's record stands
        result.status, result.message = "oom", f"out of memory: {str(exc).splitlines()[0]}"
    _close(tracker, model, optimizer, ckpt, result, ctx, nondeterministic_ops)
    return result


def _mark_killed_runs(config: RunConfig, console: Console) -> None:
    """Runs of this config left RUNNING by a process of this machine that is gone (SIGKILL, the
    OOM killer) and without a checkpoint to continue from: marked failed ("killed") instead of
    staying RUNNING for ever beside the new run. Runs of another machine, or of a live process,
    and a sweep's children (the sweep keeps those) are left alone."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(config.tracking_uri)
    experiment_id = setup_experiment(uri, config.experiment)
    running = MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.{records.CONFIG_HASH} = '{config.hash()}' and attributes.status = 'RUNNING'")
    for found in running:
        tags = found.data.tags
        pid = tags.get(records.PID, "")
        if records.PARENT in tags or tags.get(records.HOST) != socket.gethostname() or not pid.isdigit():
            continue
        if _process_alive(int(pid)):
            continue
        tracker = RunTracker(uri, experiment_id, run_id=found.info.run_id)
        tracker.set_tags({records.ERROR: f"killed: process {pid} ended without recording an ending, and left no "
                                         f"checkpoint to continue from"})
        tracker.finish("failed")
        console.print(f"run {found.info.run_id} of this config was killed (process {pid} is gone) and left no "
                      f"checkpoint: marked failed")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _mark_restart(tracker: RunTracker, ckpt: Path, console: Console) -> None:
    """A reopened run that already trained but has no checkpoint here (e.g. a sweep resumed on
    another machine) starts again at step 0 and logs a second curve into the same metric history;
    say so in the run (tag `restarts`) and on the console, so the two curves are not read as one."""
    if not tracker.client.get_metric_history(tracker.run_id, records.TRAIN_LOSS):
        return  # a run created ahead of time (a sweep's child) that has not trained yet
    previous = tracker.client.get_run(tracker.run_id).data.tags.get(records.RESTARTS, "0")
    restarts = int(previous) + 1 if previous.isdigit() else 1
    tracker.set_tags({records.RESTARTS: str(restarts)})
    console.print(f"no checkpoint of this run at {ckpt}: training starts again at step 0 "
                  f"(restart {restarts}; the run's metric history keeps the earlier curve too)")


def _tracker(config: RunConfig, ctx: distributed.Context, model, device: torch.device,
             parent_run_id: str | None, run_id: str | None, console: Console,
             start_step: int, step_mode: str) -> RunTracker | SilentTracker:
    """Rank 0 opens (or reopens) the MLflow run and logs the params; other ranks get a silent
    tracker that knows the run id."""
    if not ctx.is_main:
        run_id = distributed.broadcast(None, ctx)
        if run_id is None:
            raise SeqbenchError("rank 0 could not open the MLflow run (its error says why)")
        return SilentTracker(run_id)
    try:
        tracker = _open_run(config, ctx, model, device, parent_run_id, run_id, console, start_step, step_mode)
    except BaseException:
        distributed.broadcast(None, ctx)  # the other ranks stop too instead of waiting
        raise
    distributed.broadcast(tracker.run_id, ctx)
    return tracker


def _open_run(config: RunConfig, ctx: distributed.Context, model, device: torch.device,
              parent_run_id: str | None, run_id: str | None, console: Console, start_step: int,
              step_mode: str) -> RunTracker:
    """Open `run_id` (a resumed or a sweep's run), or a new run when it is None or not in this
    store (a checkpoint brought from another store continues as a new run here, saying so)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(config.tracking_uri)
    experiment_id = setup_experiment(uri, config.experiment)
    if run_id is not None:
        try:
            MlflowClient(uri).get_run(run_id)
        except MlflowException:
            console.print(f"run {run_id} is not in {uri}: training continues from step {start_step} "
                          f"as a new run there")
            run_id = None
    tags = {records.TASK: config.task, records.MODALITY: config.modality, records.MODEL: config.model,
            records.SEQ_LEN: str(config.seq_len), records.STATUS: "running", records.CONFIG_HASH: config.hash(),
            records.HOST: socket.gethostname(), records.PID: str(os.getpid())}
    if config.size:
        tags[records.SIZE] = config.size
    label = f"{config.model}:{config.size}" if config.size else config.model
    name = config.run_name or records.run_name(config.task, label, format_length(config.seq_len))
    tracker = RunTracker(uri, experiment_id, run_id=run_id, run_name=name, tags=tags, parent_run_id=parent_run_id)
    params = config.to_params()
    # the task's settings as it ran, its defaults too (a --task-set key is in to_params already)
    params.update({f"task.{key}": str(value) for key, value in task_setting_values(config.task, config.task_kwargs).items()})
    params.update({"code_version": code_version(), "device_name": _device_name(device),
                   "dtype": precision_name(device, config.precision), "train_step_mode": step_mode,
                   "n_parameters": str(model.num_parameters()), "torch_version": torch.__version__,
                   "state_size": str(model.state_size(config.seq_len))})
    if ctx.distributed:
        params["global_batch_size"] = str(config.batch_size * ctx.world_size)
    tracker.log_params(params)
    tracker.log_text(config_toml(config), "config.toml")  # `seqbench run --config` repeats the run
    return tracker


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _close(tracker: RunTracker | SilentTracker, model, optimizer, ckpt: Path, result: RunResult,
           ctx: distributed.Context, nondeterministic_ops: set[str]) -> bool:
    """Checkpoint (unless diverged or nothing trained), log the last metrics, set the status (rank 0);
    a deterministic run also records the ops that had no deterministic version.

    Under torchrun, a rank other than 0 that failed alone records the ending instead; rank 0 then
    keeps that record and takes its status and message into `result`. True when the ending is
    another rank's."""
    if not ctx.is_main:
        if ctx.distributed and result.status in RANK_FAILURES:
            _record_rank_failure(tracker.run_id, ctx, result)
        return False
    if ctx.distributed and result.status != "ok":
        tags = tracker.client.get_run(tracker.run_id).data.tags
        if records.FAILED_RANK in tags:
            result.status, result.message = tags.get(records.STATUS, result.status), tags.get(records.ERROR, "")
            return True
    device = ctx.device
    try:
        if result.steps_done > 0 and result.status in ("ok", "interrupted"):
            save_checkpoint(ckpt, model, optimizer, result.steps_done, tracker.run_id)
            tracker.set_tags({records.CHECKPOINT: str(ckpt.resolve())})
        # Where the run's time went (this attempt): the rest of a process's life is its fixed cost.
        times = {k: result.metrics[k] for k in (records.TRAIN_SECONDS, records.EVAL_SECONDS) if k in result.metrics}
        tracker.log_metrics({records.PEAK_MEMORY_MB: peak_memory_mb(device), **times}, step=result.steps_done)
        if result.message:
            tracker.set_tags({records.ERROR: result.message[:5000]})
        if result.config.deterministic:
            tracker.set_tags({records.NONDETERMINISTIC_OPS: ",".join(sorted(nondeterministic_ops)) or "none"})
    finally:
        tracker.finish(result.status)
    return False


def _record_rank_failure(run_id: str, ctx: distributed.Context, result: RunResult) -> None:
    """This rank's out-of-memory or crash ends the run: rank 0 is waiting for it in a collective
    (and torchrun stops it once this rank exits non-zero), so the ending is recorded from here."""
    result.message = f"rank {ctx.rank}: {result.message}"
    tracker = RunTracker(resolve_tracking_uri(result.config.tracking_uri), "", run_id=run_id)
    tracker.set_tags({records.FAILED_RANK: str(ctx.rank), records.ERROR: result.message[:5000]})
    tracker.finish(result.status)


def _train(config, task, step_fn: TrainStep, tracker, ctx, console, progress, result, start_step, ckpt) -> None:
    """The training loop; `step_fn.model` may be DDP-wrapped (evaluation uses the module inside).

    Losses stay on the device until a read-back (every `log_every` steps, and before a
    checkpoint, an evaluation or a progress line): a captured step then runs with no sync at
    all in between, and a NaN or infinite loss still ends the run `diverged` at the step it
    appeared. Rank 0 also checkpoints every `checkpoint_every` steps (or `checkpoint_minutes`),
    so a run that is killed outright (SIGKILL, the OOM killer, a lost node) loses at most that
    much on --resume."""
    device = ctx.device
    model, optimizer = step_fn.model, step_fn.optimizer
    module = getattr(model, "module", model)
    model.train()
    tokens = 0
    train_seconds = 0.0
    last_save = time.monotonic()
    plain = progress and not console.is_terminal
    plain_every, last_line, started = plain_progress_seconds(), time.monotonic(), time.monotonic()
    log = StepLog(config.log_every + 1, device)
    batches = None if step_fn.generates else TrainBatches(task, device, lambda s: _global_shape(config, s, ctx),
                                                          start_step, config.steps)
    value, info, shown = float("nan"), "", start_step
    try:
        with _progress(console, progress) as bar:
            job = bar.add_task("train", total=config.steps, completed=start_step, info="")
            for step in range(start_step, config.steps):
                t0 = time.perf_counter()
                step_fn.set_lr(learning_rate(config, step))
                length, batch_size = _global_shape(config, step, ctx)
                batch = None if batches is None else distributed.shard(batches.get(step), ctx)
                log.add(step, step_fn(step, length, batch_size // ctx.world_size, batch))
                tokens += length * batch_size  # every rank's tokens
                done = step + 1
                last = done == config.steps
                checkpoint = ctx.is_main and not last and _checkpoint_due(config, done, last_save)
                evaluate_now = bool(config.eval_every) and done % config.eval_every == 0 and not last
                line_due = plain and time.monotonic() - last_line >= plain_every
                if step % config.log_every == 0 or last or checkpoint or evaluate_now or line_due or log.full:
                    rows = log.read()
                    if ctx.distributed:  # the mean over ranks decides, the same on every rank
                        rows = [replace(row, loss=distributed.mean(row.loss, ctx)) for row in rows]
                    bad = first_nonfinite(rows)
                    if bad is not None:
                        train_seconds += time.perf_counter() - t0
                        result.metrics[records.TRAIN_SECONDS] = train_seconds
                        result.status, result.message = "diverged", f"loss became {bad.loss} at step {bad.step}"
                        result.steps_done = bad.step
                        tracker.log_metrics({records.TRAIN_LOSS: 1e30}, step=bad.step)
                        return
                    value = rows[-1].loss
                    info = f"loss {value:.3f}"
                    if step % config.log_every == 0 or last:
                        tracker.log_metrics({records.TRAIN_LOSS: value, "lr": learning_rate(config, step),
                                             "grad_norm": rows[-1].grad_norm,
                                             records.TRAIN_TOKENS_PER_S: tokens / max(train_seconds, 1e-9)},
                                            step=step)
                train_seconds += time.perf_counter() - t0
                result.metrics[records.TRAIN_SECONDS] = train_seconds  # kept up to date: a stopped run logs it too
                result.steps_done = done
                if checkpoint:
                    tracker.flush()  # the metrics up to the checkpoint are stored with it
                    save_checkpoint(ckpt, module, optimizer, done, tracker.run_id)
                    last_save = time.monotonic()
                if evaluate_now:
                    if ctx.is_main:
                        t0 = time.perf_counter()
                        samples, eval_batch = eval_plan(config, config.seq_len)
                        metrics = evaluate(module, task, config.seq_len, samples, eval_batch, device, config.precision)
                        _add_seconds(result, records.EVAL_SECONDS, t0)
                        tracker.log_metrics({f"val_{k}": v for k, v in metrics.items() if k != "confusion"}, step=step)
                        info += f"  val {task.main_metric} {metrics[task.main_metric]:.3f}"
                        result.metrics[f"val_{task.main_metric}"] = metrics[task.main_metric]
                    distributed.barrier(ctx)
                if done - shown >= 50 or last or evaluate_now or line_due:  # the bar costs host time: not every step
                    bar.update(job, advance=done - shown, info=info)
                    shown = done
                if line_due or (plain and last):
                    last_line = time.monotonic()
                    eta = (last_line - started) / (done - start_step) * (config.steps - done)
                    console.print(f"train step {done}/{config.steps}  {info}  "
                                  f"{tokens / max(train_seconds, 1e-9):,.0f} tokens/s  eta {eta:,.0f} s", highlight=False)
    finally:
        if batches is not None:
            batches.close()
    result.metrics[records.TRAIN_LOSS] = value if config.steps > start_step else float("nan")
    result.metrics[records.TRAIN_TOKENS_PER_S] = tokens / max(train_seconds, 1e-9)
    tracker.log_metrics({records.TRAIN_TOKENS_PER_S: result.metrics[records.TRAIN_TOKENS_PER_S]}, step=result.steps_done)


def _global_shape(config: RunConfig, step: int, ctx: distributed.Context) -> tuple[int, int]:
    """(length, global batch size) at `step`: every rank's share of the batch together."""
    length, batch_size = config.length_schedule(step)
    return length, batch_size * ctx.world_size


def _checkpoint_due(config: RunConfig, steps_done: int, last_save: float) -> bool:
    if config.checkpoint_every > 0:
        return steps_done % config.checkpoint_every == 0
    return time.monotonic() - last_save >= config.checkpoint_minutes * 60


def _add_seconds(result: RunResult, key: str, since: float) -> None:
    """Add the seconds since `since` to result.metrics[key] (where the run's time went)."""
    result.metrics[key] = result.metrics.get(key, 0.0) + time.perf_counter() - since


def _final_eval(config, task, model, tracker, device, console, progress, result) -> None:
    """Evaluate at every length (a streaming model in chunks where one forward does not fit:
    harness.evaluation); an OOM at one length is recorded and longer ones are skipped."""
    with _progress(console, progress) as bar:
        job = bar.add_task("evaluate", total=len(config.eval_lengths), info="")
        for n, seq_len in enumerate(config.eval_lengths):
            label = format_length(seq_len)
            bar.update(job, info=f"length {label}")
            if model.max_seq_len is not None and seq_len > model.max_seq_len:
                tracker.set_tags({f"skipped/{seq_len}": f"beyond the model's {model.max_seq_len} positions"})
                bar.update(job, advance=1)
                continue
            samples, eval_batch = eval_plan(config, seq_len)
            try:
                chunk = config.eval_chunk
                started = time.perf_counter()
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                for suffix, variant in {"": task, **task.eval_variants(seq_len)}.items():
                    metrics, used = evaluate_length(model, variant, seq_len, samples, eval_batch, device,
                                                    config.precision, chunk, config.loss_by_position and not suffix)
                    if used is not None and chunk is None:  # auto: one forward did not fit
                        console.print(f"length {label} did not fit in one forward: evaluated in chunks of "
                                      f"{format_length(used)}, the state carried across them", highlight=False)
                    if used is not None:
                        chunk = used  # the length's variants take the chunk that fitted
                        tracker.set_tags({f"{records.EVAL_CHUNK}/{seq_len}": str(used)})
                    by_position = metrics.pop("loss_by_position", None)
                    if by_position is not None:
                        tracker.log_text(json.dumps({"length": seq_len, "chunk": used, "bins": [
                            {"start": a, "end": b, "loss": v} for a, b, v in by_position]}),
                            f"loss_by_position/{seq_len}.json")
                    confusion = metrics.pop("confusion", None)
                    if confusion is not None:
                        tracker.log_text(json.dumps({"classes": task.class_names,
                                                     "rows_true_columns_predicted": confusion}),
                                         f"confusion/{seq_len}{suffix}.json")
                    named = {f"{k}/{seq_len}{suffix}": v for k, v in metrics.items()}
                    if seq_len == config.seq_len and not suffix:  # length-free: comparable across a sweep
                        named.update({k: v for k, v in metrics.items() if k != "samples"})
                    tracker.log_metrics(named, step=result.steps_done)
                    result.metrics.update(named)
                cost = {f"eval_wall_seconds/{seq_len}": time.perf_counter() - started}  # the length and its slices
                if device.type == "cuda":
                    cost[f"eval_peak_memory_mb/{seq_len}"] = torch.cuda.max_memory_allocated(device) / 2**20
                tracker.log_metrics(cost, step=result.steps_done)
                result.metrics.update(cost)
            except Exception as exc:  # out of memory, on a GPU or the CPU: recorded, longer lengths skipped
                if not is_out_of_memory(exc):
                    raise
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                skipped = [format_length(s) for s in config.eval_lengths[n:]]
                tracker.set_tags({records.EVAL_OOM_FROM: str(seq_len)})
                console.print(f"[yellow]evaluation ran out of memory at length {label}; skipped {', '.join(skipped)}")
                break
            bar.update(job, advance=1)
