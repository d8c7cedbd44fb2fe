"""`seqbench run --output-json PATH`: a real tiny CPU run writes one JSON document whose numbers are
the ones MLflow holds, grouped by metric name and then length."""

import json

import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from seqbench import __version__
from seqbench.harness.cli import app
from seqbench.harness.results import metrics_by_length

TINY_RUN = ["run", "induction-heads", "--seq-len", "16", "--steps", "2", "--eval-lengths", "16,32",
            "--set", "d_model=16", "--set", "n_layers=1", "--eval-samples", "8", "--device", "cpu", "--no-progress"]


def test_metrics_are_grouped_by_name_then_length():
    grouped = metrics_by_length({"accuracy/64": 1.0, "accuracy/1024": 0.5, "accuracy/64/kv8": 0.25,
                                 "train_loss": 0.1, "gen_tokens_per_s/b8": 900.0, "loss/64": float("nan")})
    assert grouped == {"accuracy": {"64": 1.0, "1024": 0.5}, "accuracy/kv8": {"64": 0.25}, "train_loss": 0.1,
                       "gen_tokens_per_s/b8": 900.0, "loss": {"64": None}}
    assert list(grouped["accuracy"]) == ["64", "1024"]  # lengths ascending
    # the runner's suffix-free copy of the training length's evaluation is not repeated
    copies = {"accuracy/64": 1.0, "accuracy/128": 0.5, "accuracy": 0.5, "loss/128": 0.2, "loss": 0.3}
    assert metrics_by_length(copies, training_length=128) == {"accuracy": {"64": 1.0, "128": 0.5},
                                                              "loss": {"128": 0.2}, "loss/unsuffixed": 0.3}


def test_a_tiny_run_writes_its_document(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/runs.db"
    result = CliRunner().invoke(app, [*TINY_RUN, "--tracking-uri", uri, "--output-json", "out/run.json"])
    assert result.exit_code == 2 and "folder out does not exist" in result.stderr  # checked before the run
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, [*TINY_RUN, "--tracking-uri", uri, "--output-json", "out/run.json"])
    assert result.exit_code == 0, result.output
    assert f"open with: seqbench ui --tracking-uri {uri}" in result.stdout  # the hint reaches this store

    document = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["run.json"]  # no temporary file left
    logged = MlflowClient(uri).get_run(document["run_id"])
    assert document["status"] == "ok" and document["steps_done"] == 2 and document["message"] == ""
    assert document["tracking_uri"] == uri and document["experiment"] == "induction-heads"
    config = document["config"]
    assert (config["task"], config["model"], config["seq_len"], config["eval_lengths"]) == (
        "induction-heads", "mamba", 16, [16, 32])
    assert config["model_kwargs"] == {"d_model": 16, "n_layers": 1} and config["batch_size"] == 16
    assert config["config_hash"] == logged.data.tags["config_hash"]
    assert document["versions"]["seqbench"] == __version__ and document["versions"]["torch"] == torch.__version__
    assert document["versions"]["code"] == logged.data.params["code_version"]
    assert document["device"] == "cpu" and document["dtype"] == logged.data.params["dtype"]

    metrics = document["metrics"]
    assert set(metrics["accuracy"]) == set(metrics["loss"]) == {"16", "32"}
    assert not [name for name in metrics if name.endswith("/unsuffixed")]  # copies of the length-16 values
    for name in ("accuracy", "loss", "tokens_per_s"):
        for length, value in metrics[name].items():
            assert value == logged.data.metrics[f"{name}/{length}"]
    for name in ("train_loss", "train_tokens_per_s", "peak_memory_mb", "train_seconds"):
        assert metrics[name] == logged.data.metrics[name], name
