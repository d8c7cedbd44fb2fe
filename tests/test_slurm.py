"""Cluster sweeps through submitit: the Slurm launcher's code path, run by submitit's local
executor (real job processes on this machine), gives the same children as the local launcher."""

import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from seqbench.harness.config import RunConfig
from seqbench.core.errors import SeqbenchError
from seqbench.harness.slurm import SlurmOptions
from seqbench.harness.sweep import Sweep

pytest.importorskip("submitit")

TINY = {"d_model": 16, "n_layers": 1}
GRID = ([("mamba", None), ("transformer", None)], [64, 128])


def tiny_base(tmp_path, store: str, **overrides) -> RunConfig:
    settings = dict(task="induction-heads", steps=3, batch_size=2, eval_samples=4, model_kwargs=TINY, device="cpu",
                    tracking_uri=f"sqlite:///{tmp_path}/{store}.db", checkpoint_dir=str(tmp_path / store / "ckpt"))
    settings.update(overrides)
    return RunConfig(**settings)


def children(uri: str) -> dict:
    """Child run name -> (status, metric names, final train loss, log artifacts)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("induction-heads")
    found = {}
    for run in client.search_runs([experiment.experiment_id], "tags.mlflow.parentRunId != ''"):
        logs = [a.path for a in client.list_artifacts(run.info.run_id, "logs")]
        found[run.info.run_name] = (run.data.tags["status"], sorted(run.data.metrics), run.data.metrics["train_loss"],
                                    logs)
    return found


def test_submitit_sweep_gives_the_same_children_as_the_local_launcher(tmp_path):
    local = Sweep(tiny_base(tmp_path, "local"), *GRID, jobs=2, progress=False).run()
    submitted = Sweep(tiny_base(tmp_path, "submitit"), *GRID, launcher="local-submitit", progress=False).run()
    assert local.status == submitted.status == "ok"

    by_local, by_submitit = children(tiny_base(tmp_path, "local").tracking_uri), \
        children(tiny_base(tmp_path, "submitit").tracking_uri)
    assert sorted(by_submitit) == sorted(by_local) == [
        "mamba-128 · induction-heads", "mamba-64 · induction-heads",
        "transformer-128 · induction-heads", "transformer-64 · induction-heads"]
    for name, (status, metrics, loss, logs) in by_submitit.items():
        local_status, local_metrics, local_loss, _ = by_local[name]
        assert (status, metrics) == (local_status, local_metrics) == ("ok", local_metrics)
        assert loss == pytest.approx(local_loss, rel=1e-4)  # the same training ran
        assert any(path.endswith("_log.err") for path in logs)  # the job's own log, as an artifact
    # The jobs' logs and submission files live under the sweep's folder.
    jobs = list((tmp_path / "submitit" / "sweeps" / submitted.parent_run_id / "slurm").glob("*_log.err"))
    assert len(jobs) == 4


def test_a_submitit_job_past_its_time_budget_is_cancelled_as_a_timeout(tmp_path):
    base = tiny_base(tmp_path, "timeout", steps=10**6)
    result = Sweep(base, [("mamba", None)], [64], time_budget=15, launcher="local-submitit", progress=False).run()
    assert [(c.status, c.message) for c in result.children] == [("timeout", "ran past its time budget of 15 s")]
    run = MlflowClient(base.tracking_uri).search_runs(
        [MlflowClient(base.tracking_uri).get_experiment_by_name("induction-heads").experiment_id],
        "attributes.run_name = 'mamba-64 · induction-heads'")[0]
    assert run.data.tags["status"] == "timeout" and run.info.status == "FAILED"


def test_slurm_flags_map_to_submitit_parameters():
    assert SlurmOptions(partition="gpu", gpus_per_job=1, max_parallel=4, time_minutes=120).executor_parameters() == {
        "name": "seqbench-sweep", "slurm_partition": "gpu", "gpus_per_node": 1, "slurm_array_parallelism": 4,
        "timeout_min": 120}
    assert SlurmOptions().executor_parameters() == {"name": "seqbench-sweep", "timeout_min": 60}
    with pytest.raises(SeqbenchError, match="--max-parallel must be >= 1, got 0"):
        SlurmOptions(max_parallel=0).executor_parameters()


@pytest.mark.parametrize("args, message", [
    (["--launcher", "slurm", "--jobs", "2"], "--jobs is for --launcher local"),
    (["--partition", "gpu"], "are for --launcher slurm"),
    (["--launcher", "sge"], "--launcher must be local or slurm, got 'sge'"),
])
def test_bad_launcher_flags_exit_2_with_one_line(tmp_path, args, message):
    command = [sys.executable, "-m", "seqbench.harness.cli", "sweep", "induction-heads", "--seq-len", "64", "--device", "cpu",
               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *args]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has Slurm")
def test_slurm_launcher_without_slurm_says_so(tmp_path):
    base = tiny_base(tmp_path, "none")
    with pytest.raises(SeqbenchError, match="needs Slurm"):
        Sweep(base, [("mamba", None)], [64], launcher="slurm", progress=False)
