"""What a `seqbench run` or `sweep` would do, resolved in full but not done (`--dry-run`).

Everything that decides a run is worked out as the real command does it: the task and its data
(a data set by name is downloaded and checked, a file is read), the config filled from the task's
defaults and checked, the model built (on the meta device: shapes and a parameter count, no memory),
the device, precision and training step, the config hash and the checkpoint --resume would load.
Nothing is trained, no MLflow store or run is created and nothing is written, so a command can be
checked before hours are spent on it, and a README's examples can be checked verbatim.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from seqbench.core.devices import check_precision, pick_device, precision_name
from seqbench.core.errors import SeqbenchError
from seqbench.harness.config import RunConfig, format_length
from seqbench.harness import records
from seqbench.harness.runner import find_checkpoint
from seqbench.harness.sweep import Sweep
from seqbench.harness.tracking import resolve_tracking_uri
from seqbench.harness.train_step import choose_mode
from seqbench.models import build_model
from seqbench.tasks import get_task
from seqbench.tasks.base import MeasuringTask


def _lengths(lengths: list[int]) -> str:
    return ",".join(format_length(n) for n in lengths)


def _parameters(config: RunConfig, task) -> tuple[int, int | None]:
    """(parameter count, the model's longest length or None) of the resolved config's model."""
    with torch.device("meta"):
        model = build_model(config.model, vocab_size=task.vocab_size, head=task.head, **config.model_kwargs)
    return model.num_parameters(), model.max_seq_len


def _chunking(config: RunConfig) -> str:
    """How --eval-chunk will evaluate (harness.evaluation), in words."""
    if config.eval_chunk == 0:
        return "; never streamed"
    if config.eval_chunk:
        return f"; streamed in chunks of {format_length(config.eval_chunk)} above that (Mamba)"
    return "; streamed where one forward runs out of memory (Mamba)"


def describe_run(config: RunConfig, nproc: int = 1) -> list[tuple[str, str]]:
    """(what, value) rows of the run `config` asks for, resolved as the runner resolves it."""
    device = pick_device(config.device)
    task = get_task(config.task, modality=config.modality, data=config.data, seed=config.seed, **config.task_kwargs)
    resolved = replace(config, world_size=nproc).resolve(task, device.type)
    check_precision(resolved.precision, device)
    n_parameters, max_len = _parameters(resolved, task)
    measuring = isinstance(task, MeasuringTask)
    if max_len is not None and resolved.seq_len > max_len and not measuring:
        raise SeqbenchError(f"{resolved.model} takes at most {format_length(max_len)} tokens "
                            f"(its positions); cannot train at {format_length(resolved.seq_len)}")
    mode, why = choose_mode(resolved.train_step, device, nproc)
    rows = [("task", f"{resolved.task} ({task.modality}" + (f", data {resolved.data})" if resolved.data else ")")),
            ("model", resolved.model + (f" {resolved.size}" if resolved.size else "")
             + f": {n_parameters:,} parameters"),
            ("model settings", ", ".join(f"{k}={v}" for k, v in sorted(resolved.model_kwargs.items())) or "-")]
    if measuring:
        rows.append(("measures", f"lengths {_lengths(resolved.eval_lengths)}; no training"))
    else:
        batch = f"{resolved.batch_size}" + (f" per process x {nproc} = {resolved.batch_size * nproc}" if nproc > 1 else "")
        rows += [("training", f"{resolved.steps:,} steps at {format_length(resolved.seq_len)}, batch {batch}, "
                              f"lr {resolved.lr:g} ({resolved.schedule})"),
                 ("evaluation", f"lengths {_lengths(resolved.eval_lengths)}" + _chunking(resolved)),
                 ("step", f"{mode} ({why}); {precision_name(device, resolved.precision)}")]
    rows += [("device", f"{device}" + (f" x {nproc} processes" if nproc > 1 else "")),
             ("store", f"{resolve_tracking_uri(resolved.tracking_uri)}, experiment {resolved.experiment}"),
             ("config hash", resolved.hash())]
    if resolved.resume:
        found = find_checkpoint(resolved, None)
        rows.append(("resume", f"from {found}" if found else f"no checkpoint in {resolved.checkpoint_dir}: from step 0"))
    return rows


def describe_sweep(sweep: Sweep) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """(what, value) rows of a planned sweep (nothing started), and one row per child in the
    order they start: model, length, steps, batch, parameters, evaluation lengths, config hash."""
    base = sweep.base
    tasks: dict[str, object] = {}  # a suite's children are of several tasks and settings
    table = []
    for child in sweep.launch_order():
        c = child.config
        key = repr((c.task, sorted(c.task_kwargs.items())))
        if key not in tasks:
            tasks[key] = get_task(c.task, modality=c.modality, data=c.data, seed=c.seed, **c.task_kwargs)
        task = tasks[key]
        config = c.resolve(task, sweep.device_type)
        n_parameters, _ = _parameters(config, task)
        table.append({"model": child.label, "length": format_length(child.seq_len),
                      **({"seed": child.tags[records.SEED]} if records.SEED in child.tags else {}),
                      "steps": f"{config.steps:,}", "batch": str(config.batch_size), "parameters": f"{n_parameters:,}",
                      "eval at": _lengths(config.eval_lengths), "config hash": child.config_hash})
    cells = {(c.config.task, repr(sorted(c.config.task_kwargs.items())), c.seq_len) for c in sweep.children}
    seeds = len({c.config.seed for c in sweep.children})
    shape = (f"{len(sweep.models)} models x {len(sweep.lengths)} lengths" + (f" x {seeds} seeds" if seeds > 1 else "")
             if sweep.name == base.task else
             f"{len(sweep.models)} models x {len(cells)} task cells x "
             f"{len(sweep.children) // max(1, len(sweep.models) * len(cells))} optimiser points")
    rows = [("task", sweep.name if sweep.name != base.task else
             f"{base.task} ({task.modality}" + (f", data {base.data})" if base.data else ")")),
            ("children", f"{len(table)} ({shape}), "
                         f"{sweep.jobs} at a time, {sweep.launcher_name} on {sweep.device_type}"
                         + (f", at most {sweep.time_budget:g} s each" if sweep.time_budget else "")),
            ("store", f"{base.tracking_uri}, experiment {base.experiment}"),
            ("resume", "finished children of the same sweep are skipped" if sweep.resume else "a new sweep")]
    return rows, table
