"""What a sweep is, before it runs: the (model, length) children of a task, each config resolved
and checked, the sweep's identity, and the spec file a child process reads. The scheduler
(sweep/scheduler.py, sweep/launch.py) and the Slurm launcher (harness/slurm.py) both build on it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from seqbench.core.errors import SeqbenchError
from seqbench.harness.config import RunConfig, format_length
from seqbench.harness import records


def parse_models(text: str) -> list[tuple[str, str | None]]:
    """'mamba,transformer:125m' -> [('mamba', None), ('transformer', '125m')], names checked."""
    from seqbench.core.registry import registry

    models = []
    for item in text.split(","):
        family, _, size = item.strip().partition(":")
        if not family:
            raise SeqbenchError(f"--model takes comma-separated families (optionally family:size), got {text!r}")
        registry("models").target(family)
        if size:
            from seqbench.models.presets import preset

            preset(family, size)
        models.append((family, size or None))
    if len(set(models)) != len(models):
        raise SeqbenchError(f"--model lists a model twice: {text!r}")
    return models


def model_label(family: str, size: str | None) -> str:
    """'mamba:130m' for a named size, else the family 'mamba' (how runs, reports and plots name a model)."""
    return f"{family}:{size}" if size and size != "None" else family


@dataclass
class Child:
    """One (model, length) of a sweep: its config, MLflow run and outcome."""

    config: RunConfig  # as asked (the child process resolves it again, to the same hash)
    label: str
    seq_len: int
    config_hash: str
    params: dict[str, str]
    run_id: str | None = None
    status: str = "pending"
    message: str = ""
    seconds: float = 0.0
    metric: float | None = None
    stopped_as: tuple[str, str] | None = None  # (status, message) the sweep stopped it with, if it did
    tags: dict[str, str] = field(default_factory=dict)  # extra tags of its run (a suite's cell, e.g. MAD's)
    # what tells its spec and log file apart beyond label and length (a suite's task, a seed)
    stem_parts: tuple[str, ...] = ()


def plan(base: RunConfig, models: list[tuple[str, str | None]], lengths: list[int], device_type: str,
         batch_tokens: int | None = None, seeds: list[int] | None = None) -> list[Child]:
    """Every (model, length) child, shortest length first, each config resolved and checked.

    Children evaluate at their own training length unless `base.eval_lengths` says otherwise.
    With `batch_tokens`, every child's batch holds that many tokens (batch = tokens // length, at
    least one sequence), so every length trains on the same number of tokens per step. With
    several `seeds`, every (model, length) runs once per seed (data and initialisation), and the
    report gives each cell's mean and spread over them."""
    from seqbench.tasks import get_task

    if batch_tokens is not None and base.batch_size is not None:
        raise SeqbenchError("--batch-tokens and --batch-size both set the batch; give one")
    if batch_tokens is not None and batch_tokens < 1:
        raise SeqbenchError(f"--batch-tokens must be >= 1, got {batch_tokens}")
    seeds = list(dict.fromkeys(seeds)) if seeds else [base.seed]
    several = len(seeds) > 1  # then each child is tagged, named and filed with its seed
    task = get_task(base.task, modality=base.modality, data=base.data, seed=base.seed, **base.task_kwargs)
    children = []
    for seq_len in sorted(lengths):
        batch_size = max(1, batch_tokens // seq_len) if batch_tokens is not None else base.batch_size
        for family, size in models:
            for seed in seeds:
                config = replace(base, model=family, size=size, seq_len=seq_len, batch_size=batch_size,
                                 eval_lengths=base.eval_lengths or [seq_len], resume=False, seed=seed)
                resolved = config.resolve(task, device_type)
                label = model_label(family, size)
                children.append(Child(config=config, label=label, seq_len=seq_len, config_hash=resolved.hash(),
                                      params=resolved.to_params(), tags={records.SEED: str(seed)} if several else {},
                                      stem_parts=(f"seed{seed}",) if several else ()))
    return children


def sweep_hash(task: str, children: list[Child]) -> str:
    """Identity of a sweep: its task and the set of its children's config hashes."""
    payload = json.dumps([task, sorted(c.config_hash for c in children)])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def child_stem(child: Child) -> str:
    """File-name stem of a child's spec and log: 'transformer-125m-4k', then its `stem_parts`
    ('mamba-4k-seed1'; a suite's children, whose tasks share labels and lengths, add the task)."""
    return "-".join((child.label.replace(":", "-"), format_length(child.seq_len), *child.stem_parts))


def write_spec(workdir: Path, child: Child, spec: dict) -> Path:
    """The child's spec file (written whole, then renamed into place)."""
    path = workdir / f"{child_stem(child)}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, path)
    return path
