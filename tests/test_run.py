"""End to end: a tiny real run into a temporary SQLite store, read back with the MLflow client."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from seqbench.harness.config import RunConfig
from seqbench.harness.runner import run
from seqbench.harness.tracking import RunTracker, setup_experiment

TINY = {"d_model": 16, "n_layers": 1}


def tiny_config(tmp_path: Path, **overrides) -> RunConfig:
    settings = dict(task="induction-heads", steps=6, batch_size=4, eval_lengths=[64, 128], eval_samples=8,
                    eval_every=3, model_kwargs=dict(TINY), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                    checkpoint_dir=str(tmp_path / "ckpt"), log_every=1, device="cpu")
    settings.update(overrides)
    return RunConfig(**settings)


def loss_history(uri: str, run_id: str) -> list[float]:
    history = MlflowClient(uri).get_metric_history(run_id, "train_loss")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def test_run_logs_params_metrics_and_tags(tmp_path):
    config = tiny_config(tmp_path)
    result = run(config, progress=False)
    assert result.status == "ok" and result.steps_done == 6

    client = MlflowClient(config.tracking_uri)
    logged = client.get_run(result.run_id)
    assert logged.info.status == "FINISHED"
    tags = logged.data.tags
    assert (tags["task"], tags["modality"], tags["model"], tags["seq_len"], tags["status"]) == (
        "induction-heads", "tokens", "mamba", "256", "ok")
    params = logged.data.params
    assert params["steps"] == "6" and params["batch_size"] == "4" and params["model.d_model"] == "16"
    assert params["lr"] == "0.003" and params["schedule"] == "constant"
    assert params["device_name"] == "cpu" and params["code_version"]
    assert int(params["n_parameters"]) > 0
    metrics = logged.data.metrics
    for name in ("accuracy/64", "accuracy/128", "loss/64", "tokens_per_s/128", "peak_memory_mb",
                 "train_tokens_per_s", "val_accuracy"):
        assert name in metrics, name
    assert 0.0 <= metrics["accuracy/64"] <= 1.0
    # Where the time went: training steps, and evaluation (one in training, two lengths at the end).
    assert metrics["train_seconds"] > 0 and metrics["eval_seconds"] > 0
    assert metrics["train_seconds"] == pytest.approx(6 * 4 * 256 / metrics["train_tokens_per_s"], rel=1e-6)
    assert len(loss_history(config.tracking_uri, result.run_id)) == 6
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.name == "induction-heads"
    assert Path(tmp_path / "ckpt").glob("*.pt")


def test_same_seed_same_losses_other_seed_differs(tmp_path):
    a = run(tiny_config(tmp_path, seed=3), progress=False)
    b = run(tiny_config(tmp_path, seed=3, checkpoint_dir=str(tmp_path / "other")), progress=False)
    c = run(tiny_config(tmp_path, seed=4), progress=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert loss_history(uri, a.run_id) == loss_history(uri, b.run_id)
    assert loss_history(uri, a.run_id) != loss_history(uri, c.run_id)


def test_nan_loss_stops_the_run_as_diverged(tmp_path):
    config = tiny_config(tmp_path, lr=1e20, steps=20)
    result = run(config, progress=False)
    assert result.status == "diverged"
    assert result.steps_done < 20
    logged = MlflowClient(config.tracking_uri).get_run(result.run_id)
    assert logged.data.tags["status"] == "diverged"
    assert "loss became nan" in logged.data.tags["error"]
    assert logged.info.status == "FAILED"
    assert not any(k.startswith("accuracy/") for k in logged.data.metrics)


def test_resume_continues_from_the_checkpoint(tmp_path):
    first = run(tiny_config(tmp_path, steps=4), progress=False)
    # A longer run of the same settings is another config; resume applies to the same config.
    again = run(tiny_config(tmp_path, steps=4, resume=True), progress=False)
    assert again.run_id == first.run_id and again.steps_done == 4
    history = loss_history(f"sqlite:///{tmp_path}/mlflow.db", first.run_id)
    assert len(history) == 4  # nothing was trained twice


def test_a_reopened_run_without_its_checkpoint_is_marked_restarted(tmp_path):
    """Reopening a run that already trained, with its checkpoint gone (a sweep resumed on another
    machine), trains from step 0 into the same run and tags it `restarts`; a run created ahead of
    time that never trained is not a restart."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    fresh = RunTracker(uri, setup_experiment(uri, "induction-heads"), run_name="created-ahead")
    first = run(tiny_config(tmp_path, steps=2), progress=False, run_id=fresh.run_id)
    client = MlflowClient(uri)
    assert first.run_id == fresh.run_id and "restarts" not in client.get_run(first.run_id).data.tags
    for expected in ("1", "2"):
        for checkpoint in (tmp_path / "ckpt").iterdir():
            checkpoint.unlink()
        again = run(tiny_config(tmp_path, steps=2, resume=True), progress=False, run_id=first.run_id)
        assert again.status == "ok" and again.run_id == first.run_id
        assert client.get_run(first.run_id).data.tags["restarts"] == expected
    assert len(client.get_metric_history(first.run_id, "train_loss")) == 6  # three curves of 2 steps


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_records_interrupted_and_resume_finishes(tmp_path, stop):
    """A real SIGINT (Ctrl-C) or SIGTERM (a scheduler's limit) to `seqbench run`: status
    interrupted, metrics kept, checkpoint written; --resume then finishes the same MLflow run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, "-m", "seqbench.harness.cli", "run", "induction-heads", "--steps", "150", "--batch-size", "4",
            "--set", "d_model=16", "--set", "n_layers=1", "--eval-lengths", "64", "--eval-samples", "8",
            "--tracking-uri", uri, "--no-progress", "--device", "cpu"]
    setup_experiment(uri, "induction-heads")  # the store exists before two processes open it
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        client = None
        run_id = None
        while time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            client = client or MlflowClient(uri)
            experiment = client.get_experiment_by_name("induction-heads")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
                run_id = runs[0].info.run_id
                break
        assert run_id, "training never started"
        proc.send_signal(stop)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    logged = client.get_run(run_id)
    assert logged.data.tags["status"] == "interrupted"
    assert logged.info.status == "KILLED"
    assert logged.data.metrics["train_seconds"] > 0  # the time it trained before the stop
    steps_before = len(loss_history(uri, run_id))
    assert steps_before >= 1
    checkpoints = list((tmp_path / ".seqbench" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1

    resumed = subprocess.run(args + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    logged = MlflowClient(uri).get_run(run_id)
    assert logged.data.tags["status"] == "ok" and logged.info.status == "FINISHED"
    assert "accuracy/64" in logged.data.metrics


def test_sequence_length_warmup_doubles_the_length_and_keeps_tokens_per_step(tmp_path):
    config = tiny_config(tmp_path, seq_warmup_start=64, seq_warmup_every=2, batch_size=2, steps=6)
    resolved = config.resolve(__import__("tasks").get_task("induction-heads"), "cpu")
    assert [resolved.length_schedule(s) for s in range(6)] == [(64, 8), (64, 8), (128, 4), (128, 4), (256, 2), (256, 2)]
    assert run(config, progress=False).status == "ok"


def test_mqar_accuracy_is_sliced_by_pairs_and_length(tmp_path):
    config = tiny_config(tmp_path, task="mqar", seq_len=64, eval_lengths=[64, 128], steps=2,
                         model_kwargs={"d_model": 16, "n_layers": 1})
    result = run(config, progress=False)
    assert result.status == "ok"
    assert {"accuracy/64", "accuracy/128", "accuracy/128/kv4", "accuracy/128/kv16", "accuracy/128/kv32"} <= set(result.metrics)
    assert "accuracy/128/kv8" not in result.metrics  # kv 8 is the main slice at length 128


def test_divergence_found_at_a_later_read_back_names_the_step_it_appeared_at(tmp_path):
    """Losses are read back once per logging interval; the step a NaN appeared at is still the
    one reported (the same as with a read-back every step)."""
    every_step = run(tiny_config(tmp_path, lr=1e20, steps=20, log_every=1), progress=False)
    deferred = run(tiny_config(tmp_path, lr=1e20, steps=20, log_every=7, checkpoint_dir=str(tmp_path / "b")),
                   progress=False)
    assert every_step.status == deferred.status == "diverged"
    assert deferred.steps_done == every_step.steps_done
    assert deferred.message == every_step.message
