"""Task plugins: data, head and metrics for each benchmark."""

from seqbench.tasks.base import Batch, GeneratedTask, HeadSpec, MeasuringTask, Task, TaskDefaults

__all__ = ["Batch", "GeneratedTask", "HeadSpec", "MeasuringTask", "Task", "TaskDefaults", "get_task"]


def get_task(name: str, modality: str | None = None, data: str | None = None, seed: int = 0, **options) -> Task:
    """Build the task registered under `name` (built-in or plugin); `options` are the task's own
    settings (e.g. MQAR's kv, spoken-digits' split), `--task-set key=value` on the command line."""
    import inspect

    from seqbench.core.errors import SeqbenchError
    from seqbench.core.registry import load

    task_cls = load("tasks", name)
    accepted = [p for p in inspect.signature(task_cls.__init__).parameters if p not in ("self", "modality", "data", "seed")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SeqbenchError(f"task {name!r} has no setting {unknown[0]!r}; accepted: {', '.join(accepted) or 'none'}")
    return task_cls(modality=modality, data=data, seed=seed, **options)
