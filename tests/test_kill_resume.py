"""A run killed outright (SIGKILL: the OOM killer, a lost node, scancel --signal=KILL) loses at
most its last checkpoint interval: --resume continues the same MLflow run from the periodic
checkpoint to the end."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

RUN = ["run", "induction-heads", "--steps", "2000", "--batch-size", "2", "--eval-samples", "2", "--eval-lengths", "64",
       "--set", "d_model=8", "--set", "n_layers=1", "--device", "cpu", "--no-progress", "--checkpoint-every", "25"]


def _start_until_checkpoint(command: list[str], cwd: Path) -> subprocess.Popen:
    """The run started, once its first periodic checkpoint exists (it is training)."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = cwd / ".seqbench" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints.is_dir() and list(checkpoints.glob("*.pt"))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    return proc


def test_sigkill_then_resume_continues_the_same_run_from_the_periodic_checkpoint(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    command = [sys.executable, "-m", "seqbench.harness.cli", *RUN, "--tracking-uri", uri]
    proc = _start_until_checkpoint(command, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    client = MlflowClient(uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("induction-heads").experiment_id])
    assert killed.info.status == "RUNNING"  # what a SIGKILL leaves: nothing could record the ending
    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    runs = client.search_runs([killed.info.experiment_id])
    assert [r.info.run_id for r in runs] == [killed.info.run_id]  # the same run, no orphan beside it
    finished = runs[0]
    assert finished.info.status == "FINISHED" and finished.data.tags["status"] == "ok"
    steps = [m.step for m in client.get_metric_history(killed.info.run_id, "train_loss")]
    assert max(steps) == 1999 and min(steps) == 0
    assert Path(finished.data.tags["checkpoint"]).exists()


SHORT = ["run", "induction-heads", "--steps", "20", "--batch-size", "2", "--eval-samples", "2", "--eval-lengths", "64",
         "--set", "d_model=8", "--set", "n_layers=1", "--device", "cpu", "--no-progress"]


def _cli(cwd, *args):
    return subprocess.run([sys.executable, "-m", "seqbench.harness.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_resume_against_another_store_continues_there_as_a_new_run(tmp_path):
    first = _cli(tmp_path, *SHORT, "--tracking-uri", f"sqlite:///{tmp_path / 'a.db'}")
    assert first.returncode == 0, first.stderr[-2000:]
    other = _cli(tmp_path, *SHORT, "--tracking-uri", f"sqlite:///{tmp_path / 'b.db'}", "--resume")
    assert other.returncode == 0, other.stderr[-2000:]
    assert "as a new run there" in other.stderr and "Traceback" not in other.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'b.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("induction-heads").experiment_id])
    assert run.data.tags["status"] == "ok"


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    fresh = _cli(tmp_path, *SHORT, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--resume")
    assert fresh.returncode == 0 and "no checkpoint of this config" in fresh.stderr, fresh.stderr[-2000:]


def test_a_corrupt_checkpoint_is_one_line_naming_it_and_exit_2(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert _cli(tmp_path, *SHORT, "--tracking-uri", uri).returncode == 0
    (ckpt,) = (tmp_path / ".seqbench" / "checkpoints").glob("*.pt")
    for content in (b"", b"\x00garbage" * 50):
        ckpt.write_bytes(content)
        broken = _cli(tmp_path, *SHORT, "--tracking-uri", uri, "--resume")
        lines = [line for line in broken.stderr.splitlines() if line.strip()]
        assert broken.returncode == 2 and len(lines) == 1 and str(ckpt.name) in lines[0], broken.stderr[-2000:]


def test_two_runs_of_one_config_at_once_keep_a_checkpoint_each(tmp_path):
    command = [sys.executable, "-m", "seqbench.harness.cli", *SHORT, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    assert all(p.wait(timeout=600) == 0 for p in procs), [p.stderr.read()[-1500:] for p in procs]
    assert len(list((tmp_path / ".seqbench" / "checkpoints").glob("*.pt"))) == 2


def test_a_killed_run_without_a_checkpoint_is_marked_killed_on_resume(tmp_path):
    """SIGKILL before the first checkpoint: --resume says there is nothing to continue, marks the
    orphan failed ("killed") instead of leaving it RUNNING, and trains a new run."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    steps = RUN.index("--steps") + 1
    args = [*RUN[:steps], "300", *RUN[steps + 1:-2]]  # no periodic checkpoint; short enough to finish quickly
    command = [sys.executable, "-m", "seqbench.harness.cli", *args, "--tracking-uri", uri]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client, deadline = MlflowClient(uri), time.monotonic() + 300
    while True:  # kill it as soon as its run exists
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        experiment = client.get_experiment_by_name("induction-heads") if (tmp_path / "m.db").exists() else None
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert client.get_run(runs[0].info.run_id).info.status == "RUNNING"
    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "no checkpoint of this config" in resumed.stderr and "was killed" in resumed.stderr
    killed = client.get_run(runs[0].info.run_id)
    assert killed.info.status == "FAILED" and killed.data.tags["status"] == "failed"
    assert killed.data.tags["error"].startswith("killed: process")
    finished = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id != killed.info.run_id]
    assert len(finished) == 1 and finished[0].data.tags["status"] == "ok"


def test_a_stop_signalled_again_while_the_run_records_itself_still_records_it(tmp_path):
    """GNU timeout signals its command and then the command's process group (the command twice);
    people press Ctrl-C twice. A burst of SIGINTs and SIGTERMs at a training run: the first stops
    it, the repeats are ignored while it writes its checkpoint and records `interrupted`."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    command = [sys.executable, "-m", "seqbench.harness.cli", *RUN, "--steps", "1000000", "--tracking-uri", uri]
    proc = _start_until_checkpoint(command, tmp_path)
    # Repeats 1 ms apart for up to 3 s: recording the ending (a checkpoint, the store's commits)
    # takes longer than that, so repeats land inside it; 20 ms apart, a fast machine could record
    # everything between two of them and the test would not see a repeat at all.
    for i in range(3000):
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGINT if i % 2 == 0 else signal.SIGTERM)
        time.sleep(0.001)
    _, err = proc.communicate(timeout=120)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("induction-heads").experiment_id])
    assert run.data.tags["status"] == "interrupted", err[-2000:]
    assert run.info.status == "KILLED" and Path(run.data.tags["checkpoint"]).exists()
    assert "still recording how the run ended" in err
