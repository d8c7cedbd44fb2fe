"""Sweeps: one parent run, one child process and run per (model, length), every ending recorded.

The children are real processes training tiny models on the CPU against a real SQLite store; an
out-of-memory comes from a real allocation the machine cannot make, a time-out from a real budget.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from seqbench.harness.config import RunConfig
from seqbench.core.errors import SeqbenchError
from seqbench.harness.records import LAUNCHED as LAUNCHED_TAG, SLOT as SLOT_TAG
from seqbench.harness.sweep import Sweep
from seqbench.harness.sweep.plan import parse_models, plan, sweep_hash

TINY = {"d_model": 16, "n_layers": 1}


def tiny_base(tmp_path, **overrides) -> RunConfig:
    settings = dict(task="induction-heads", steps=3, batch_size=2, eval_samples=4, model_kwargs=TINY, device="cpu",
                    tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", checkpoint_dir=str(tmp_path / "ckpt"))
    settings.update(overrides)
    return RunConfig(**settings)


def runs_by_name(uri: str) -> dict:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("induction-heads")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def test_parse_models_reads_families_and_sizes():
    assert parse_models("mamba, transformer:125m") == [("mamba", None), ("transformer", "125m")]
    with pytest.raises(SeqbenchError, match="Did you mean 'hyena'"):
        parse_models("hyenna")


def test_plan_expands_the_grid_shortest_length_first(tmp_path):
    children = plan(tiny_base(tmp_path), [("mamba", None), ("transformer", None)], [256, 64], "cpu")
    assert [(c.label, c.seq_len) for c in children] == [
        ("mamba", 64), ("transformer", 64), ("mamba", 256), ("transformer", 256)]
    assert all(c.config.eval_lengths == [c.seq_len] for c in children)  # each child evaluates at its length
    assert len({c.config_hash for c in children}) == 4
    again = plan(tiny_base(tmp_path), [("transformer", None), ("mamba", None)], [64, 256], "cpu")
    assert sweep_hash("induction-heads", children) == sweep_hash("induction-heads", again)


def test_batch_tokens_keep_the_tokens_per_step_constant(tmp_path):
    """--batch-tokens: batch = tokens // length at every length (at least one sequence), resolved
    into each child's config (so into its hash and its logged params)."""
    children = plan(tiny_base(tmp_path, batch_size=None), [("mamba", None)], [64, 256, 4096], "cpu", batch_tokens=1024)
    assert [(c.seq_len, c.config.batch_size, c.params["batch_size"]) for c in children] == [
        (64, 16, "16"), (256, 4, "4"), (4096, 1, "1")]
    with pytest.raises(SeqbenchError, match="give one"):
        plan(tiny_base(tmp_path), [("mamba", None)], [64], "cpu", batch_tokens=1024)


def test_parallel_sweep_from_the_cli_records_every_child_and_resumes(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "-m", "seqbench.harness.cli", "sweep", "induction-heads", "--model", "mamba,transformer",
               "--seq-len", "64,128", "--steps", "12", "--batch-size", "2", "--eval-samples", "4",
               "--set", "d_model=16", "--set", "n_layers=1", "--device", "cpu", "--jobs", "2", "--no-progress"]
    # The default store (./mlflow.db in the working directory), whatever the test process has set.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = runs_by_name(uri)
    parent = runs.pop("sweep-induction-heads")
    assert parent.data.tags["status"] == "ok" and parent.data.metrics["children/ok"] == 4
    assert sorted(runs) == ["mamba-128 · induction-heads", "mamba-64 · induction-heads",
                            "transformer-128 · induction-heads", "transformer-64 · induction-heads"]
    client = MlflowClient(uri)
    for name, run in runs.items():
        seq_len = int(run.data.tags["seq_len"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["status"] == "ok" and run.info.status == "FINISHED"
        assert f"accuracy/{seq_len}" in run.data.metrics and f"loss/{seq_len}" in run.data.metrics
        # Two children wrote at once into one SQLite file: every logged step arrived.
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 10, 11]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "logs")]

    # Each child knows its slot; the report's schedule shows two slots busy at once.
    assert {run.data.tags[SLOT_TAG] for run in runs.values()} == {"0", "1"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/schedule.png"}
    markdown = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))).read_text()
    assert "4 children on 2 slots" in markdown and "was each child's fixed cost" in markdown
    assert re.search(r"^\| 0 \| [1-3] \|", markdown, re.M) and re.search(r"^\| 1 \| [1-3] \|", markdown, re.M)

    again = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished before") == 4
    assert len(runs_by_name(uri)) == 5  # no new parent, no new children


def test_out_of_memory_child_is_recorded_and_longer_lengths_are_skipped(tmp_path):
    # A batch of 2^31 sequences needs a terabyte: the allocation fails for real in the child.
    base = tiny_base(tmp_path, batch_size=1 << 31)
    result = Sweep(base, [("mamba", None)], [64, 128, 256], progress=False).run()
    outcome = {c.seq_len: (c.status, c.message) for c in result.children}
    assert outcome[64][0] == "oom" and "out of memory" in outcome[64][1]
    assert outcome[128] == ("skipped", "oom at 64") and outcome[256] == ("skipped", "oom at 64")
    runs = runs_by_name(base.tracking_uri)
    assert runs["mamba-64 · induction-heads"].data.tags["status"] == "oom"
    assert runs["mamba-128 · induction-heads"].data.tags["error"] == "oom at 64"
    assert runs["sweep-induction-heads"].data.tags["status"] == "ok"  # the sweep itself went on


def test_longest_first_starts_the_longest_and_a_failure_skips_nothing_shorter(tmp_path):
    base = tiny_base(tmp_path, batch_size=1 << 31)  # out of memory at every length
    result = Sweep(base, [("mamba", None)], [64, 128], progress=False, longest_first=True).run()
    assert {c.seq_len: c.status for c in result.children} == {64: "oom", 128: "oom"}  # 64 still ran
    runs = runs_by_name(base.tracking_uri)
    launched = {n: int(runs[f"mamba-{n} · induction-heads"].data.tags[LAUNCHED_TAG]) for n in (64, 128)}
    assert launched[128] < launched[64]
    assert runs["sweep-induction-heads"].data.params["order"] == "longest-first"


def test_child_past_its_time_budget_is_a_timeout(tmp_path):
    base = tiny_base(tmp_path, steps=10**6)
    result = Sweep(base, [("mamba", None)], [64, 128], time_budget=20, progress=False).run()
    outcome = {c.seq_len: (c.status, c.message) for c in result.children}
    assert outcome[64] == ("timeout", "ran past its time budget of 20 s")
    assert outcome[128] == ("skipped", "timeout at 64")
    run = runs_by_name(base.tracking_uri)["mamba-64 · induction-heads"]
    assert run.data.tags["status"] == "timeout" and run.info.status == "FAILED"


def test_a_model_that_cannot_take_the_length_is_skipped(tmp_path):
    base = tiny_base(tmp_path, model_kwargs={**TINY, "max_len": 64})
    result = Sweep(base, [("transformer-abs", None)], [64, 128], progress=False).run()
    outcome = {c.seq_len: (c.status, c.message) for c in result.children}
    assert outcome[64][0] == "ok"
    assert outcome[128][0] == "skipped" and "at most 64 tokens" in outcome[128][1]


def test_resume_with_retry_runs_an_out_of_memory_child_again(tmp_path):
    """A resumed sweep keeps an oom child's outcome; with retry=("oom",) (`--retry oom`) it runs
    the child again in the same run (a shared GPU's other work may have caused the oom)."""
    base = tiny_base(tmp_path, batch_size=1 << 31)
    Sweep(base, [("mamba", None)], [64], progress=False).run()
    launched = lambda: runs_by_name(base.tracking_uri)["mamba-64 · induction-heads"].data.tags[LAUNCHED_TAG]
    first = launched()
    kept = Sweep(base, [("mamba", None)], [64], resume=True, progress=False).run()
    assert kept.children[0].status == "oom" and launched() == first  # not run again
    again = Sweep(base, [("mamba", None)], [64], resume=True, retry=("oom",), progress=False).run()
    assert again.children[0].status == "oom" and launched() != first  # run again, in the same run
    assert len(runs_by_name(base.tracking_uri)) == 2  # the parent and its one child
    with pytest.raises(SeqbenchError, match="--retry takes the final statuses"):
        Sweep(base, [("mamba", None)], [64], resume=True, retry=("timeout",))


def test_a_sweep_over_seeds_runs_each_cell_per_seed_and_reports_mean_and_spread(tmp_path):
    """seeds=[0, 1, 2] (`--seeds 0,1,2`): one child per (model, length, seed), each with its seed;
    the report's cell is the mean over the seeds with their spread, and report.csv keeps each one."""
    import csv
    import statistics

    from seqbench.harness.report import write_report

    base = tiny_base(tmp_path)
    result = Sweep(base, [("mamba", None)], [64, 128], progress=False, seeds=[0, 1, 2]).run()
    assert [(c.seq_len, c.config.seed) for c in result.children] == [(64, 0), (64, 1), (64, 2), (128, 0), (128, 1),
                                                                      (128, 2)]
    assert {c.status for c in result.children} == {"ok"}
    runs = [r for r in runs_by_name(base.tracking_uri).values() if r.data.tags.get("seq_len")]
    assert sorted((r.data.tags["seq_len"], r.data.params["seed"]) for r in runs) == [
        (n, s) for n in ("128", "64") for s in ("0", "1", "2")]
    report = write_report(tmp_path / "report", base.tracking_uri, sweep_run_id=result.parent_run_id)
    by_seed = {c.config.seed: c.metric for c in result.children if c.seq_len == 64}
    (cell,) = [r for r in report.rows if r.seq_len == 64]
    assert cell.seeds == (0, 1, 2) and cell.seed_values == tuple(by_seed[s] for s in (0, 1, 2))
    assert cell.main_value == pytest.approx(statistics.mean(by_seed.values()))
    assert cell.spread[0] == pytest.approx(statistics.stdev(by_seed.values()))
    rows = {r["seq_len"]: r for r in csv.DictReader((tmp_path / "report" / "report.csv").open())}
    assert rows["64"]["seeds"] == "0;1;2" and len(rows["64"]["run_id"].split(";")) == 3
    assert [float(part.split(":")[1]) for part in rows["64"]["accuracy_by_seed"].split(";")] == [
        pytest.approx(by_seed[s]) for s in (0, 1, 2)]
    assert "(3/3 seeds)" in (tmp_path / "report" / "report.md").read_text()
    parent = MlflowClient(base.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.params["seed"] == "0,1,2"


def test_more_local_children_than_gpus_are_told_they_share_them():
    from seqbench.harness.sweep.launch import shared_gpu_note

    assert shared_gpu_note(1, 1) is None and shared_gpu_note(2, 2) is None and shared_gpu_note(3, 0) is None
    note = shared_gpu_note(6, 1)
    assert note.startswith("6 children at a time on 1 GPU:") and "time-sliced" in note and note.endswith("--jobs 1 runs one per GPU")
