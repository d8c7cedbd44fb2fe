"""Streamed evaluation: a model whose state has a constant size (Mamba) run chunk after chunk with
its conv and SSM states carried across the boundaries gives the logits and every evaluation metric
of one forward over the whole sequence (CPU, the reference kernels)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from seqbench.core.errors import SeqbenchError
from seqbench.core.types import HeadSpec
from seqbench.harness.config import RunConfig
from seqbench.harness.evaluation import evaluate, evaluate_length
from seqbench.harness.train_step import scored
from seqbench.models import build_model
from seqbench.models.backbone import cross_entropy
from seqbench.tasks import get_task


def mamba(head: HeadSpec, vocab: int = 50, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("mamba", vocab_size=vocab, head=head, d_model=32, n_layers=2).eval()


@pytest.mark.parametrize("head", [HeadSpec("token", 50), HeadSpec("class", 7, pool="mean"),
                                  HeadSpec("class", 7, pool="last")], ids=["token", "class-mean", "class-last"])
@pytest.mark.parametrize("chunk", [1, 3, 64, 100, 203, 500])  # 203: the length; 100 and 64 do not divide it
def test_streamed_logits_equal_one_forward(head, chunk):
    model = mamba(head)
    ids = torch.randint(0, 50, (3, 203), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(ids)
    parts = list(model.stream(ids, chunk))
    if head.kind == "token":
        assert [start for start, _ in parts] == list(range(0, 203, chunk))
        streamed = torch.cat([logits for _, logits in parts], dim=1)
    else:
        (start, streamed), = parts
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=2e-6)


def test_stream_then_decode_continues_the_same_sequence():
    """The state a stream leaves behind is the decoding state: a step after the stream predicts
    what one forward over the longer sequence does at its last position."""
    model = mamba(HeadSpec("token", 50))
    ids = torch.randint(0, 50, (2, 41), generator=torch.Generator().manual_seed(2))
    state = model.init_state(2, 0)
    for start in range(0, 40, 16):
        model.hidden_states(ids[:, start:min(start + 16, 40)], states=state)
    stepped, _ = model.step(ids[:, 40], state)
    with torch.no_grad():
        torch.testing.assert_close(stepped, model(ids)[:, -1], rtol=1e-5, atol=2e-6)


def test_families_whose_state_grows_do_not_stream():
    for family in ("transformer", "hyena", "hybrid"):
        settings = {"d_model": 32, "n_layers": 2} | ({"attn_layers": "1"} if family == "hybrid" else {})
        model = build_model(family, vocab_size=50, head=HeadSpec("token", 50), **settings)
        assert not model.streams
        with pytest.raises(ValueError, match="does not stream"):
            next(model.stream(torch.zeros(1, 8, dtype=torch.long), 4))
    assert mamba(HeadSpec("token", 50)).streams


def trained_mamba(task, steps: int = 30):
    """A Mamba that has learned something of `task` (so its metrics are not chance values)."""
    model = mamba(task.head, vocab=task.vocab_size)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = task.train_batch(step, 8, 96)
        logits = model(batch.inputs, last_only=task.scores_last_position_only)
        loss = cross_entropy(*scored(task, logits, batch.targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("name,settings", [
    ("induction-heads", {}),  # the last position only
    ("selective-copying", {}),  # a span of positions at the end
    ("mqar", {"kv": 8}),  # positions throughout, with derived per-slice metrics
    ("lm", {}),  # every position (sample text)
    ("spoken-digits", {}),  # a class head, mean-pooled, with a confusion matrix
])
def test_every_metric_streamed_equals_one_forward(name, settings):
    task = get_task(name, **settings)
    length = 192 if name != "spoken-digits" else 800
    task.check_seq_len(length)
    model = trained_mamba(task) if name != "spoken-digits" else mamba(task.head, vocab=task.vocab_size)
    cpu = torch.device("cpu")
    whole = evaluate(model, task, length, 8, 4, cpu)
    for chunk in (50, 64):
        streamed = evaluate(model, task, length, 8, 4, cpu, chunk=chunk)
        assert streamed.keys() == whole.keys()
        for key, value in whole.items():
            if key == "tokens_per_s":
                continue
            if key == "confusion":
                assert streamed[key] == value
            else:
                assert streamed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_eval_chunk_policy():
    task = get_task("induction-heads")
    cpu = torch.device("cpu")
    model = mamba(task.head, vocab=task.vocab_size)
    assert evaluate_length(model, task, 256, 4, 4, cpu, "auto", None)[1] is None  # fits: one forward
    assert evaluate_length(model, task, 256, 4, 4, cpu, "auto", 64)[1] == 64
    assert evaluate_length(model, task, 256, 4, 4, cpu, "auto", 256)[1] is None  # not above the chunk
    assert evaluate_length(model, task, 256, 4, 4, cpu, "auto", 0)[1] is None  # never
    attention = build_model("transformer", vocab_size=task.vocab_size, head=task.head, d_model=32, n_layers=1)
    assert evaluate_length(attention, task, 256, 4, 4, cpu, "auto", 64)[1] is None  # does not stream: as before


def test_eval_chunk_option_is_checked():
    with pytest.raises(SeqbenchError, match="--eval-chunk must be"):
        RunConfig(task="induction-heads", eval_chunk=-1).resolve(get_task("induction-heads"), "cpu")


def capped_run(tmp_path, eval_chunk: str) -> tuple[subprocess.CompletedProcess, object]:
    """`seqbench run` evaluating Mamba at 2^20 with its address space capped (tests/memory_capped_rank.py)
    so that one forward at that length does not fit; the finished command and its MLflow run."""
    uri = f"sqlite:///{tmp_path}/{eval_chunk}.db"
    command = [sys.executable, str(Path(__file__).with_name("memory_capped_rank.py")), "run", "induction-heads",
               "--steps", "2", "--set", "d_model=16", "--set", "n_layers=1", "--eval-lengths", "1m",
               "--eval-samples", "1", "--device", "cpu", "--no-progress", "--eval-chunk", eval_chunk,
               "--tracking-uri", uri]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RANK", "CAPPED_RANK")}
    # 600-1000 MB above the loaded process all failed one forward at 2^20 here (it needs ~1.9 GB) and
    # fitted chunks of 8k-64k: 800 sits between
    env.update(CAPPED_MARGIN_MB="800", OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("induction-heads").experiment_id])
    return done, run


def test_a_length_whose_forward_does_not_fit_is_evaluated_in_chunks(tmp_path):
    """auto: the out-of-memory forward at 2^20 is retried in chunks (halved until they fit) and
    the length is evaluated; with --eval-chunk 0 the same cap leaves the length out of memory."""
    done, run = capped_run(tmp_path, "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "length 1m did not fit in one forward: evaluated in chunks of" in done.stderr
    chunk = int(run.data.tags["eval_chunk/1048576"])
    assert 1024 <= chunk <= 65536 and "accuracy/1048576" in run.data.metrics and "eval_oom_from" not in run.data.tags
    done, run = capped_run(tmp_path, "0")
    assert done.returncode == 0, done.stderr[-3000:]  # an evaluation length out of memory: the run itself is ok
    assert run.data.tags["eval_oom_from"] == "1048576" and "accuracy/1048576" not in run.data.metrics


def test_loss_by_position_is_the_loss_binned_by_context_and_streams_alike():
    task = get_task("lm")
    model = mamba(task.head, vocab=task.vocab_size)
    cpu = torch.device("cpu")
    whole = evaluate(model, task, 300, 4, 2, cpu, by_position=True)
    streamed = evaluate(model, task, 300, 4, 2, cpu, chunk=64, by_position=True)
    bins = whole["loss_by_position"]
    assert [(a, b) for a, b, _ in bins] == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 128),
                                            (128, 256), (256, 300)]
    for (a, b, loss), (a2, b2, loss2) in zip(bins, streamed["loss_by_position"]):
        assert (a, b) == (a2, b2) and loss2 == pytest.approx(loss, rel=1e-5)
    # the bins' losses weighted by their positions are the overall loss (every position is scored)
    weighted = sum((b - a) * loss for a, b, loss in bins) / 300
    assert weighted == pytest.approx(whole["loss"], rel=1e-5)


def test_a_run_logs_loss_by_position_and_each_lengths_evaluation_cost(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    command = [sys.executable, "-m", "seqbench.harness.cli", "run", "lm", "--steps", "2", "--set", "d_model=16",
               "--set", "n_layers=1", "--eval-lengths", "128,512", "--eval-samples", "2", "--eval-chunk", "128",
               "--loss-by-position", "--task-set", "held_out=0.5", "--device", "cpu", "--no-progress",
               "--tracking-uri", uri]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lm").experiment_id])
    assert run.data.tags["eval_chunk/512"] == "128" and "eval_chunk/128" not in run.data.tags
    assert {"eval_wall_seconds/128", "eval_wall_seconds/512"} <= run.data.metrics.keys()
    path = client.download_artifacts(run.info.run_id, "loss_by_position/512.json", str(tmp_path))
    logged = json.loads(Path(path).read_text())
    assert logged["length"] == 512 and logged["chunk"] == 128 and logged["bins"][-1]["end"] == 512
    # the report draws them: a column per length, a row per bin, each evaluation's cost
    from seqbench.harness.report import write_report

    report = write_report(tmp_path / "report", uri, experiment="lm", formats=("md", "csv", "png"))
    assert {p.name for p in report.paths} >= {"loss_by_position.md", "loss_by_position.csv", "loss_by_position.png"}
    rows = list(csv.DictReader((tmp_path / "report" / "loss_by_position.csv").open()))
    at_512 = [r for r in rows if r["length"] == "512"]
    assert [(int(r["start"]), int(r["end"])) for r in at_512] == [(b["start"], b["end"]) for b in logged["bins"]]
    assert [float(r["loss"]) for r in at_512] == pytest.approx([b["loss"] for b in logged["bins"]], rel=1e-5)
    assert at_512[0]["chunk"] == "128" and float(at_512[0]["eval_wall_seconds"]) > 0
    markdown = (tmp_path / "report" / "loss_by_position.md").read_text()
    assert "| mamba | 512 | 128 |" in markdown and "| mamba | 128 | one forward |" in markdown


def test_lm_held_out_fraction():
    small, large = get_task("lm"), get_task("lm", held_out=0.5)
    assert len(large.eval_store) > 2 * len(small.eval_store)
    with pytest.raises(SeqbenchError, match="held_out is the fraction"):
        get_task("lm", held_out=1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("chunk", [256, 1000])  # 1000 does not divide 4096: a short last chunk
def test_on_the_gpu_streamed_logits_equal_one_forward(precision, chunk):
    """On the Triton scan and conv kernels (initial_state in, last state out), in fp32 and under
    bf16 autocast, chunk after chunk gives one forward's logits over 4096 positions."""
    from seqbench.core.devices import autocast

    torch.manual_seed(0)
    model = build_model("mamba", vocab_size=50, head=HeadSpec("token", 50), d_model=64, n_layers=2).cuda().eval()
    device = torch.device("cuda")
    ids = torch.randint(0, 50, (2, 4096), device=device, generator=torch.Generator(device).manual_seed(3))
    with torch.no_grad(), autocast(device, precision):
        whole = model(ids).float()
        streamed = torch.cat([logits.float() for _, logits in model.stream(ids, chunk)], dim=1)
    tolerance = dict(rtol=1e-3, atol=1e-3) if precision == "fp32" else dict(rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(streamed, whole, **tolerance)
    if precision == "bf16":  # bf16 rounds differently per chunk; the predictions must still agree
        assert (streamed.argmax(-1) == whole.argmax(-1)).float().mean() > 0.99
