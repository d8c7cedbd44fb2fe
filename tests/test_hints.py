"""The next steps the CLI prints work as printed: a stopped run names its checkpoint and the exact
command that resumes it (which does), and a sweep names its experiment and parent run and a
report command that reaches the sweep's own store."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

CLI = [sys.executable, "-m", "seqbench.harness.cli"]
TINY = ["--set", "d_model=16", "--set", "n_layers=1", "--device", "cpu", "--no-progress"]


def env() -> dict:
    values = dict(os.environ)
    values.pop("MLFLOW_TRACKING_URI", None)
    return values


def as_argv(printed: str) -> list[str]:
    """A printed `seqbench ...` command as the argv that runs it here."""
    words = shlex.split(printed)
    assert words[0] == "seqbench"
    return CLI + words[1:]


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {seconds:.0f} s")


def stop_when(proc: subprocess.Popen, predicate, what: str) -> None:
    """SIGTERM (how a scheduler stops a job; the run treats it as Ctrl-C) once `predicate` holds."""
    try:
        wait_for(lambda: predicate() or proc.poll() is not None, 180, what)
        assert proc.poll() is None, f"ended before {what}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def test_a_stopped_run_prints_its_checkpoint_and_the_command_that_resumes_it(tmp_path):
    uri = f"sqlite:///{tmp_path}/runs.db"
    argv = ["run", "induction-heads", "--seq-len", "32", "--steps", "100000", "--eval-lengths", "32",
            "--checkpoint-every", "5", "--tracking-uri", uri, *TINY]
    checkpoints = tmp_path / ".seqbench" / "checkpoints"
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen(CLI + argv, cwd=tmp_path, env=env(), stdout=out, stderr=err)
        stop_when(proc, lambda: checkpoints.is_dir() and any(checkpoints.glob("*.pt")), "checkpoint")
    assert proc.returncode == 1
    printed = (tmp_path / "out").read_text()
    assert f"open with: seqbench ui --tracking-uri {uri}" in printed
    checkpoint = Path(re.search(r"^checkpoint: (.+)$", printed, re.M).group(1))
    command = re.search(r"^continue with: (.+)$", printed, re.M).group(1)
    assert checkpoint.is_file() and checkpoint.is_absolute()
    run_id = checkpoint.stem.rsplit("-", 1)[1]
    assert MlflowClient(uri).get_run(run_id).data.tags["checkpoint"] == str(checkpoint)
    assert command.startswith("seqbench run induction-heads ") and command.endswith(" --resume")
    assert f"--tracking-uri {uri}" in command and "--set d_model=16 --set n_layers=1" in command

    # The printed command continues the same run from that checkpoint (and trains on: it checkpoints again).
    saved = checkpoint.stat().st_mtime_ns
    with open(tmp_path / "out2", "w") as out, open(tmp_path / "err2", "w") as err:
        again = subprocess.Popen(as_argv(command), cwd=tmp_path, env=env(), stdout=out, stderr=err)
        stop_when(again, lambda: "resuming from" in (tmp_path / "err2").read_text()
                  and checkpoint.stat().st_mtime_ns > saved, "resumed training")
    resumed = "".join((tmp_path / "err2").read_text().split())  # rich may wrap the path anywhere
    assert re.search(r"resumingfrom\S*" + re.escape(checkpoint.name) + r"atstep\d+", resumed), resumed
    assert re.search(r"^continue with: (.+)$", (tmp_path / "out2").read_text(), re.M).group(1) == command


def test_a_sweep_names_its_experiment_and_parent_and_a_report_command_that_works(tmp_path):
    uri = f"sqlite:///{tmp_path}/runs.db"
    argv = ["sweep", "induction-heads", "--model", "mamba", "--seq-len", "16", "--steps", "2", "--eval-samples", "8",
            "--tracking-uri", uri, "--experiment", "hints", *TINY]
    proc = subprocess.run(CLI + argv, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = re.search(r"sweep (\w+) \(parent run\) in experiment 'hints' of " + re.escape(uri), proc.stderr)
    assert started, proc.stderr[-3000:]
    parent = started.group(1)
    command = re.search(r"report: (seqbench report .+)$", proc.stdout, re.M).group(1)
    assert command == f"seqbench report --sweep {parent} --out DIR --tracking-uri {uri}"
    report = subprocess.run(as_argv(command.replace("DIR", str(tmp_path / "report"))), cwd=tmp_path, env=env(),
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "report.md").is_file()
