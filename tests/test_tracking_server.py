"""A team's shared store: a real `mlflow server` (SQLite backend, proxied artifacts) on a free
loopback port, and a parallel sweep whose children log to it over HTTP."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient
from processes import free_port, stop_group


def start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, "MLFLOW_WORKERS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=(tmp_path / "server.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(proc: subprocess.Popen, url: str) -> None:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5)
            return
        except OSError:
            time.sleep(1)
    raise AssertionError("mlflow server never answered")


def test_parallel_sweep_logs_every_child_to_an_mlflow_server_over_http(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    server = start_server(tmp_path, int(url.rsplit(":", 1)[1]))
    try:
        wait_until_up(server, url)
        work = tmp_path / "work"  # not the server's folder: everything must go over HTTP
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        command = [sys.executable, "-m", "seqbench.harness.cli", "sweep", "induction-heads", "--model", "mamba,transformer",
                   "--seq-len", "64,128", "--steps", "3", "--batch-size", "2", "--eval-samples", "4",
                   "--set", "d_model=16", "--set", "n_layers=1", "--device", "cpu", "--jobs", "2",
                   "--no-progress", "--tracking-uri", url]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("induction-heads")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        parent = runs.pop("sweep-induction-heads")
        assert parent.data.tags["status"] == "ok" and parent.data.metrics["children/ok"] == 4
        assert sorted(runs) == ["mamba-128 · induction-heads", "mamba-64 · induction-heads",
                                "transformer-128 · induction-heads", "transformer-64 · induction-heads"]
        for run in runs.values():
            seq_len = run.data.tags["seq_len"]
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.data.tags["status"] == "ok" and run.info.status == "FINISHED"
            for name in (f"accuracy/{seq_len}", f"loss/{seq_len}", "train_tokens_per_s", "peak_memory_mb"):
                assert name in run.data.metrics, name
            assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 2]
            # The child's log went through the server's artifact proxy into --artifacts-destination.
            assert [a.path for a in client.list_artifacts(run.info.run_id, "logs")] == [
                f"logs/{run.data.tags['model']}-{seq_len}.log"]
        assert list((tmp_path / "artifacts").rglob("*.log"))
        assert "report" in [a.path for a in client.list_artifacts(parent.info.run_id)]
        assert not (work / "mlflow.db").exists()  # nothing fell back to the local default store
    finally:
        stop_group(server, grace_s=30, first=signal.SIGTERM)
