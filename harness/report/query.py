"""Reading a sweep from MLflow: its parent and children, one row per (model, length) with the
cell's status and metrics."""

from __future__ import annotations

from dataclasses import replace

from seqbench.harness.config import format_length
from seqbench.core.errors import SeqbenchError
from seqbench.harness.sweep.plan import model_label
from seqbench.harness.tracking import check_server, sqlite_path, store_flags
from seqbench.harness import records
from seqbench.harness.report.model import ReportRow, THROUGHPUT


# MLflow run status -> our status tag, for runs that never set one.
_STATUS_OF_MLFLOW = {"FINISHED": "ok", "KILLED": "interrupted", "RUNNING": "running", "FAILED": "failed"}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    check_server(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # MLflow would create an empty store here
        raise SeqbenchError(f"no tracking store at {db}; pass --tracking-uri, or run where mlflow.db is")
    return MlflowClient(uri)


def _search(client, experiment_ids: list[str], filter_string: str = "") -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiments(client) -> list:
    found, token = [], None
    while True:
        page = client.search_experiments(page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _experiment_ids(client) -> list[str]:
    return [e.experiment_id for e in _experiments(client)]


def _newest_sweep(client, experiment_ids: list[str]):
    if not experiment_ids:
        return None
    found = client.search_runs(experiment_ids, f"tags.`{records.SWEEP}` = 'true'", max_results=1,
                               order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def _children(client, parent) -> list:
    children = _search(client, _experiment_ids(client), f"tags.`{records.PARENT}` = '{parent.info.run_id}'")
    if not children:
        raise SeqbenchError(f"run {parent.info.run_id} has no child runs; --sweep takes the id of a sweep's "
                            f"parent run (tag {records.SWEEP}=true) that has started at least one cell")
    return children


def select_runs(client, sweep_run_id: str | None = None, experiment: str | None = None) -> tuple[object, list]:
    """(sweep parent run or None, its child runs); see `write_report` for the rules."""
    from mlflow.exceptions import MlflowException

    if sweep_run_id and experiment:
        raise SeqbenchError("pass either --sweep RUN_ID or --experiment NAME, not both")
    if sweep_run_id:
        try:
            parent = client.get_run(sweep_run_id)
        except MlflowException:
            raise SeqbenchError(f"no run with id {sweep_run_id!r}; --sweep takes a sweep parent's run id "
                                f"(see the MLflow UI: `seqbench ui{store_flags(client.tracking_uri)}`)") from None
        return parent, _children(client, parent)
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in _experiments(client))
            raise SeqbenchError(f"no experiment {experiment!r}; experiments: {', '.join(names) or 'none'}")
        parent = _newest_sweep(client, [found.experiment_id])
        if parent is not None:
            return parent, _children(client, parent)
        runs = [r for r in _search(client, [found.experiment_id]) if records.PARENT not in r.data.tags]
        if not runs:
            raise SeqbenchError(f"experiment {experiment!r} has no runs")
        return None, runs
    parent = _newest_sweep(client, _experiment_ids(client))
    if parent is None:
        raise SeqbenchError(f"no sweep (a run tagged {records.SWEEP}=true) in {client.tracking_uri}; "
                            f"pass --experiment NAME to report on an experiment's runs")
    return parent, _children(client, parent)


def main_metric_of(task: str) -> str:
    """The task's headline metric (accuracy, loss, train_tokens_per_s, ...)."""
    from seqbench.core.registry import registry

    return registry("tasks").load(task).main_metric


def run_label(tags: dict[str, str], params: dict[str, str] | None = None) -> str:
    """A run's model label (sweep_plan.model_label) from its tags, or its params for older runs;
    a precision other than the default is part of it ("mamba (fp32)"), so such runs get their own row."""
    label = model_label(tags.get(records.MODEL, "?"), tags.get(records.SIZE) or (params or {}).get("size"))
    precision = (params or {}).get("precision", "auto")
    return label if precision == "auto" else f"{label} ({precision})"


def _length_status(run_status: str, tags: dict[str, str], seq_len: int) -> tuple[str, str]:
    """A finished run may still have missed this length: speed's status/<L>, the runner's
    skipped/<L> (beyond the model's positions) or eval_oom_from."""
    if run_status != "ok":
        return run_status, tags.get(records.ERROR, "")
    status, _, detail = tags.get(f"status/{seq_len}", "ok").partition(": ")
    if status != "ok":
        return status, detail
    if f"skipped/{seq_len}" in tags:
        return "skipped", tags[f"skipped/{seq_len}"]
    oom_from = tags.get(records.EVAL_OOM_FROM, "")
    if oom_from.isdigit() and int(oom_from) <= seq_len:
        return "oom", f"evaluation ran out of memory from {format_length(int(oom_from))}"
    return "ok", ""


def row_of(run, main_metric: str) -> ReportRow | None:
    """The report row of one child run; None for a run without a seq_len tag (not a sweep cell)."""
    tags, metrics = run.data.tags, run.data.metrics
    try:
        seq_len = int(tags.get(records.SEQ_LEN, ""))
    except ValueError:
        return None
    run_status = tags.get(records.STATUS) or _STATUS_OF_MLFLOW.get(run.info.status, run.info.status.lower())
    status, error = _length_status(run_status, tags, seq_len)
    memory_gb = metrics.get(f"peak_memory_gb/{seq_len}")
    return ReportRow(
        model=run_label(tags, run.data.params), seq_len=seq_len, status=status, error=error,
        main_value=metrics.get(f"{main_metric}/{seq_len}"),
        tokens_per_s=metrics.get(records.at_length(THROUGHPUT, seq_len), metrics.get(THROUGHPUT)),
        peak_memory_mb=memory_gb * 1024 if memory_gb is not None else metrics.get(records.PEAK_MEMORY_MB),
        run_id=run.info.run_id,
        at_eval_length={int(n): v for key, v in metrics.items()
                        if (n := key.removeprefix(f"{main_metric}/")).isdigit()},
        seed=int(seed) if (seed := run.data.params.get("seed", "")).isdigit() else None,
    )


def _newest_per_cell(runs: list) -> list:
    """A re-run cell keeps only its newest run (per seed: a cell of several seeds keeps one run each)."""
    newest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        key = (run_label(run.data.tags, run.data.params), run.data.tags.get(records.SEQ_LEN), run.data.params.get("seed"))
        newest[key] = run
    return list(newest.values())


def merge_seeds(rows: list[ReportRow]) -> list[ReportRow]:
    """One row per (model, length): a cell run with several seeds becomes one row whose main value,
    values at each evaluation length and throughput are the means over the seeds that finished
    (its `seeds` and `seed_values` keep each one), its peak memory the largest, and its status ok
    when every seed is (else the first other status, with the finished seeds' mean)."""
    cells: dict[tuple[str, int], list[ReportRow]] = {}
    for row in rows:
        cells.setdefault((row.model, row.seq_len), []).append(row)
    merged = []
    for group in cells.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        group = sorted(group, key=lambda r: (r.seed is None, r.seed or 0))
        done = [r for r in group if r.status == "ok" and r.main_value is not None]
        failed = [r for r in group if r.status != "ok"]
        mean = lambda values: sum(values) / len(values) if values else None
        lengths = sorted({n for r in done for n in r.at_eval_length})
        merged.append(replace(
            failed[0] if failed else group[0],
            main_value=mean([r.main_value for r in done]),
            tokens_per_s=mean([r.tokens_per_s for r in group if r.tokens_per_s]),
            peak_memory_mb=max((r.peak_memory_mb for r in group if r.peak_memory_mb is not None), default=None),
            run_id=";".join(r.run_id for r in group),
            at_eval_length={n: mean([r.at_eval_length[n] for r in done if n in r.at_eval_length]) for n in lengths},
            seed=None, seeds=tuple(r.seed for r in group),
            seed_values=tuple(r.main_value if any(r is d for d in done) else None for r in group)))
    return merged


def _ordered(rows: list[ReportRow], model_order: list[str]) -> list[ReportRow]:
    """Models in the sweep's order (then alphabetically), lengths ascending."""
    rank = {name: i for i, name in enumerate(model_order)}
    return sorted(rows, key=lambda r: (rank.get(r.model, rank.get(r.model.split(":")[0], len(rank))),
                                       r.model, r.seq_len))


def _with_last_validation(client, row: ReportRow, main_metric: str) -> ReportRow:
    """An unfinished cell keeps the last validation value its run logged while training, so a sweep
    cut short (time-out, Ctrl-C, out of device time) still shows how far each model had got."""
    if row.status == "ok":
        return row
    history = client.get_metric_history(row.run_id, f"val_{main_metric}")
    if not history:
        return row
    last = max(history, key=lambda m: m.step)
    return replace(row, last_validation=(last.step + 1, last.value))
