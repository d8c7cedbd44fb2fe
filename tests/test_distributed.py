"""Data-parallel runs: two gloo ranks under torchrun train exactly like one process with the
doubled batch, and only rank 0 talks to MLflow. The ranks are real processes started by
`seqbench run --nproc 2` (which execs torchrun), each against its own SQLite store."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from seqbench.harness import distributed
from seqbench.harness.tracking import setup_experiment
from processes import stop_group
from seqbench.harness.config import RunConfig
from seqbench.tasks.base import Batch

TINY_RUN = ["induction-heads", "--steps", "12", "--eval-samples", "4", "--eval-lengths", "64", "--set", "d_model=16",
            "--set", "n_layers=1", "--device", "cpu", "--no-progress"]


def clean_env() -> dict[str, str]:
    """One thread per rank (2 cores), and no store or torchrun variables leaking in from this process."""
    drop = ("MLFLOW_TRACKING_URI", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def seqbench_run(tmp_path, store: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seqbench.harness.cli", "run", *TINY_RUN, "--tracking-uri",
               f"sqlite:///{tmp_path}/{store}.db", *extra]
    return subprocess.run(command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)


def only_run(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("induction-heads")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def loss_curve(client: MlflowClient, run) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, "train_loss"),
                                              key=lambda m: m.step)]


def test_two_gloo_ranks_match_one_process_with_the_doubled_batch(tmp_path):
    ddp = seqbench_run(tmp_path, "ddp", "--nproc", "2", "--batch-size", "2")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = seqbench_run(tmp_path, "single", "--batch-size", "4")
    assert single.returncode == 0, single.stderr[-3000:]

    ddp_client, ddp_run = only_run(f"sqlite:///{tmp_path}/ddp.db")  # rank 1 created no run
    single_client, single_run = only_run(f"sqlite:///{tmp_path}/single.db")
    ddp_curve, single_curve = loss_curve(ddp_client, ddp_run), loss_curve(single_client, single_run)
    assert [s for s, _ in ddp_curve] == [s for s, _ in single_curve] == [0, 10, 11]
    assert [v for _, v in ddp_curve] == pytest.approx([v for _, v in single_curve], rel=1e-4)
    assert ddp_curve[0][1] != ddp_curve[-1][1]  # it trained: the comparison is not of constants

    params = ddp_run.data.params
    assert (params["world_size"], params["batch_size"], params["global_batch_size"]) == ("2", "2", "4")
    assert single_run.data.params["world_size"] == "1" and "global_batch_size" not in single_run.data.params
    assert ddp_run.data.tags["status"] == "ok" and "accuracy/64" in ddp_run.data.metrics
    assert ddp.stdout.count("MLflow run") == 1  # one result table, from rank 0
    checkpoints = list((tmp_path / ".seqbench" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 2  # one per run: rank 0 alone wrote the DDP run's


def one_rank_out_of_memory(tmp_path, capped_rank: int, device: str,
                           margin_mb: int) -> tuple[subprocess.CompletedProcess, dict]:
    """A two-rank run where rank `capped_rank` alone runs out of memory for real (its memory capped
    by tests/memory_capped_rank.py, the other rank's not): the finished command and the run's tags."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(__file__).with_name("memory_capped_rank.py")), "run", "induction-heads", "--seq-len", "512",
               "--batch-size", "256", "--steps", "2", "--eval-samples", "4", "--eval-lengths", "64",
               "--set", "d_model=32", "--set", "n_layers=1", "--device", device, "--no-progress",
               "--tracking-uri", uri]
    env = {**clean_env(), "CAPPED_RANK": str(capped_rank), "CAPPED_MARGIN_MB": str(margin_mb)}
    env.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    _, logged = only_run(uri)
    assert logged.data.tags["status"] == "oom" and logged.info.status == "FAILED", logged.data.tags
    return done, logged.data.tags


@pytest.mark.parametrize("capped_rank", [1, 0])
def test_one_rank_out_of_memory_ends_the_run_as_oom_at_once(tmp_path, capped_rank):
    """The run is recorded `oom` with the failing rank's message and every rank exits, instead of
    the others waiting in a collective until the process group times out (30 min) with the run
    left `running`."""
    # Margins from 120 MB to 1,200 MB all ran out of memory in the first training step here: 400 sits between.
    done, tags = one_rank_out_of_memory(tmp_path, capped_rank, "cpu", margin_mb=400)
    assert "can't allocate memory" in tags["error"]
    if capped_rank == 0:
        assert tags["error"].startswith("out of memory") and "failed_rank" not in tags
    else:  # rank 1 recorded it; rank 0, stopped in its collective, kept that record
        assert tags["error"].startswith("rank 1: out of memory") and tags["failed_rank"] == "1"
    assert done.stdout.count("status oom") == 1  # rank 0's result table


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_one_gpu_out_of_memory_ends_an_nccl_run_as_oom(tmp_path):
    """The same on two GPUs over NCCL, where rank 0 waits inside a CUDA collective: rank 1's
    record stands and torchrun stops rank 0 (the command returns within the 300 s limit)."""
    _, tags = one_rank_out_of_memory(tmp_path, 1, "cuda", margin_mb=16)  # the batch's activations need more
    assert tags["error"].startswith("rank 1: out of memory") and tags["failed_rank"] == "1"


def test_ctrl_c_of_two_ranks_checkpoints_and_resume_finishes_the_same_run(tmp_path):
    """Ctrl-C to the whole `seqbench run --nproc 2` (its process group, as a terminal sends it):
    the run is `interrupted` with rank 0's checkpoint; `--resume --nproc 2` loads it on both ranks
    and finishes the same MLflow run, its loss history continuing from where it stopped."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "-m", "seqbench.harness.cli", "run", "induction-heads", "--steps", "400", "--batch-size", "2",
               "--eval-samples", "4", "--eval-lengths", "64", "--set", "d_model=16", "--set", "n_layers=1",
               "--device", "cpu", "--no-progress", "--tracking-uri", uri, "--nproc", "2"]
    setup_experiment(uri, "induction-heads")
    proc = subprocess.Popen(command, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        client, run_id, deadline = MlflowClient(uri), None, time.time() + 240
        while time.time() < deadline and proc.poll() is None and run_id is None:
            time.sleep(1)
            runs = client.search_runs([client.get_experiment_by_name("induction-heads").experiment_id])
            if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
                run_id = runs[0].info.run_id
        assert run_id, "training never started: " + (proc.stderr.read()[-3000:] if proc.poll() is not None else "")
        stop_group(proc, grace_s=120)
    finally:
        stop_group(proc, grace_s=0)
    assert proc.returncode != 0
    logged = client.get_run(run_id)
    assert logged.data.tags["status"] == "interrupted", logged.data.tags
    checkpoints = list((tmp_path / ".seqbench" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1
    stopped_at = torch.load(checkpoints[0], weights_only=True)["step"]
    assert 0 < stopped_at < 400

    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming from") == 1  # rank 0 says so; both ranks load it
    _, finished = only_run(uri)
    assert finished.info.run_id == run_id and finished.data.tags["status"] == "ok"
    steps = [step for step, _ in loss_curve(client, finished)]
    assert steps[-1] == 399 and steps == sorted(set(steps))  # one curve, continued, not restarted at 0


def test_shards_are_the_rows_of_the_global_batch():
    rows = torch.arange(12).view(6, 2)
    batch = Batch(rows, rows + 100)
    parts = [distributed.shard(batch, distributed.Context(r, 3, r, torch.device("cpu"))) for r in range(3)]
    assert torch.equal(torch.cat([p.inputs for p in parts]), rows)
    assert torch.equal(parts[1].targets, rows[2:4] + 100)
    alone = distributed.Context(0, 1, 0, torch.device("cpu"))
    assert distributed.shard(batch, alone) is batch


def test_world_size_enters_the_config_hash_only_above_one():
    config = RunConfig(task="induction-heads", steps=3, batch_size=2, model_kwargs={"d_model": 16})
    assert config.hash() == "c36d8e4f229a"  # as before data parallelism existed: old checkpoints resume
    assert RunConfig(**{**config.__dict__, "world_size": 2}).hash() != config.hash()


def test_nproc_below_one_is_a_user_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "run", "induction-heads", "--nproc", "0"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "error: --nproc must be >= 1, got 0"
