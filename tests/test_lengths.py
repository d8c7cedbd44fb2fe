"""Lengths: the largest one accepted, the int64 bound on a batch, and which lengths a run evaluates
by default (on the CPU the task's lengths up to 4x the training length, and that length itself)."""

import pytest

from seqbench.core.errors import SeqbenchError
from seqbench.harness.config import MAX_LENGTH, RunConfig, parse_length, parse_lengths
from seqbench.tasks import get_task


def test_lengths_up_to_2_40_are_accepted_and_longer_ones_refused_in_one_line():
    assert parse_length("2^40") == MAX_LENGTH == 1 << 40
    assert parse_length("1024g") == MAX_LENGTH
    for text in ("2^41", "2^99", "2^999999999", "1025g", str((1 << 40) + 1), "99999999999999999999999"):
        with pytest.raises(SeqbenchError, match="beyond what this machine can address; lengths up to 2\\^40") as err:
            parse_length(text)
        assert text in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SeqbenchError, match="length 2\\^41"):
        parse_lengths("64,2^41")


def test_a_batch_beyond_int64_indexing_is_refused_before_anything_is_built():
    task = get_task("induction-heads")
    with pytest.raises(SeqbenchError, match="int64 indexing"):
        RunConfig(task="induction-heads", seq_len=1 << 40, batch_size=1 << 23).resolve(task, "cpu")
    with pytest.raises(SeqbenchError, match="length 2\\^50"):
        RunConfig(task="induction-heads", eval_lengths=[64, 1 << 50]).resolve(task, "cpu")  # the Python API too


def test_cpu_runs_evaluate_up_to_four_times_the_training_length():
    task = get_task("induction-heads")  # the task's lengths: 64 .. 2^20
    assert RunConfig(task="induction-heads").resolve(task, "cpu").eval_lengths == [64, 128, 256, 512, 1024]
    assert RunConfig(task="induction-heads", seq_len=300).resolve(task, "cpu").eval_lengths == [
        64, 128, 256, 300, 512, 1024]  # the training length is always there
    assert RunConfig(task="induction-heads", seq_len=16).resolve(task, "cpu").eval_lengths == [16, 64]
    on_gpu = RunConfig(task="induction-heads").resolve(task, "cuda").eval_lengths
    assert on_gpu == [2**k for k in range(6, 21)]
    asked = RunConfig(task="induction-heads", eval_lengths=[64, 1 << 14]).resolve(task, "cpu")
    assert asked.eval_lengths == [64, 1 << 14]  # --eval-lengths is never cut
    lm = get_task("lm")  # no lengths of its own: its training length
    assert RunConfig(task="lm", seq_len=512).resolve(lm, "cpu").eval_lengths == [512]


def test_an_lm_evaluation_length_needs_only_the_held_out_split():
    """A held-out split larger than the training split (held_out=0.9) can be evaluated beyond the
    training split's size; the training length needs both splits, an evaluation length too long
    for the held-out split is refused."""
    lm = get_task("lm", held_out=0.9)  # the sample text: 1,988 training and 17,893 held-out bytes
    train, held_out = len(lm.train_store), len(lm.eval_store)
    assert train < 8192 < held_out
    assert 8192 in RunConfig(task="lm", seq_len=256, eval_lengths=[256, 8192]).resolve(lm, "cpu").eval_lengths
    with pytest.raises(SeqbenchError, match="train split"):
        RunConfig(task="lm", seq_len=8192).resolve(lm, "cpu")
    with pytest.raises(SeqbenchError, match="held-out split"):
        RunConfig(task="lm", seq_len=256, eval_lengths=[1 << 16]).resolve(lm, "cpu")
