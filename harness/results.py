"""A finished run as one JSON document (`seqbench run --output-json PATH`), for scripts and CI that
should not parse the console table or query MLflow.

    {"schema": 1, "status": "ok", "message": "", "run_id": "...", "steps_done": 1200,
     "tracking_uri": "sqlite:///mlflow.db", "experiment": "induction-heads",
     "config": {...the resolved RunConfig..., "config_hash": "..."},
     "versions": {"seqbench": "0.1.0", "torch": "2.11.0", "python": "3.11.7", "code": "<git sha>"},
     "device": "cpu", "dtype": "fp32",
     "metrics": {"accuracy": {"64": 1.0, "256": 1.0}, "loss": {...}, "train_loss": 0.01, ...}}

A metric recorded per evaluation length (`accuracy/64`, MQAR's `accuracy/64/kv8`) is a dict from
the length to its value under its name without the length (`accuracy`, `accuracy/kv8`); the others
(`train_loss`, `train_tokens_per_s`, `peak_memory_mb`, `gen_tokens_per_s/b8`, ...) are plain
numbers. Values are the run's last recorded ones, as MLflow holds them; a value that is not finite
is null. MLflow also holds the training length's evaluation without its length suffix; here it
is in the per-length dicts only.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict
from pathlib import Path

SCHEMA = 1


def metrics_by_length(metrics: dict[str, float], training_length: int | None = None) -> dict[str, object]:
    """{"accuracy/64": 1.0, "train_loss": 0.1} -> {"accuracy": {"64": 1.0}, "train_loss": 0.1},
    lengths in ascending order. A length-free metric named like a per-length one (the runner logs
    the training length's evaluation without its suffix too, for MLflow's compare view) is that
    copy and is left out when it equals the value at `training_length`; else it is kept as
    `<name>/unsuffixed`."""
    grouped: dict[str, object] = {}
    plain: dict[str, float | None] = {}
    for key in sorted(metrics, key=_length_order):
        value = _finite(metrics[key])
        parts = key.split("/")
        at = next((i for i, part in enumerate(parts) if i > 0 and part.isdigit()), None)
        if at is None:
            plain[key] = value
            continue
        name = "/".join(parts[:at] + parts[at + 1:])
        grouped.setdefault(name, {})[parts[at]] = value
    for key, value in plain.items():
        per_length = grouped.get(key)
        if per_length is None:
            grouped[key] = value
        elif training_length is None or per_length.get(str(training_length)) != value:
            grouped[f"{key}/unsuffixed"] = value
    return dict(sorted(grouped.items(), key=lambda item: _length_order(item[0])))


def _length_order(key: str) -> tuple:
    parts = key.split("/")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def run_document(result) -> dict:
    """The JSON document of a RunResult (see the module docstring): its record in MLflow where the
    store still answers, else what the result itself holds."""
    import torch

    from seqbench import __version__
    from seqbench.harness.tracking import code_version, resolve_tracking_uri

    config = result.config
    uri = resolve_tracking_uri(config.tracking_uri)
    params: dict[str, str] = {}
    metrics = dict(result.metrics)
    try:
        from mlflow.tracking import MlflowClient

        run = MlflowClient(uri).get_run(result.run_id)
        params = dict(run.data.params)
        metrics = {**run.data.metrics, **metrics}
    except Exception:  # the store is gone or the run was never created: the result alone
        pass
    return {
        "schema": SCHEMA,
        "status": result.status,
        "message": result.message,
        "run_id": result.run_id,
        "steps_done": result.steps_done,
        "tracking_uri": uri,
        "experiment": config.experiment,
        "config": {**asdict(config), "config_hash": config.hash()},
        "versions": {"seqbench": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "code": params.get("code_version") or code_version()},
        "device": params.get("device_name") or _device_name(config.device),
        "dtype": params.get("dtype"),
        "metrics": metrics_by_length({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))},
                                     training_length=config.seq_len),
    }


def _device_name(choice: str) -> str:
    import torch

    if choice != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def write_json(path: Path, document: dict) -> Path:
    """Write `document` to a temporary name beside `path`, then rename it into place: a reader never
    sees half a file, and an interrupted write leaves the previous one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_run_json(path: Path, result) -> Path:
    """`seqbench run --output-json PATH`: the run's document, written whole."""
    return write_json(path, run_document(result))
