"""Task plugins: data, head and metrics for each benchmark."""

from tasks.base import Batch, HeadSpec, Task, TaskDefaults

__all__ = ["Batch", "HeadSpec", "Task", "TaskDefaults", "get_task"]


def get_task(name: str, modality: str | None = None, data: str | None = None, seed: int = 0) -> Task:
    """Build the task registered under `name` (built-in or plugin)."""
    from harness.registry import load

    return load("tasks", name)(modality=modality, data=data, seed=seed)
