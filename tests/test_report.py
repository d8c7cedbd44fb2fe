"""`seqbench.harness.report`: a sweep in a real SQLite MLflow store becomes report.md, report.csv and PNG plots,
logged back to the sweep's parent run; the scaling-exponent fit on synthetic data."""

import csv
import json
import math

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from seqbench.harness.config import RunConfig
from seqbench.core.errors import SeqbenchError
from seqbench.harness.report import FILES, JSON_FILE, fit_exponent, format_number, metric_key, render_console_table, write_report
from seqbench.harness.runner import run
from seqbench.harness.tracking import RunTracker, setup_experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = [name for name in FILES if name.endswith(".png")]


def sweep_parent(client: MlflowClient, experiment_id: str, models: str, lengths: str, start_time: int | None = None,
                 task: str = "induction-heads") -> str:
    tags = {"seqbench.sweep": "true", "task": task, "models": models, "lengths": lengths}
    return client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=f"sweep-{task}").info.run_id


def cell(client: MlflowClient, experiment_id: str, model: str, seq_len: int, accuracy: float, start_time: int,
         parent: str | None = None) -> str:
    """A finished cell without training: the tags and metrics a real run logs."""
    tags = {"task": "induction-heads", "model": model, "seq_len": str(seq_len), "status": "ok"}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run_id = client.create_run(experiment_id, start_time=start_time, tags=tags).info.run_id
    client.log_metric(run_id, f"accuracy/{seq_len}", accuracy)
    client.log_metric(run_id, "train_tokens_per_s", 1e6 / seq_len)
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    """mamba and transformer trained for 2 steps at 64 and 128, and a skipped transformer cell at 256."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp}/mlflow.db"
    experiment_id = setup_experiment(uri, "induction-heads")
    client = MlflowClient(uri)
    parent = sweep_parent(client, experiment_id, "mamba,transformer", "64,128,256")
    for model in ("mamba", "transformer"):
        for seq_len in (64, 128):
            result = run(RunConfig(task="induction-heads", model=model, seq_len=seq_len, steps=2, batch_size=2,
                                   eval_lengths=[seq_len], eval_samples=4, model_kwargs={"d_model": 16, "n_layers": 1},
                                   device="cpu", tracking_uri=uri, checkpoint_dir=str(tmp / "ckpt")),
                         progress=False, parent_run_id=parent)
            assert result.status == "ok"
    skipped = RunTracker(uri, experiment_id, run_name="induction-heads-transformer-256", parent_run_id=parent,
                         tags={"task": "induction-heads", "modality": "tokens", "model": "transformer",
                               "seq_len": "256", "status": "skipped"})
    skipped.set_tags({"error": "oom at 128"})
    skipped.finish("skipped")
    return uri, parent, tmp


def test_report_of_a_real_sweep(real_sweep):
    uri, parent, tmp = real_sweep
    out = tmp / "report"
    report = write_report(out, tracking_uri=uri, sweep_run_id=parent)

    assert report.parent_run_id == parent and report.task == "induction-heads" and report.main_metric == "accuracy"
    assert report.models == ["mamba", "transformer"] and report.lengths == [64, 128, 256]
    assert sorted(p.name for p in report.paths) == sorted(FILES)

    markdown = (out / "report.md").read_text()
    pivot = [line for line in markdown.splitlines() if line.startswith(("| mamba |", "| transformer |"))]
    mamba, transformer = pivot[0].split("|")[2:-1], pivot[1].split("|")[2:-1]
    assert all(c.strip().endswith("%") for c in mamba[:2]) and mamba[2].strip() == ""  # 256 never ran
    assert all(c.strip().endswith("%") for c in transformer[:2])
    assert transformer[2].strip() == "skipped (oom at 128)"
    assert "| 64 | 128 | 256 |" in markdown
    # In-process CPU runs report the test process's peak resident set: MB alone, GB in a long session.
    assert "peak memory (MB)" in markdown or "peak memory (GB)" in markdown
    assert "](time_per_token_vs_length.png)" in markdown

    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    assert {(r["model"], r["seq_len"], r["status"]) for r in rows} >= {("transformer", "256", "skipped"),
                                                                        ("mamba", "64", "ok")}
    assert all(0 <= float(r["accuracy"]) <= 1 and float(r["tokens_per_s"]) > 0 for r in rows if r["status"] == "ok")

    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert not list(out.glob(".*.tmp"))

    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {f"report/{name}" for name in FILES} <= logged
    assert set(report.exponents) == {"mamba", "transformer"}  # two finished lengths each
    assert report.exponents["mamba"].lengths == (64, 128)
    metrics = client.get_run(parent).data.metrics
    assert metrics["time_exponent/mamba"] == pytest.approx(report.exponents["mamba"].exponent)

    console = Console(record=True, width=120)
    console.print(render_console_table(report))
    assert "skipped (oom at 128)" in console.export_text()


def test_report_json_holds_the_csv_numbers_and_marks_two_point_fits(real_sweep):
    uri, parent, tmp = real_sweep
    both = tmp / "both"
    report = write_report(both, tracking_uri=uri, sweep_run_id=parent, log_to_parent=False,
                          formats=("csv", "json"))
    assert sorted(p.name for p in report.paths) == ["report.csv", JSON_FILE]  # only what was asked for
    document = json.loads((both / JSON_FILE).read_text())
    with (both / "report.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert document["task"] == "induction-heads" and document["main_metric"] == "accuracy"
    assert document["lengths"] == [64, 128, 256] and len(document["rows"]) == len(csv_rows) == 5
    for row, csv_row in zip(document["rows"], csv_rows):
        assert set(row) == set(csv_row)
        for key, text in csv_row.items():
            value = row[key]
            if value is None:
                assert text == "", key
            elif isinstance(value, (int, float)):
                assert float(text) == value, key  # the same number, not a rounded one
            else:
                assert text == value, key
    mamba = document["exponents"]["mamba"]
    assert mamba["lengths"] == [64, 128] and mamba["points"] == 2 and mamba["few_points"] is True
    assert mamba["exponent"] == pytest.approx(report.exponents["mamba"].exponent)

    # Two finished lengths: the exponent is a line through two points, and the report says so.
    markdown = write_report(tmp / "md", tracking_uri=uri, sweep_run_id=parent, log_to_parent=False,
                            formats=("md",))
    text = (tmp / "md" / "report.md").read_text()
    assert f"| mamba | L^{markdown.exponents['mamba'].exponent:.2f} (2 points) | 64, 128 |" in text
    console = Console(record=True, width=160)
    console.print(render_console_table(markdown))
    assert "(2 points)" in console.export_text()


def test_report_cli_writes_json_and_refuses_a_file_as_folder(real_sweep):
    from typer.testing import CliRunner

    from seqbench.harness.cli import app

    uri, parent, tmp = real_sweep
    result = CliRunner().invoke(app, ["report", "--sweep", parent, "--out", str(tmp / "cli"), "--tracking-uri", uri,
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp / "cli").iterdir()] == [JSON_FILE]
    assert len(json.loads((tmp / "cli" / JSON_FILE).read_text())["rows"]) == 5
    (tmp / "a-file").write_text("x")
    for args, message in ((["--out", str(tmp / "a-file")], "is a file, not a folder"),
                          (["--out", str(tmp / "x"), "--format", "json,pdf"], "--format takes comma-separated md, csv, png, json")):
        result = CliRunner().invoke(app, ["report", "--sweep", parent, "--tracking-uri", uri, *args])
        assert result.exit_code == 2 and message in result.stderr, result.output
    assert (tmp / "a-file").read_text() == "x" and not (tmp / "x").exists()


def test_fit_exponent_recovers_known_exponents():
    lengths = [256, 1024, 4096, 16384, 65536]
    assert fit_exponent(lengths, [1e-9 * n for n in lengths]) == pytest.approx(2.0)  # attention-like
    assert fit_exponent(lengths, [3e-7] * len(lengths)) == pytest.approx(1.0)  # linear-time
    # only the upper half counts: a short-length overhead does not bend the fit
    assert fit_exponent(lengths, [1e-3, 1e-3, 3e-7, 3e-7, 3e-7]) == pytest.approx(1.0)
    assert fit_exponent([1024], [1e-6]) is None
    assert fit_exponent([1024, 2048], [1e-6, None]) is None
    assert math.isclose(fit_exponent([256, 512], [1.0, 2 ** 0.5]), 1.5)


def test_experiment_and_default_pick_the_newest_sweep(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    ids = {name: setup_experiment(uri, name) for name in ("a", "b")}
    old = sweep_parent(client, ids["a"], "mamba", "64", start_time=1_000)
    cell(client, ids["a"], "mamba", 64, 0.25, 1_001, parent=old)
    new = sweep_parent(client, ids["a"], "mamba", "64", start_time=2_000)
    cell(client, ids["a"], "mamba", 64, 0.75, 2_001, parent=new)
    other = sweep_parent(client, ids["b"], "hyena", "64", start_time=500)
    cell(client, ids["b"], "hyena", 64, 0.5, 501, parent=other)

    report = write_report(tmp_path / "a", tracking_uri=uri, experiment="a", log_to_parent=False)
    assert report.parent_run_id == new and report.rows[0].main_value == 0.75
    assert "75.0%" in (tmp_path / "a" / "report.md").read_text()
    assert client.list_artifacts(new) == []  # log_to_parent=False
    assert write_report(tmp_path / "b", tracking_uri=uri, experiment="b", log_to_parent=False).parent_run_id == other
    assert write_report(tmp_path / "any", tracking_uri=uri, log_to_parent=False).parent_run_id == new


def test_experiment_without_sweep_keeps_the_newest_run_per_cell(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = setup_experiment(uri, "loose")
    cell(client, experiment_id, "mamba", 64, 0.1, 1_000)
    cell(client, experiment_id, "mamba", 64, 0.9, 2_000)
    cell(client, experiment_id, "mamba", 128, 0.5, 1_500)
    report = write_report(tmp_path / "out", tracking_uri=uri, experiment="loose")
    assert report.parent_run_id is None
    assert [(r.seq_len, r.main_value) for r in report.rows] == [(64, 0.9), (128, 0.5)]
    assert report.exponents["mamba"].exponent == pytest.approx(2.0)  # tokens/s ∝ 1/L in `cell`


def test_bad_selection_is_a_user_error(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(SeqbenchError, match="no tracking store"):
        write_report(tmp_path / "out", tracking_uri=uri)
    setup_experiment(uri, "induction-heads")
    with pytest.raises(SeqbenchError, match="no run with id"):
        write_report(tmp_path / "out", tracking_uri=uri, sweep_run_id="0123456789abcdef")
    with pytest.raises(SeqbenchError, match="no experiment 'nope'; experiments: .*induction-heads"):
        write_report(tmp_path / "out", tracking_uri=uri, experiment="nope")
    with pytest.raises(SeqbenchError, match="not both"):
        write_report(tmp_path / "out", tracking_uri=uri, sweep_run_id="0123456789abcdef", experiment="nope")
    with pytest.raises(SeqbenchError, match="no sweep"):
        write_report(tmp_path / "out", tracking_uri=uri)
    assert not (tmp_path / "out").exists()


def test_formatting_helpers():
    assert [format_number(v) for v in (0.012345, 2.3456, 123456.0, None)] == ["0.0123", "2.35", "123,000", "—"]
    assert metric_key("mamba:130m") == "mamba_130m" and metric_key("transformer++") == "transformer__"


def test_runs_evaluated_beyond_their_length_get_a_table_per_evaluation_length(tmp_path):
    """Table 11's shape: trained at one length, accuracy at every evaluation length."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = setup_experiment(uri, "induction-heads")
    client = MlflowClient(uri)
    parent = sweep_parent(client, experiment_id, "mamba", "64")
    run_id = cell(client, experiment_id, "mamba", 64, 1.0, start_time=1, parent=parent)
    client.log_metric(run_id, "accuracy/256", 0.25)
    report = write_report(tmp_path / "out", uri, sweep_run_id=parent)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert report.rows[0].at_eval_length == {64: 1.0, 256: 0.25}
    assert "## accuracy at every evaluation length" in markdown
    assert "| mamba | 64 | ok | 100.0% | 25.0% |" in markdown


def test_an_unfinished_cell_shows_its_last_validation(tmp_path):
    """A cell stopped mid-training (interrupted, timeout) reports how far it had got: the last
    in-training validation of the main metric, at the step after which it was measured."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = setup_experiment(uri, "induction-heads")
    client = MlflowClient(uri)
    parent = sweep_parent(client, experiment_id, "mamba,hyena", "64")
    cell(client, experiment_id, "mamba", 64, 1.0, start_time=1, parent=parent)
    stopped = client.create_run(experiment_id, start_time=2, tags={
        "task": "induction-heads", "model": "hyena", "seq_len": "64", "status": "interrupted",
        "mlflow.parentRunId": parent}).info.run_id
    for step, value in ((999, 0.25), (1999, 0.5)):
        client.log_metric(stopped, "val_accuracy", value, step=step)
    client.set_terminated(stopped, "KILLED")

    report = write_report(tmp_path / "out", uri, sweep_run_id=parent, log_to_parent=False)
    hyena = next(r for r in report.rows if r.model == "hyena")
    assert hyena.last_validation == (2000, 0.5)
    assert next(r for r in report.rows if r.model == "mamba").last_validation is None
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| hyena | interrupted (val 50.0% at step 2,000) |" in markdown
    with (tmp_path / "out" / "report.csv").open() as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert (rows["hyena"]["last_val_step"], rows["hyena"]["last_val_accuracy"]) == ("2000", "0.5")
    assert rows["mamba"]["last_val_step"] == ""


def test_runs_evaluated_beyond_their_length_get_a_column_and_a_plot_per_length(tmp_path):
    """An experiment's runs trained at one length and tested at several (Table 11): report.csv
    gains accuracy/<L> per evaluation length, the plot of accuracy against evaluation length is
    written, and a run at another precision is its own row."""
    import csv

    from seqbench.harness.config import RunConfig
    from seqbench.harness.report import write_report
    from seqbench.harness.runner import run

    uri = f"sqlite:///{tmp_path}/m.db"
    for precision in ("auto", "fp32"):
        result = run(RunConfig(task="induction-heads", seq_len=32, steps=2, batch_size=2, eval_lengths=[32, 64],
                               eval_samples=4, model_kwargs={"d_model": 16, "n_layers": 1}, device="cpu",
                               precision=precision, experiment="t11", tracking_uri=uri,
                               checkpoint_dir=str(tmp_path / precision)), progress=False)
        assert result.status == "ok"
    report = write_report(tmp_path / "out", tracking_uri=uri, experiment="t11", log_to_parent=False,
                          formats=("md", "csv", "png"))
    assert report.models == ["mamba", "mamba (fp32)"]
    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert {"accuracy/32", "accuracy/64"} <= set(rows[0])
    assert all(0.0 <= float(row["accuracy/64"]) <= 1.0 for row in rows)
    assert (tmp_path / "out" / "metric_vs_eval_length.png").stat().st_size > 10_000
    assert "metric_vs_eval_length.png" in (tmp_path / "out" / "report.md").read_text()
