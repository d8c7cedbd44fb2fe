"""On the GPU: the captured training step trains as the eager one does, resumes identically,
stops a diverging run at the same step, and the synthetic data made on the GPU are the CPU's."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from seqbench.harness.config import RunConfig
from seqbench.harness.runner import run
from seqbench.tasks import get_task

pytestmark = pytest.mark.gpu


def _config(tmp_path: Path, **overrides) -> RunConfig:
    settings = dict(task="induction-heads", steps=40, batch_size=8, eval_lengths=[256], eval_samples=32,
                    eval_every=0, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", log_every=1, device="cuda",
                    checkpoint_dir=str(tmp_path / "ckpt"))
    settings.update(overrides)
    return RunConfig(**settings)


def _losses(config: RunConfig, run_id: str) -> list[float]:
    history = MlflowClient(config.tracking_uri).get_metric_history(run_id, "train_loss")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


@pytest.mark.parametrize("name,length", [("induction-heads", 256), ("selective-copying", 4096), ("mqar", 256)])
def test_batches_made_on_the_gpu_are_the_cpu_batches(name, length):
    task = get_task(name, seed=3)
    for step in (0, 17):
        cpu, gpu = task.train_batch(step, 16, length), task.train_batch(step, 16, length, device=torch.device("cuda"))
        assert gpu.inputs.is_cuda
        assert torch.equal(cpu.inputs, gpu.inputs.cpu()) and torch.equal(cpu.targets, gpu.targets.cpu())
    cpu = next(iter(task.eval_batches(length, 8, 8)))
    gpu = next(iter(task.eval_batches(length, 8, 8, device=torch.device("cuda"))))
    assert torch.equal(cpu.inputs, gpu.inputs.cpu())


@pytest.mark.parametrize("model", ["mamba", "transformer", "hyena"])
@pytest.mark.parametrize("precision,rtol", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_captured_steps_train_as_eager_steps_do(tmp_path, model, precision, rtol):
    eager = run(_config(tmp_path, model=model, precision=precision, train_step="eager"), progress=False)
    captured = run(_config(tmp_path, model=model, precision=precision, train_step="captured",
                           checkpoint_dir=str(tmp_path / "c")), progress=False)
    assert eager.status == captured.status == "ok"
    params = MlflowClient(eager.config.tracking_uri).get_run(captured.run_id).data.params
    assert params["train_step_mode"] == "captured"
    assert params["dtype"] == ("fp32" if precision == "fp32" else "bf16-autocast")
    a, b = _losses(eager.config, eager.run_id), _losses(captured.config, captured.run_id)
    assert len(a) == len(b) == 40
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=rtol, atol=rtol)


def test_a_captured_run_resumes_as_if_it_had_not_stopped(tmp_path):
    whole = run(_config(tmp_path, train_step="captured", precision="fp32"), progress=False)
    first = run(_config(tmp_path, train_step="captured", precision="fp32", steps=20, checkpoint_dir=str(tmp_path / "h")),
                progress=False)
    # The same settings with more steps are another config: its checkpoint goes under the new hash.
    longer = replace(first.config, steps=40, resume=True)
    ckpt = next((tmp_path / "h").glob("*.pt"))
    ckpt.rename(ckpt.with_name(ckpt.name.replace(first.config.hash(), longer.hash())))
    second = run(longer, progress=False, run_id=first.run_id)
    assert second.run_id == first.run_id and second.steps_done == 40
    torch.testing.assert_close(torch.tensor(_losses(longer, first.run_id)), torch.tensor(_losses(whole.config, whole.run_id)),
                               rtol=1e-4, atol=1e-4)


def test_a_diverging_captured_run_stops_at_the_eager_runs_step(tmp_path):
    eager = run(_config(tmp_path, lr=1e20, train_step="eager", log_every=1), progress=False)
    captured = run(_config(tmp_path, lr=1e20, train_step="captured", log_every=10, checkpoint_dir=str(tmp_path / "c")),
                   progress=False)
    assert eager.status == captured.status == "diverged"
    assert captured.steps_done == eager.steps_done and captured.message == eager.message


def test_a_sequence_length_warmup_recaptures_at_each_length(tmp_path):
    config = _config(tmp_path, train_step="captured", steps=30, seq_len=256, seq_warmup_start=64, seq_warmup_every=10)
    result = run(config, progress=False)
    assert result.status == "ok" and result.steps_done == 30
    assert len(_losses(config, result.run_id)) == 30


def test_a_data_backed_task_trains_captured_with_prefetched_batches(tmp_path):
    config = _config(tmp_path, task="lm", modality="text", seq_len=128, steps=20, eval_lengths=[128],
                     model_kwargs={"d_model": 32, "n_layers": 2}, train_step="captured", precision="fp32")
    eager = run(_config(tmp_path, task="lm", modality="text", seq_len=128, steps=20, eval_lengths=[128],
                        model_kwargs={"d_model": 32, "n_layers": 2}, train_step="eager", precision="fp32",
                        checkpoint_dir=str(tmp_path / "e")), progress=False)
    captured = run(config, progress=False)
    assert eager.status == captured.status == "ok"
    torch.testing.assert_close(torch.tensor(_losses(config, captured.run_id)),
                               torch.tensor(_losses(eager.config, eager.run_id)), rtol=1e-4, atol=1e-4)


def test_a_capture_survives_another_thread_pinning_and_copying_batches():
    """The prefetching thread of a data-backed task pins memory and copies while the step is
    captured; in the default (global) capture mode that invalidates the capture."""
    import threading

    from seqbench.core.types import Batch
    from seqbench.harness.train_step import TrainStep, make_optimizer
    from seqbench.models import build_model

    device = torch.device("cuda")
    task = get_task("mad-memorization", seed=0)
    model = build_model("transformer", vocab_size=task.vocab_size, head=task.head, d_model=32, n_layers=2).to(device)
    step = TrainStep(model, task, make_optimizer(model, 1e-3, 0.0, device, "captured"), 1.0, device, "fp32",
                     "captured")
    stop = threading.Event()

    def pin_and_copy():
        stream = torch.cuda.Stream()
        while not stop.is_set():
            with torch.cuda.stream(stream):
                torch.ones(4096).pin_memory().to("cuda", non_blocking=True)

    producer = threading.Thread(target=pin_and_copy, daemon=True)
    producer.start()
    try:
        batch = task.train_batch(0, 8, 32)
        batch = Batch(batch.inputs.cuda(), batch.targets.cuda())
        for n in range(8):  # warm-up steps, the capture, replays
            out = step(n, 32, 8, batch)
        torch.cuda.synchronize()
    finally:
        stop.set()
        producer.join()
    assert step.captures == 1 and torch.isfinite(out).all()


@pytest.mark.parametrize("to_group", [False, True], ids=["process", "process-group"])
def test_ctrl_c_during_captured_training_records_interrupted_and_resumes(tmp_path, to_group):
    """SIGINT to a run replaying its captured step (to the process, or to its whole group as
    `timeout -s INT` sends it): status interrupted and a checkpoint, then --resume finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, "-m", "seqbench.harness.cli", "run", "selective-copying", "--steps", "100000",
            "--seq-len", "1024", "--batch-size", "16", "--eval-lengths", "1024", "--eval-samples", "16",
            "--log-every", "100", "--tracking-uri", uri, "--no-progress", "--device", "cuda"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        client, run_id, deadline = None, None, time.time() + 120
        while time.time() < deadline and proc.poll() is None and run_id is None:
            time.sleep(1)
            client = client or MlflowClient(uri)
            experiment = client.get_experiment_by_name("selective-copying") if Path(tmp_path / "mlflow.db").exists() else None
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            history = client.get_metric_history(runs[0].info.run_id, "train_loss") if runs else []
            if history and max(m.step for m in history) >= 500:  # replaying its graph by now
                run_id = runs[0].info.run_id
        assert run_id, "training never started"
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    logged = client.get_run(run_id)
    assert logged.data.tags["status"] == "interrupted", stderr
    assert list((tmp_path / ".seqbench" / "checkpoints").glob("*.pt"))
