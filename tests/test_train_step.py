"""The training step's mode choice, its deferred loss read-back, and optimizer state that moves
between modes (on the CPU; tests/test_train_step_gpu.py runs the captured step itself)."""

import subprocess
import sys

import pytest
import torch

from seqbench.core.errors import SeqbenchError
from seqbench.harness.train_step import StepLog, TrainStep, choose_mode, first_nonfinite, make_optimizer
from seqbench.models import build_model
from seqbench.tasks import get_task

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("requested,device,world,mode", [
    ("auto", CUDA, 1, "captured"),
    ("auto", CPU, 1, "eager"),
    ("auto", CUDA, 2, "eager"),
    ("eager", CUDA, 1, "eager"),
    ("captured", CUDA, 1, "captured"),
])
def test_the_step_mode_a_run_gets(requested, device, world, mode):
    chosen, why = choose_mode(requested, device, world)
    assert chosen == mode and why


@pytest.mark.parametrize("requested,device,world,message", [
    ("captured", CPU, 1, "needs a CUDA device"),
    ("captured", CUDA, 2, "data-parallel"),
    ("graphs", CUDA, 1, "must be one of auto, eager, captured"),
])
def test_a_step_mode_that_cannot_be_had_is_refused(requested, device, world, message):
    with pytest.raises(SeqbenchError, match=message):
        choose_mode(requested, device, world)


def test_captured_on_the_cpu_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "run", "induction-heads", "--device", "cpu",
                           "--train-step", "captured", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --train-step captured needs a CUDA device (CUDA graphs); use auto or eager"]
    assert not (tmp_path / "m.db").exists()


def test_step_log_reads_every_step_since_the_last_read_and_finds_the_first_nan():
    log = StepLog(4, CPU)
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf")]):
        log.add(step, torch.tensor([value, value * 10]))
    assert log.full
    rows = log.read()
    assert [r.step for r in rows] == [0, 1, 2, 3] and rows[1].grad_norm == 20.0
    assert first_nonfinite(rows).step == 2
    assert len(log) == 0 and first_nonfinite([]) is None


def test_an_optimizer_loaded_from_a_captured_run_trains_eagerly_on_the_cpu():
    """A checkpoint's optimizer groups carry their flags (capturable, fused); the step resets
    them to its own mode, so a GPU run's checkpoint resumes on the CPU."""
    task = get_task("induction-heads")
    model = build_model("mamba", vocab_size=task.vocab_size, head=task.head, d_model=16, n_layers=1)
    optimizer = make_optimizer(model, 1e-3, 0.0, CPU, "eager")
    step = TrainStep(model, task, optimizer, 1.0, CPU)
    step(0, 32, 2, task.train_batch(0, 2, 32))
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group.update(capturable=True, fused=True)  # as a captured GPU run saves them
    fresh = make_optimizer(model, 1e-3, 0.0, CPU, "eager")
    fresh.load_state_dict(state)
    make = lambda step, batch_size, length: task.train_batch(step, batch_size, length)  # noqa: E731
    resumed = TrainStep(model, task, fresh, 1.0, CPU, make_batch=make)
    assert all(not g["capturable"] and not g["fused"] for g in fresh.param_groups)
    resumed.set_lr(5e-4)
    loss, norm = resumed(1, 32, 2).tolist()  # the step makes its own batch
    assert loss > 0 and norm > 0 and fresh.param_groups[0]["lr"] == 5e-4
