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


@pytest.mark.parametrize("name,length", [("induction-heads", 256), ("selective-copying", 200), ("mqar", 128)])
def test_a_sample_does_not_depend_on_the_batch_it_is_drawn_with(name, length):
    """Rows of the counter-based streams are samples: the held-out set is the same at every
    evaluation batch size, and a larger training batch starts with the smaller one."""
    task = get_task(name, seed=5)
    small, large = task.train_batch(3, 4, length), task.train_batch(3, 10, length)
    assert torch.equal(small.inputs, large.inputs[:4]) and torch.equal(small.targets, large.targets[:4])
    by_3 = torch.cat([b.inputs for b in task.eval_batches(length, 10, 3)])
    by_10 = torch.cat([b.inputs for b in task.eval_batches(length, 10, 10)])
    assert torch.equal(by_3, by_10)


def test_counter_random_is_fixed_by_its_key_rows_and_draws():
    """The streams are pinned: these values are what every device and version must draw (a GPU
    test checks CUDA against the CPU), and draws are close to uniform."""
    from seqbench.tasks.counter_random import CounterRandom, stream_key

    rng = CounterRandom.for_samples(stream_key(0, 1, 0), 0, 2)
    assert rng.integers(0, 16, 6).tolist() == PINNED_DRAWS
    counts = torch.bincount(CounterRandom.for_samples(7, 0, 400).integers(0, 10, 500).flatten(), minlength=10)
    assert counts.min() > 19_000 and counts.max() < 21_000  # 20,000 expected per value
    u = CounterRandom.for_samples(7, 0, 100).uniform(1000)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    choice = CounterRandom.for_samples(7, 0, 50).choose(30, 30)
    assert all(sorted(row) == list(range(30)) for row in choice.tolist())  # permutations


def test_mqar_queries_fall_on_earlier_slots_more_often():
    """MQAR's query slots follow its power law (weights k^(power-1)): the first half of the slots
    gets more queries than the second."""
    task = get_task("mqar", power=0.01)
    batch = task.train_batch(0, 256, 256)
    kv = 16
    positions = (batch.targets != IGNORE_INDEX).nonzero()[:, 1]
    slots = (positions - 2 * kv) // 2
    half = (256 - 2 * kv) // 4
    assert (slots < half).sum() > 1.2 * (slots >= half).sum()


PINNED_DRAWS = [[10, 14, 3, 7, 4, 12], [12, 5, 11, 7, 12, 8]]


@pytest.mark.parametrize("name,length", [("induction-heads", 256), ("selective-copying", 200), ("mqar", 128)])
def test_a_batch_made_from_a_device_step_counter_touches_no_host_tensor(name, length):
    """A captured training step makes its batch inside the CUDA graph from a step counter on the
    device; capture fails on any host tensor copied in. On the meta device, every op's tensors
    must be meta too."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    host_inputs = []

    class HostTensors(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat, _ = tree_flatten((args, kwargs or {}))
            host_inputs.extend(str(func) for a in flat if isinstance(a, torch.Tensor) and a.device.type == "cpu")
            return func(*args, **(kwargs or {}))

    meta = torch.device("meta")
    with HostTensors():
        batch = get_task(name).train_batch(torch.empty((), dtype=torch.int64, device=meta), 4, length, device=meta)
    assert batch.inputs.device == meta and not host_inputs


@pytest.mark.parametrize("name,length", [("induction-heads", 64), ("selective-copying", 100), ("mqar", 128)])
def test_a_step_counter_tensor_gives_the_batch_its_int_gives(name, length):
    task = get_task(name, seed=2)
    for step in (0, 5, 123_456):
        a, b = task.train_batch(step, 4, length), task.train_batch(torch.tensor(step), 4, length)
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
