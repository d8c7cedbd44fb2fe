"""Data-backed tasks (lm, species, spoken-digits) on the generated samples and, when present,
on the real data in ../shared/data."""

import os
from pathlib import Path

import pytest
import torch

from seqbench.harness.config import RunConfig
from seqbench.core.errors import SeqbenchError
from seqbench.harness.runner import run
from seqbench.tasks import get_task

SHARED = Path(os.environ.get("SEQBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here")


@pytest.mark.parametrize("modality", ["text", "audio", "dna"])
def test_lm_targets_are_the_inputs_shifted_by_one(modality):
    task = get_task("lm", modality=modality)
    batch = task.train_batch(0, 3, 64)
    assert batch.inputs.shape == batch.targets.shape == (3, 64)
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    assert int(batch.inputs.max()) < task.vocab_size
    assert task.derived_metrics({"loss": 2.0})[task.bits_name] == pytest.approx(2.0 / 0.6931471805599453)


def test_species_refuses_windows_longer_than_the_held_out_genome_segments():
    task = get_task("species")
    longest = task.max_length()
    task.check_seq_len(longest)
    with pytest.raises(SeqbenchError, match="species windows can be at most"):
        task.check_seq_len(longest + 1)


def test_species_batches_are_balanced_labelled_windows():
    task = get_task("species")
    batch = task.train_batch(0, 60, 128)
    assert batch.inputs.shape == (60, 128) and batch.targets.shape == (60,)
    assert set(batch.targets.tolist()) == set(range(len(task.label_names)))


def test_spoken_digits_pads_on_the_left_and_crops_the_centre():
    task = get_task("spoken-digits")
    clip = task.train_store.record(0)
    padded = task._clip(task.train_store, 0, len(clip) + 10)
    assert (padded[:10] == task.SILENCE).all() and (padded[10:] == clip).all()
    cropped = task._clip(task.train_store, 0, len(clip) - 10)
    assert (cropped == clip[5:len(clip) - 5]).all()


def test_a_class_run_logs_a_confusion_matrix(tmp_path):
    from mlflow.tracking import MlflowClient

    config = RunConfig(task="species", steps=3, batch_size=4, seq_len=128, eval_samples=12, device="cpu",
                       model_kwargs={"d_model": 16, "n_layers": 1}, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                       checkpoint_dir=str(tmp_path / "ckpt"))
    result = run(config, progress=False)
    assert result.status == "ok"
    client = MlflowClient(config.tracking_uri)
    path = client.download_artifacts(result.run_id, "confusion/128.json", str(tmp_path))
    import json

    matrix = json.loads(Path(path).read_text())
    assert sum(map(sum, matrix["rows_true_columns_predicted"])) == 12
    assert matrix["classes"] == get_task("species").label_names


@needs_shared
def test_real_spoken_digits_use_the_usual_split():
    task = get_task("spoken-digits", data=str(SHARED / "audio" / "spoken-digits"))
    assert task.eval_store.n_records == 5 * 10 * 5 and task.train_store.n_records == 2500 - 250
    assert task.label_names == [str(d) for d in range(10)]


@needs_shared
def test_real_ape_genomes_give_five_species_and_refuse_long_windows():
    task = get_task("species", data=str(SHARED / "dna" / "great-ape-mtdna"))
    assert len(task.label_names) == 5
    assert 3000 < task.max_length() < 3400
    with pytest.raises(SeqbenchError, match="at most"):
        task.check_seq_len(4096)


@needs_shared
def test_real_text_lm():
    task = get_task("lm", modality="text", data=str(SHARED / "text" / "tinyshakespeare.txt"))
    batch = task.train_batch(0, 2, 1024)
    text = bytes(batch.inputs[0].tolist()).decode("utf-8", errors="replace")
    assert len(text) > 500


PAIRS = [("induction-heads", "tokens", 64), ("selective-copying", "tokens", 64), ("mqar", "tokens", 64),
         ("lm", "text", 64), ("lm", "audio", 64), ("lm", "dna", 64), ("species", "dna", 64),
         ("spoken-digits", "audio", 2000), ("speed", "tokens", 64)]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    from seqbench.harness.tracking import setup_experiment

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    setup_experiment(uri, "pairs")
    return folder, uri


@pytest.mark.parametrize("task,modality,length", PAIRS)
def test_every_task_and_modality_runs_two_steps(task, modality, length, shared_store):
    folder, uri = shared_store
    config = RunConfig(task=task, modality=modality, seq_len=length, steps=2, batch_size=2, eval_samples=4,
                       eval_lengths=[length], model_kwargs={"d_model": 16, "n_layers": 1}, device="cpu",
                       tracking_uri=uri, experiment="pairs", checkpoint_dir=str(folder / "ckpt"))
    result = run(config, progress=False)
    assert result.status == "ok"
    key = "train_tokens_per_s" if task == "speed" else "loss"
    assert f"{key}/{length}" in result.metrics


def test_evaluate_on_a_hand_made_batch():
    """Four sequences, the last position scored; the model is right on three: accuracy 3/4 and the
    loss is the mean cross-entropy of the four hand-set logits."""
    import math

    from seqbench.harness.evaluation import evaluate
    from seqbench.tasks.base import Batch
    from seqbench.tasks.synthetic import InductionHeads

    class FixedLogits(torch.nn.Module):
        max_seq_len = None

        def forward(self, ids, last_only=False):
            logits = torch.full((ids.shape[0], 1, 16), -10.0)
            logits[torch.arange(ids.shape[0]), 0, ids[:, 0]] = 0.0  # predicts the first token
            return logits

    class HandMade(InductionHeads):
        def eval_batches(self, seq_len, n_samples, batch_size, device=None):
            ids = torch.tensor([[1, 5, 15], [2, 5, 15], [3, 5, 15], [4, 5, 15]])
            targets = torch.full_like(ids, -100)
            targets[:, -1] = torch.tensor([1, 2, 3, 9])
            yield Batch(ids, targets)

    metrics = evaluate(FixedLogits(), HandMade(), 3, 4, 4, torch.device("cpu"))
    assert metrics["accuracy"] == 0.75 and metrics["samples"] == 4
    right = math.log(1 + 15 * math.exp(-10))
    wrong = 10 + math.log(1 + 15 * math.exp(-10))
    assert metrics["loss"] == pytest.approx((3 * right + wrong) / 4, rel=1e-5)
