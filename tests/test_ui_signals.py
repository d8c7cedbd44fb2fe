"""`seqbench ui` takes its MLflow server down with it, however it is stopped: SIGTERM (a
scheduler, `kill`), SIGHUP (a closed terminal) or Ctrl-C; nothing is left listening or running."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from seqbench.harness.config import RunConfig
from seqbench.harness.runner import run
from processes import free_port, stop_group


def _answers(port: int) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                     data=json.dumps({"max_results": 1}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=5).read()
        return True
    except OSError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_seqbench_ui_stops_its_whole_server(tmp_path, sig):
    run(RunConfig(task="induction-heads", steps=1, batch_size=2, eval_lengths=[64], eval_samples=2,
                  model_kwargs={"d_model": 8, "n_layers": 1}, device="cpu",
                  tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", checkpoint_dir=str(tmp_path / "ckpt")), progress=False)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "seqbench.harness.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not _answers(port):
            assert proc.poll() is None and time.time() < deadline, "the UI never answered"
            time.sleep(1)
        os.kill(proc.pid, sig)  # this process only, not its group: seqbench must pass it on
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while (_listening(port) or _processes_mentioning(str(tmp_path))) and time.time() < deadline:
            time.sleep(0.5)
        assert not _listening(port), "the server still listens"
        assert not _processes_mentioning(str(tmp_path)), "server processes were left behind"
    finally:
        stop_group(proc, grace_s=5)


def test_a_port_out_of_range_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "ui", "--port", "99999"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--port must be in 1..65535" in proc.stderr
