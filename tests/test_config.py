"""Length parsing and config resolution."""

import pytest

from seqbench.harness.config import RunConfig, format_length, parse_length, parse_lengths
from seqbench.core.errors import SeqbenchError
from seqbench.tasks import get_task


@pytest.mark.parametrize("text,value", [
    ("256", 256), ("1k", 1024), ("64K", 65536), ("1m", 1 << 20), ("2^10", 1024), (" 4k ", 4096), ("2M", 1 << 21),
])
def test_parse_length(text, value):
    assert parse_length(text) == value


@pytest.mark.parametrize("text", ["", "1x", "k", "-5", "0", "1.5k", "2^"])
def test_parse_length_rejects(text):
    with pytest.raises(SeqbenchError):
        parse_length(text)


def test_parse_lengths_keeps_order_and_drops_duplicates():
    assert parse_lengths("256,1k,1024,1m") == [256, 1024, 1 << 20]


def test_format_length_round_trips():
    for n in (64, 300, 1024, 65536, 1 << 20):
        assert parse_length(format_length(n)) == n


def test_resolve_fills_task_defaults_and_caps_cpu_eval_lengths():
    task = get_task("induction-heads")
    resolved = RunConfig(task="induction-heads").resolve(task, "cpu")
    assert resolved.seq_len == 256 and resolved.steps == task.defaults.steps
    assert resolved.model_kwargs == {"d_model": 64, "n_layers": 2}
    assert max(resolved.eval_lengths) == 4 * 256  # on the CPU: up to 4x the training length
    on_gpu = RunConfig(task="induction-heads").resolve(task, "cuda")
    assert max(on_gpu.eval_lengths) == 1 << 20


def test_hash_ignores_tracking_but_not_training_settings():
    base = RunConfig(task="induction-heads", steps=10)
    assert base.hash() == RunConfig(task="induction-heads", steps=10, train_step="eager").hash()  # same numbers
    assert base.hash() != RunConfig(task="induction-heads", steps=10, precision="fp32").hash()
    assert base.hash() == RunConfig(task="induction-heads", steps=10, tracking_uri="sqlite:///x.db").hash()
    assert base.hash() != RunConfig(task="induction-heads", steps=11).hash()


def test_resolve_rejects_bad_values():
    task = get_task("induction-heads")
    with pytest.raises(SeqbenchError, match="--steps must be > 0"):
        RunConfig(task="induction-heads", steps=0).resolve(task, "cpu")
    with pytest.raises(SeqbenchError, match="at least 4 tokens"):
        RunConfig(task="induction-heads", eval_lengths=[2]).resolve(task, "cpu")
