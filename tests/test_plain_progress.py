"""Without a terminal (Slurm and CI logs, `| tee`) training prints plain progress lines as it
goes, instead of a live bar that would appear once, at the end."""

import os
import subprocess
import sys


def test_piped_training_prints_progress_lines_while_it_trains(tmp_path):
    env = {**os.environ, "SEQBENCH_PROGRESS_SECONDS": "0"}
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "run", "induction-heads", "--steps", "5",
                           "--batch-size", "2", "--eval-samples", "2", "--eval-lengths", "64", "--set", "d_model=8",
                           "--set", "n_layers=1", "--device", "cpu", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train step ")]
    assert [line.split()[2] for line in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert all("loss" in line and "tokens/s" in line and "eta" in line for line in lines)


def test_a_piped_sweep_prints_progress_lines_while_its_children_run(tmp_path):
    env = {**os.environ, "SEQBENCH_PROGRESS_SECONDS": "1"}
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "sweep", "induction-heads", "--model", "mamba",
                           "--seq-len", "32,64", "--steps", "3", "--batch-size", "2", "--eval-samples", "2",
                           "--set", "d_model=8", "--set", "n_layers=1", "--device", "cpu", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sweep ") and "children done" in line]
    assert lines, proc.stderr[-2000:]
    assert lines[0].startswith("sweep 0/2 children done, running: mamba 32 (")
    assert all("s elapsed" in line for line in lines)
