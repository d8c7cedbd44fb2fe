"""Config files for `seqbench run` and `seqbench sweep` (`--config FILE.toml`), and the resolved
config of a run written back in that form (`config_toml`), so a logged run can be repeated.

A file's keys are the command's flags without their dashes (`seq_len = 256`, `eval_lengths =
[64, 256, "1k"]`; a sweep's `model = ["mamba", "transformer:125m"]`), the tables `[set]` and
`[task_set]` for model and task settings, and the run settings that have no flag (`weight_decay`,
`schedule`, `warmup_steps`, `grad_clip`, `eval_every`, `eval_tokens`, ...: the other fields of
RunConfig). Flags given on the command line override the file (`--set` and `--task-set` key by
key). An unknown key or a value of the wrong type is one line on stderr and exit code 2.

The file's flag values become the command's defaults (click's default_map, set by the eager
`--config` callback), so they go through the same parsing and checks as typed flags; the rest is
kept in the context and applied to the RunConfig by `apply_config_file`.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Optional

import typer

from seqbench.core.errors import SeqbenchError
from seqbench.harness.config import RunConfig, parse_length

META_KEY = "seqbench.config_file"
TABLES = {"set": "model_kwargs", "task_set": "task_kwargs"}
# RunConfig fields no file sets directly: nproc, [set] and [task_set] stand for the first three;
# size is a flag where it means something (a sweep names sizes in `model`), a run's name is the runner's.
NOT_KEYS = ("world_size", "model_kwargs", "task_kwargs", "size", "run_name", "resume")
LENGTH_FIELDS = ("seq_len", "seq_warmup_start", "eval_tokens")  # also take "1k", "64k", "2^20"
_SCALARS = (bool, int, float, str)


def _callback(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """Eager `--config` callback: the file's flag values become the command's defaults."""
    if value is None or ctx.resilient_parsing:
        return value
    try:
        defaults, meta = read_config_file(value, ctx)
    except SeqbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[META_KEY] = meta
    return value


def config_option() -> Any:
    """The `--config FILE.toml` option of run and sweep."""
    return typer.Option(None, "--config", callback=_callback, is_eager=True,
                        help="TOML file of options: the flags' names as keys (seq_len = 256), tables set and "
                             "task_set, and weight_decay, schedule, ...; flags given here override it.")


def apply_config_file(ctx: typer.Context, config: RunConfig) -> RunConfig:
    """`config` (built from the flags) with the file's other settings: its RunConfig fields that
    have no flag, and its [set] / [task_set] tables under the flags' own --set / --task-set."""
    meta = ctx.meta.get(META_KEY)
    if not meta:
        return config
    return replace(config, **meta["fields"], model_kwargs={**meta["set"], **config.model_kwargs},
                   task_kwargs={**meta["task_set"], **config.task_kwargs})


def read_config_file(path: Path, ctx: typer.Context) -> tuple[dict, dict]:
    """(defaults by parameter name, {"fields", "set", "task_set"}) of a config file for the
    command of `ctx`; SeqbenchError (one line) for an unreadable file, an unknown key or a value
    the key does not take."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise SeqbenchError(f"cannot read config file {path} ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SeqbenchError(f"config file {path} is not TOML ({e})") from None
    flags, settings = flag_keys(ctx.command), field_keys(ctx.command)
    by_name = {p.name: p for p in flags.values()}
    hints = typing.get_type_hints(inspect.unwrap(ctx.command.callback))
    defaults: dict[str, Any] = {}
    meta: dict[str, dict] = {"fields": {}, "set": {}, "task_set": {}}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        where = f"config file {path}: {raw_key}"
        if key in TABLES:
            meta[key] = _table(where, key, value)
        elif key in flags or key in by_name:
            param = flags.get(key) or by_name[key]
            defaults[param.name] = _flag_value(where, param, hints.get(param.name, Any), value, ctx)
        elif key in settings:
            meta["fields"][key] = _field_value(where, key, settings[key], value)
        else:
            accepted = sorted({*flags, *settings, *TABLES})
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SeqbenchError(f"config file {path} has an unknown key {raw_key!r}{hint}; accepted: "
                                f"{', '.join(accepted)}")
    if "WORLD_SIZE" in os.environ:  # a torchrun rank: the launching process already acted on nproc
        defaults.pop("nproc", None)
    return defaults, meta


def flag_keys(command: Any) -> dict[str, Any]:
    """The command's parameters by file key: the long flag without dashes (--seq-len -> seq_len,
    --time -> time) or the argument's name (task). A parameter's Python name (time_limit) is
    accepted too, as `read_config_file` looks it up."""
    keys: dict[str, Any] = {}
    for p in command.params:
        if p.name is None or p.multiple or "--config" in p.opts:
            continue  # --set / --task-set (multiple) are tables
        long = [o for o in p.opts if o.startswith("--")]
        keys[(long[0][2:] if long else p.name).replace("-", "_")] = p
    return keys


def field_keys(command: Any) -> dict[str, Any]:
    """RunConfig fields a file may set that are no flag of `command`, with their types."""
    flags = {p.name for p in command.params} | set(flag_keys(command))
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in fields(RunConfig) if f.name not in flags and f.name not in NOT_KEYS}


def _table(where: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise SeqbenchError(f"{where} takes a table of settings: a [{key}] line, then key = value lines")
    for name, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not all(isinstance(i, _SCALARS) for i in items):
            raise SeqbenchError(f"{where}.{name} takes a number, text, true/false or a list of them, got {item!r}")
    return dict(value)


def _flag_value(where: str, param: Any, hint: Any, value: Any, ctx: typer.Context) -> Any:
    """A file value as the command line would give it (text for a text flag; a list of lengths
    or models joined by commas), checked by the parameter's own parsing."""
    kinds = [m for m in _members(hint) if m is not type(None)]
    if str in kinds:
        if isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # seq_len = 256 as --seq-len 256
    if not isinstance(value, _SCALARS) or (isinstance(value, bool) and bool not in kinds):
        raise SeqbenchError(f"{where} takes {_describe(kinds)}, got {value!r}")
    try:
        param.process_value(ctx, value)
    except typer.BadParameter as e:
        raise SeqbenchError(f"{where} = {value!r}: {e.format_message()}") from None
    return value


def _members(hint: Any) -> tuple:
    """The types an annotation admits (Optional[int] -> (int, NoneType))."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _describe(kinds: list) -> str:
    words = {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path"}
    return " or ".join(words.get(m, getattr(m, "__name__", str(m))) for m in kinds) or "a value"


def _field_value(where: str, key: str, hint: Any, value: Any) -> Any:
    """A file value for a RunConfig field of type `hint` (int, float, str, bool, optional)."""
    members = [m for m in _members(hint) if m is not type(None)]
    for member in members:
        if member is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue
        if member is int and key in LENGTH_FIELDS and isinstance(value, (int, str)):
            return parse_length(value)
        if member is int and isinstance(value, int):
            return value
        if member is float and isinstance(value, (int, float)):
            return float(value)
        if member is str and isinstance(value, str):
            return value
    raise SeqbenchError(f"{where} takes {_describe(members)}, got {value!r}")


# ---- writing --------------------------------------------------------------------------------
def config_toml(config: RunConfig) -> str:
    """The TOML text of a (resolved) run config that `seqbench run --config` reads back into the
    same config: every field with a value, `nproc` for a data-parallel run, model and task
    settings as [set] and [task_set]. Fields left None (no size, no --data) are left out."""
    lines = ["# seqbench run --config FILE repeats this run; flags given beside it override these keys.", ""]
    for f in fields(RunConfig):
        value = getattr(config, f.name)
        if f.name == "world_size":
            if value > 1:
                lines.append(f"nproc = {value}")
        elif f.name == "size" and value is not None:
            lines.append(f"size = {_toml_value(value)}")
        elif f.name not in NOT_KEYS and value is not None:
            lines.append(f"{_toml_key(f.name)} = {_toml_value(value)}")
    for table, name in TABLES.items():
        settings = {k: v for k, v in getattr(config, name).items() if v is not None}
        if settings:
            lines += ["", f"[{table}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")  # JSON escapes are TOML escapes


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (str, Path)):
        return _toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise SeqbenchError(f"cannot write {value!r} ({type(value).__name__}) to a config file")
