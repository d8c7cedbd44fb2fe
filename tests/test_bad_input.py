"""Bad input, table-driven: each case exits 2 with one line on stderr (no traceback) and leaves
no run, checkpoint, token-cache entry or output file behind."""

import os
import sqlite3
import subprocess
import sys
import time
import wave

import pytest

BASE = ["run", "induction-heads", "--steps", "2", "--eval-samples", "2", "--eval-lengths", "64", "--device", "cpu",
        "--no-progress"]
# Cases whose command is not a variation of BASE give their whole command line.
SPEED = ["run", "speed", "--eval-lengths", "64", "--device", "cpu", "--no-progress"]
SWEEP = ["sweep", "induction-heads", "--model", "mamba", "--seq-len", "64", "--steps", "2", "--device", "cpu",
         "--no-progress"]
AUDIO_LM = ["run", "lm", "--modality", "audio", "--data", "empty.wav", "--seq-len", "64", "--steps", "2",
            "--device", "cpu", "--no-progress"]

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
    "unknown task setting": (["--task-set", "bogus=1"], "task 'induction-heads' has no setting 'bogus'; accepted: vocab"),
    "text for an integer task setting": (["--task-set", "vocab=abc"], "--task-set vocab takes an integer, got 'abc'"),
    "text in a task's list of integers": (SPEED + ["--task-set", "gen_batches=a,b"],
                                          "--task-set gen_batches takes comma-separated integers, got 'a,b'"),
    "training length beyond 2^40": (["--seq-len", "2^99"], "length 2^99 is beyond what this machine can address; "
                                                           "lengths up to 2^40"),
    "evaluation length beyond 2^40": (["--eval-lengths", "64,2^99"], "length 2^99 is beyond what this machine"),
    "tokens beyond int64 indexing": (["--seq-len", "2^40", "--batch-size", "8388608"], "int64 indexing"),
    "a WAV file without samples": (AUDIO_LM, "audio file empty.wav holds no samples"),
    "a report folder that is a file": (["report", "--out", "notes.txt"], "--out notes.txt: notes.txt is a file"),
    "a tracking server that does not answer": (["--tracking-uri", "http://127.0.0.1:9"],
                                               "no MLflow server answers at http://127.0.0.1:9"),
    "seeds that are not integers": (SWEEP + ["--seeds", "a,b"], "--seeds takes comma-separated non-negative integers"),
    "--retry without --resume": (SWEEP + ["--retry", "oom"], "--retry is for --resume"),
    "--output-json into a missing folder": (["--output-json", "nowhere/run.json"], "folder nowhere does not exist"),
}
# The server case used to retry silently for minutes: it has to fail fast.
SECONDS = {"a tracking server that does not answer": 60}


def write_inputs(folder):
    """The files some cases point at: a WAV with a header and no samples, a plain file."""
    with wave.open(str(folder / "empty.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    (folder / "notes.txt").write_text("not a folder\n")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, case):
    extra, expected = CASES[case]
    argv = extra if extra[0] in ("run", "sweep", "report") else BASE + extra
    write_inputs(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {**os.environ, "SEQBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert seconds < SECONDS.get(case, 300), f"took {seconds:.0f} s"
    assert not (tmp_path / ".seqbench" / "checkpoints").exists()
    assert not (tmp_path / "cache").exists() or not [p for p in (tmp_path / "cache").iterdir()]
    db = tmp_path / "mlflow.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from runs").fetchone()[0] == 0
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("mlflow.db", "mlflow.db.lock", "cache"))
    assert left == before  # no output file, report folder or half-written file
