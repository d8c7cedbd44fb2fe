"""`seqbench ui` serves the MLflow UI on the runs' store, on loopback, and shows the runs."""

import json
import subprocess
import sys
import time
import urllib.request

from seqbench.harness.config import RunConfig
from seqbench.harness.runner import run
from processes import free_port, stop_group


def test_ui_serves_the_store_of_the_runs(tmp_path):
    result = run(RunConfig(task="induction-heads", steps=2, batch_size=2, eval_lengths=[64], eval_samples=4,
                           model_kwargs={"d_model": 16, "n_layers": 1}, device="cpu",
                           tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", checkpoint_dir=str(tmp_path / "ckpt")),
                 progress=False)
    port = free_port()
    log = tmp_path / "ui.log"
    proc = subprocess.Popen([sys.executable, "-m", "seqbench.harness.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = None
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
                    data=json.dumps({"experiment_ids": ["1"]}).encode(), headers={"Content-Type": "application/json"})
                body = json.loads(urllib.request.urlopen(request, timeout=5).read())
                break
            except OSError:
                time.sleep(1)
        assert body is not None, "the UI never answered"
        assert [r["info"]["run_id"] for r in body["runs"]] == [result.run_id]
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<html" in page.lower()
    finally:  # Ctrl-C reaches the whole process group in a terminal; do the same
        stop_group(proc, grace_s=30)
    assert f"http://127.0.0.1:{port}" in log.read_text()
