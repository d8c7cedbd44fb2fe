"""Bad input, table-driven: each case exits 2 with one line on stderr (no traceback) and leaves
no run, checkpoint or store behind."""

import sqlite3
import subprocess
import sys

import pytest

BASE = ["run", "induction-heads", "--steps", "2", "--eval-samples", "2", "--eval-lengths", "64", "--device", "cpu",
        "--no-progress"]

CASES = {
    "unknown model setting": (["--set", "bogus=1"], "no setting 'bogus'; accepted: d_model"),
    "text for an integer setting": (["--set", "d_model=abc"], "takes an integer"),
    "zero width": (["--set", "d_model=0"], "must be >= 1"),
    "negative layer count": (["--set", "n_layers=-1"], "must be >= 1"),
    "zero batch": (["--batch-size", "0"], "--batch-size must be > 0"),
    "zero steps": (["--steps", "0"], "--steps must be > 0"),
    "in-memory store": (["--tracking-uri", "sqlite://"], "in-memory store"),
    "unknown store scheme": (["--tracking-uri", "notascheme://x"], "no store MLflow can keep runs in"),
    "data for a generated task": (["--data", "corpus.txt"], "takes no --data"),
    "negative checkpoint interval": (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, case):
    extra, expected = CASES[case]
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", *BASE, *extra], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / ".seqbench" / "checkpoints").exists()
    db = tmp_path / "mlflow.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from runs").fetchone()[0] == 0
