"""MLflow tracking: the embedded SQLite store by default, any tracking URI on request.

The store and the experiment are created before a run starts (concurrent SQLite schema setup
races otherwise). Metrics are buffered and sent in batches so per-step logging stays cheap.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqbench.core.errors import SeqbenchError
from seqbench.harness import records

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# Run outcome (our `status` tag) -> MLflow's run status.
MLFLOW_STATUS = {"ok": "FINISHED", "interrupted": "KILLED", "running": "RUNNING"}


# Stores MLflow can keep runs in (a database through SQLAlchemy, a server, a folder).
_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory;
    a URI MLflow cannot keep runs in, or an in-memory one that would lose them, is refused in one line."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else "file"
    if scheme not in _SCHEMES:
        raise SeqbenchError(f"tracking URI {uri!r} has no store MLflow can keep runs in; accepted: "
                            f"sqlite:///FILE, http(s)://SERVER, postgresql://..., mysql://..., a folder")
    if scheme == "sqlite" and (uri.rstrip("/") in ("sqlite:", "sqlite:/") or uri.endswith(":memory:")):
        raise SeqbenchError(f"tracking URI {uri!r} is an in-memory store: the runs would exist nowhere; "
                            f"use sqlite:///FILE")
    return uri


SERVER_PROBE_SECONDS = 3.0  # how long a tracking server may take to answer before it counts as down


def check_server(uri: str, timeout: float = SERVER_PROBE_SECONDS) -> None:
    """For an http(s) store, one short request to the server before MLflow is touched: MLflow
    itself retries a server that does not answer for minutes, then prints pages of traceback.
    Any HTTP answer counts (a proxy's 401 too); no answer within `timeout` is one line."""
    if not uri.lower().startswith(("http://", "https://")):
        return
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # something answered: MLflow reports what it says
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return  # a TLS server answered; MLflow has its own certificate settings
        raise SeqbenchError(f"no MLflow server answers at {uri} ({_reason(exc.reason)}); start one "
                            f"(`mlflow server --host 127.0.0.1 --port 5000`) or pass another --tracking-uri") from None
    except (OSError, ValueError) as exc:  # a time-out while reading, a malformed URL
        raise SeqbenchError(f"no MLflow server answers at {uri} ({_reason(exc)}); start one "
                            f"(`mlflow server --host 127.0.0.1 --port 5000`) or pass another --tracking-uri") from None


def _reason(exc: object) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within a few seconds"
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def store_flags(uri: str | None) -> str:
    """' --tracking-uri URI' when `uri` (resolved as the runs resolve it) is not the default store,
    else '': appended to a command the CLI prints, so that it reaches the same store."""
    import shlex

    resolved = resolve_tracking_uri(uri)
    return "" if resolved == DEFAULT_TRACKING_URI else f" --tracking-uri {shlex.quote(resolved)}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative paths against the working directory)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database in ./mlruns, wherever the run starts."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / "mlruns" / experiment).as_uri()


@contextmanager
def _store_lock(db: Path | None):
    """An inter-process lock beside a SQLite store (`<db>.lock`), held while the store is created
    or upgraded and the experiment made: MLflow's schema set-up is not safe when several
    processes open a new store at once (they crash, and can leave `_alembic_tmp_*` tables behind)."""
    if db is None:
        yield
        return
    import fcntl

    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_store_file(db: Path) -> None:
    """One line instead of a traceback for a store path that is no usable SQLite database."""
    if not db.exists():
        return
    if db.is_dir():
        raise SeqbenchError(f"tracking store {db} is a directory; pass a database file, e.g. sqlite:///{db}/mlflow.db")
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = [row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")]
    except sqlite3.DatabaseError:
        raise SeqbenchError(f"tracking store {db} is not an SQLite database; pass another --tracking-uri") from None
    leftovers = [t for t in tables if t.startswith("_alembic_tmp_")]
    if leftovers:
        raise SeqbenchError(f"tracking store {db} was left half-upgraded by an interrupted schema migration "
                            f"(table {leftovers[0]}); move it aside and start a new store, or repair it with "
                            f"`mlflow db upgrade sqlite:///{db}`")


def setup_experiment(uri: str, experiment: str) -> str:
    """Create the store (if new) and the experiment (if missing) under the store's lock; return
    the experiment id."""
    check_server(uri)
    db = sqlite_path(uri)
    if db is not None and not db.resolve().parent.is_dir():
        raise SeqbenchError(f"tracking store folder {db.resolve().parent} does not exist")
    if db is not None:
        _check_store_file(db)
    with _store_lock(db):
        return _get_or_create_experiment(uri, experiment)


def _get_or_create_experiment(uri: str, experiment: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=_artifact_location(uri, experiment))
    except Exception:  # created meanwhile by a concurrent process
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def code_version() -> str:
    """Git sha of the installed source tree (with '-dirty' when modified), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunTracker:
    """One MLflow run: params, buffered metrics, tags, artifacts, and the final status."""

    def __init__(self, uri: str, experiment_id: str, run_id: str | None = None, run_name: str | None = None,
                 tags: dict[str, str] | None = None, parent_run_id: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        self.uri = uri
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[records.PARENT] = parent_run_id
        if run_id is None:
            run = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            for key, value in all_tags.items():
                self.client.set_tag(run_id, key, value)
        self._pending: list[Any] = []
        self._last_flush = 0.0  # the first metrics go out at once: the store shows the run has started

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._pending) >= 500 or time.monotonic() - self._last_flush > 5:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._pending), 1000):
            self.client.log_batch(self.run_id, metrics=self._pending[i:i + 1000])
        self._pending = []
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def finish(self, status: str) -> None:
        """Flush, tag `status` (ok/oom/diverged/interrupted/failed/...) and close the run."""
        self.flush()
        self.client.set_tag(self.run_id, records.STATUS, status)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))


class SilentTracker:
    """RunTracker's methods recording nothing: what data-parallel ranks other than 0 log through,
    so that one MLflow run exists per training run however many processes train it."""

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id

    def log_params(self, params: dict[str, str]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def finish(self, status: str) -> None:
        pass
