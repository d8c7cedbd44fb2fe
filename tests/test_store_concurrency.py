"""A new SQLite store opened by several runs at once: every run succeeds and the store is whole
(MLflow's own schema set-up races without the store lock). A store broken by an interrupted
migration, a directory or a non-database file: one line and exit code 2."""

import sqlite3
import subprocess
import sys

import pytest

from seqbench.core.errors import SeqbenchError
from seqbench.harness.tracking import setup_experiment

TINY = ["induction-heads", "--steps", "2", "--batch-size", "2", "--eval-samples", "2", "--eval-lengths", "64",
        "--set", "d_model=8", "--set", "n_layers=1", "--device", "cpu", "--no-progress"]


def test_six_runs_started_together_into_a_fresh_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [subprocess.Popen([sys.executable, "-m", "seqbench.harness.cli", "run", *TINY, "--seed", str(seed),
                               "--tracking-uri", uri], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed in range(6)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), [err[-1500:] for code, err in results if code != 0]
    with sqlite3.connect(tmp_path / "fresh.db") as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        runs = conn.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    assert not any(t.startswith("_alembic_tmp_") for t in tables)
    assert runs == 6


def test_a_half_migrated_store_is_one_line(tmp_path):
    db = tmp_path / "broken.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table _alembic_tmp_runs (x int)")
    with pytest.raises(SeqbenchError, match="half-upgraded.*_alembic_tmp_runs"):
        setup_experiment(f"sqlite:///{db}", "e")


@pytest.mark.parametrize("kind", ["directory", "not-a-database"])
def test_a_store_path_that_is_no_database_exits_2_with_one_line(tmp_path, kind):
    target = tmp_path / "store.db"
    if kind == "directory":
        target.mkdir()
    else:
        target.write_bytes(b"this is not sqlite" * 100)
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "run", *TINY, "--tracking-uri",
                           f"sqlite:///{target}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "tracking store" in lines[0], proc.stderr[-2000:]
