"""Synthetic tasks: layouts, determinism per (seed, step), and refused lengths."""

import pytest
import torch

from seqbench.core.errors import SeqbenchError
from seqbench.tasks import get_task
from seqbench.tasks.base import IGNORE_INDEX


@pytest.mark.parametrize("name,length", [("induction-heads", 256), ("selective-copying", 200), ("mqar", 128)])
def test_same_seed_and_step_give_the_same_batch(name, length):
    a = get_task(name, seed=1).train_batch(7, 4, length)
    b = get_task(name, seed=1).train_batch(7, 4, length)
    c = get_task(name, seed=1).train_batch(8, 4, length)
    d = get_task(name, seed=2).train_batch(7, 4, length)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs) and not torch.equal(a.inputs, d.inputs)
    evals = list(get_task(name, seed=1).eval_batches(length, 10, 4))
    assert [e.inputs.shape[0] for e in evals] == [4, 4, 2]
    assert not torch.equal(evals[0].inputs, a.inputs)  # held-out stream differs from training


def test_induction_heads_layout():
    task = get_task("induction-heads")
    batch = task.train_batch(0, 64, 128)
    special = task.special
    assert (batch.inputs[:, -1] == special).all()
    assert ((batch.inputs[:, :-1] == special).sum(1) == 1).all()  # exactly one earlier special token
    where = (batch.inputs[:, :-1] == special).int().argmax(1)
    answer = batch.inputs[torch.arange(64), where + 1]
    assert torch.equal(batch.targets[:, -1], answer)
    assert (batch.targets[:, :-1] == IGNORE_INDEX).all()


def test_selective_copying_layout():
    task = get_task("selective-copying")
    batch = task.train_batch(0, 8, 100)
    body = 100 - 16
    data = batch.inputs[:, :body]
    assert ((data != 0).sum(1) == 16).all()
    for row in range(8):
        assert torch.equal(data[row][data[row] != 0], batch.targets[row, body:])
    assert (batch.inputs[:, body:] == 15).all()
    assert (batch.targets[:, :body] == IGNORE_INDEX).all()


def test_mqar_queries_recall_their_values():
    task = get_task("mqar")
    batch = task.train_batch(0, 8, 256)
    kv = 16
    for row in range(8):
        x, y = batch.inputs[row], batch.targets[row]
        pairs = dict(zip(x[0:2 * kv:2].tolist(), x[1:2 * kv:2].tolist()))
        assert len(pairs) == kv and all(0 < k < 4096 <= v for k, v in pairs.items())
        scored = (y != IGNORE_INDEX).nonzero().flatten()
        assert len(scored) == kv
        for pos in scored.tolist():
            assert pos >= 2 * kv and y[pos].item() == pairs[x[pos].item()]


@pytest.mark.parametrize("name,length,message", [
    ("induction-heads", 3, "at least 4 tokens"),
    ("selective-copying", 31, "needs length >= 32"),
    ("mqar", 8192, "vocab"),
])
def test_lengths_a_task_cannot_take_are_refused(name, length, message):
    with pytest.raises(SeqbenchError, match=message):
        get_task(name).check_seq_len(length)
