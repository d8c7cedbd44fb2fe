"""Task plugins: data, head and metrics for each benchmark."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from seqbench.tasks.base import Batch, GeneratedTask, HeadSpec, MeasuringTask, Task, TaskDefaults

__all__ = ["Batch", "GeneratedTask", "HeadSpec", "MeasuringTask", "Task", "TaskDefaults", "check_task_settings",
           "get_task", "task_settings"]

# Task.__init__ parameters that are not settings: the CLI's --modality, --data and --seed.
_NOT_SETTINGS = ("self", "modality", "data", "seed")


def get_task(name: str, modality: str | None = None, data: str | None = None, seed: int = 0, **options) -> Task:
    """Build the task registered under `name` (built-in or plugin); `options` are the task's own
    settings (e.g. MQAR's kv, spoken-digits' split), `--task-set key=value` on the command line,
    checked and brought to their declared types by `check_task_settings` before anything is built."""
    from seqbench.core.registry import load

    settings = check_task_settings(name, options)
    return load("tasks", name)(modality=modality, data=data, seed=seed, **settings)


def task_settings(name: str) -> dict[str, inspect.Parameter]:
    """The settings a task takes: its `__init__` keyword parameters beyond modality, data and seed."""
    from seqbench.core.registry import load

    params = inspect.signature(load("tasks", name).__init__).parameters
    return {key: p for key, p in params.items() if key not in _NOT_SETTINGS
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}


def task_setting_values(name: str, given: dict) -> dict:
    """Every setting the task runs with: `given` over the defaults of its `__init__` (what a run
    records, so that a default changed later still tells its runs apart)."""
    return {key: given.get(key, p.default) for key, p in task_settings(name).items()
            if key in given or p.default is not inspect.Parameter.empty}


def check_task_settings(name: str, settings: dict) -> dict:
    """Refuse, in one line, a --task-set key the task does not take (listing those it takes) or a
    value that is not of the type its `__init__` declares (its annotation, else its default's
    type); return the settings brought to those types (e.g. `gen_batches=1,8` -> (1, 8)).

    The CLI reads `--task-set` values as integers, numbers, true/false or text; text is accepted
    for a tuple or list setting as comma-separated items, and for an optional setting "none" is None."""
    from seqbench.core.errors import SeqbenchError
    from seqbench.core.registry import load

    accepted = task_settings(name)
    try:
        hints = typing.get_type_hints(load("tasks", name).__init__)
    except Exception:  # an annotation that does not resolve: fall back on the defaults' types
        hints = {}
    checked = {}
    for key, value in settings.items():
        if key not in accepted:
            raise SeqbenchError(f"task {name!r} has no setting {key!r}; accepted: {', '.join(accepted) or 'none'}")
        param = accepted[key]
        default = None if param.default is inspect.Parameter.empty else param.default
        expected = hints.get(key, type(default) if default is not None else Any)
        try:
            checked[key] = _convert(value, expected)
        except (TypeError, ValueError):
            raise SeqbenchError(f"--task-set {key} takes {_describe(expected)}, got {value!r}") from None
        _check_range(key, checked[key], default)
    return checked


def _members(expected) -> list:
    """The types a union admits (one type: itself); NoneType last, sequences before text (a
    `tuple[int, ...] | str` setting reads text as the tuple's comma-separated spelling)."""
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        members = list(typing.get_args(expected))
    else:
        members = [expected]
    sequences = [m for m in members if typing.get_origin(m) in (tuple, list) or m in (tuple, list)]
    if sequences:
        members = [m for m in members if m is not str]
    return sorted(members, key=lambda m: (m is type(None), m is str))


def _convert(value, expected):
    """`value` as `expected` (a type, a union, tuple[X, ...] or list[X]); TypeError or ValueError
    when it is none of them."""
    if expected is Any or expected is inspect.Parameter.empty:
        return value
    members = _members(expected)
    for member in members:
        try:
            return _convert_one(value, member)
        except (TypeError, ValueError):
            continue
    raise TypeError(f"{value!r} is not {_describe(expected)}")


def _convert_one(value, member):
    origin = typing.get_origin(member)
    if member is type(None):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        raise TypeError
    if origin in (tuple, list) or member in (tuple, list):
        args = [a for a in typing.get_args(member) if a is not Ellipsis]
        item = args[0] if args else Any
        if isinstance(value, (tuple, list)):
            items = list(value)
        elif isinstance(value, str):
            items = [part.strip() for part in value.split(",") if part.strip()]
        else:
            items = [value]
        return (tuple if (origin or member) is tuple else list)(_convert_text(v, item) for v in items)
    return _convert_text(value, member)


def _convert_text(value, member):
    """A scalar as `member`: bool, int, float or str (text parsed where the CLI left it as text)."""
    if member is Any:
        return value
    if member is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if member is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value)
        raise TypeError
    if member is float:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise TypeError
    if member is str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float, str)):
            return str(value)  # --task-set split=1 was read as a number
        raise TypeError
    if isinstance(member, type) and isinstance(value, member):
        return value
    raise TypeError


def _describe(expected) -> str:
    """'an integer', 'an integer or none', 'comma-separated integers', ... for the error line."""
    if expected is Any:
        return "any value"
    members = _members(expected)
    in_sequences = {a for m in members if typing.get_origin(m) in (tuple, list) for a in typing.get_args(m)}
    words = []
    for member in [m for m in members if m not in in_sequences]:  # 1,8 or 8: "comma-separated integers"
        origin = typing.get_origin(member)
        if member is type(None):
            words.append("none")
        elif origin in (tuple, list) or member in (tuple, list):
            args = [a for a in typing.get_args(member) if a is not Ellipsis]
            inner = _describe(args[0]) if args else "values"
            words.append("comma-separated " + {"an integer": "integers", "a number": "numbers", "text": "text",
                                               "true or false": "true/false values"}.get(inner, inner))
        else:
            words.append({bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(
                member, getattr(member, "__name__", str(member))))
    return " or ".join(dict.fromkeys(words))


def _check_range(key: str, value, default) -> None:
    """Counts and sizes whose default is positive stay positive (as model settings do)."""
    from seqbench.core.errors import SeqbenchError

    if isinstance(default, bool) or isinstance(value, bool):
        return
    if isinstance(default, int) and default > 0 and isinstance(value, int) and value < 1:
        raise SeqbenchError(f"--task-set {key} must be >= 1, got {value}")
    if isinstance(default, float) and default > 0 and isinstance(value, float) and value <= 0:
        raise SeqbenchError(f"--task-set {key} must be > 0, got {value}")
    if (isinstance(default, tuple) and default and all(isinstance(d, int) and d > 0 for d in default)
            and isinstance(value, tuple) and any(isinstance(v, int) and v < 1 for v in value)):
        raise SeqbenchError(f"--task-set {key} takes integers >= 1, got {value!r}")
