"""The MAD synthetic suite (tasks/mad.py): each generator's invariants on its test set, the fixed
sets' determinism per seed, and two training steps of every task through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqbench.core.types import IGNORE_INDEX
from seqbench.harness.cli import app
from seqbench.models import build_model
from seqbench.tasks import get_task
from seqbench.tasks.mad import TEST, TRAIN

@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch) -> Path:
    """The generated sets go to a data cache of the test's own (children of a sweep inherit it)."""
    monkeypatch.setenv("SEQBENCH_DATA", str(tmp_path / "data-cache"))
    return tmp_path / "data-cache"


MAD_TASKS = ["mad-recall", "mad-noisy-recall", "mad-fuzzy-recall", "mad-selective-copying", "mad-compression",
             "mad-memorization"]
SMALL = {"train_examples": 64}


def held_out(name: str, length: int, **settings):
    task = get_task(name, **{**SMALL, **settings})
    inputs, targets = task.dataset(TEST, length)
    assert inputs.shape == targets.shape == (task.test_examples, length)
    assert int(inputs.min()) >= 0 and int(inputs.max()) < task.vocab_size
    return task, inputs, targets


@pytest.mark.parametrize("settings", [{}, {"vocab": 64}, {"multi_query": False}])
def test_recall_targets_are_recoverable_from_the_context(settings):
    task, inputs, targets = held_out("mad-recall", 128, **settings)
    plain = task.vocab - (0 if task.multi_query else 1)
    for x, y in zip(inputs.tolist(), targets.tolist()):
        scored = [i for i, t in enumerate(y) if t != IGNORE_INDEX]
        assert scored and scored[-1] == len(y) - 1  # the final probe is always scored
        if not task.multi_query:
            assert scored == [len(y) - 1] and x[-2] == task.vocab - 1  # one probe, after the copy id
        for i in scored:
            key, value = x[i], y[i]
            assert key < plain // 2 <= value < plain
            assert any(x[j] == key and x[j + 1] == value for j in range(i - 1)), "the value is not in the context"


def test_noisy_recall_never_scores_noise_and_has_its_share_of_it():
    task, inputs, targets = held_out("mad-noisy-recall", 256, frac_noise=0.4)
    noise = (inputs >= task.vocab - task.noise_vocab)
    assert not bool(((targets >= task.vocab - task.noise_vocab) & (targets != IGNORE_INDEX)).any())
    assert 0.3 < float(noise.float().mean()) < 0.5  # 40% of the pairs, the last pairs excepted


def test_fuzzy_recall_scores_value_spans_and_pads_on_the_left():
    task, inputs, targets = held_out("mad-fuzzy-recall", 128)
    plain, pad = task.vocab - 1, task.vocab - 1
    for x, y in zip(inputs.tolist(), targets.tolist()):
        scored = [t for t in y if t != IGNORE_INDEX]
        assert scored and all(plain // 2 <= t < plain for t in scored)
        assert y[-1] != IGNORE_INDEX  # the probe's value ends the sequence
        first = next(i for i, t in enumerate(x) if t != pad)
        assert pad not in x[first:]  # pads only before the content
    # the training set draws key spans of every size up to k_motif: ids repeat less than at test
    train_inputs, train_targets = task.dataset(TRAIN, 128)
    assert torch.equal(train_inputs[:, 1:], train_targets[:, :-1])  # training targets: the next token


def test_the_fuzzy_generators_pick_draws_what_rng_choice_draws():
    """`_pick` replaced `rng.choice` in the fuzzy-recall generator for speed; the sets it makes
    (and the data cache's keys) stay the same only while both draw the same values."""
    import numpy as np

    from seqbench.tasks.mad import _pick

    for options in ([1], [1, 2, 3], [2, 5, 7, 11, 13]):
        a, b = np.random.default_rng(3), np.random.default_rng(3)
        assert [_pick(a, options) for _ in range(500)] == [int(b.choice(options)) for _ in range(500)]


def test_mad_selective_copying_scores_the_context_tokens_in_order():
    task, inputs, targets = held_out("mad-selective-copying", 256, tokens=16)
    blank, copy = task.vocab - 2, task.vocab - 1
    for x, y in zip(inputs.tolist(), targets.tolist()):
        context = x[: x.index(copy)]
        assert [t for t in context if t != blank] == y[-16:]
        assert all(t == IGNORE_INDEX for t in y[:-16]) and x[-16:] == [blank] * 16


def test_compression_reconstructs_every_position_from_the_last_state():
    task, inputs, targets = held_out("mad-compression", 32)
    assert torch.equal(inputs, targets) and bool((inputs[:, -1] == task.vocab - 1).all())
    assert bool((inputs[:, :-1] < task.vocab - 1).all())
    model = build_model("mamba", vocab_size=task.vocab_size, head=task.head, d_model=32, n_layers=2)
    logits = model(inputs[:4])
    assert logits.shape == (4, 32, task.vocab_size)
    # every position is decoded from the last state: an input changes the logits of the positions
    # before it too (a token head's, causal, could not change)
    changed = inputs[:4].clone()
    changed[:, 3] = (changed[:, 3] + 1) % (task.vocab - 1)
    delta = (model(changed) - logits).abs().amax(dim=-1)
    assert bool((delta > 0).all())


def test_memorization_uses_one_fixed_map_across_sets_and_seeds_of_data():
    task, inputs, targets = held_out("mad-memorization", 32)
    facts = task.facts()
    train_inputs, train_targets = task.dataset(TRAIN, 32)
    for x, y in ((inputs, targets), (train_inputs, train_targets)):
        assert bool((x[:, 1::2] == task.vocab - 1).all()) and bool((y[:, ::2] == IGNORE_INDEX).all())
        assert all(facts[k] == v for k, v in zip(x[:, ::2].reshape(-1).tolist(), y[:, 1::2].reshape(-1).tolist()))
    assert len(set(facts.values())) == len(facts)  # a one-to-one map


@pytest.mark.parametrize("name", MAD_TASKS)
def test_sets_are_fixed_by_the_seed(name):
    length = get_task(name).defaults.seq_len
    a = get_task(name, seed=3, **SMALL).dataset(TEST, length)
    b = get_task(name, seed=3, **SMALL).dataset(TEST, length)
    c = get_task(name, seed=4, **SMALL).dataset(TEST, length)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    task = get_task(name, seed=3, **SMALL)
    first, again = task.train_batch(5, 8, length), task.train_batch(5, 8, length)
    assert torch.equal(first.inputs, again.inputs)
    # one epoch of a 64-row set at batch 8 is 8 steps: every training row once
    rows = torch.cat([task.train_batch(s, 8, length).inputs for s in range(8)])
    assert torch.unique(rows, dim=0).shape[0] == torch.unique(task.dataset(TRAIN, length)[0], dim=0).shape[0]


@pytest.mark.parametrize("name", MAD_TASKS)
def test_two_training_steps_through_the_cli(name, tmp_path):
    result = CliRunner().invoke(app, ["run", name, "--steps", "2", "--batch-size", "4", "--eval-samples", "8",
                                      "--set", "d_model=16", "--set", "n_layers=1", "--task-set", "train_examples=32",
                                      "--device", "cpu", "--no-progress", "--tracking-uri",
                                      f"sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 0, result.output
    assert "status ok" in result.output


def test_mad_blocks_pair_every_mixer_with_a_swiglu_and_leave_the_data_alone():
    """blocks=mad: MAD's models (every mixer followed by a SwiGLU MLP, Mamba's state 4, attention
    with 16 heads) on the very sets of blocks=family, whose models stay each family's own."""
    family, mad = get_task("mad-recall", **SMALL), get_task("mad-recall", blocks="mad", **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(family.dataset(TEST, 128), mad.dataset(TEST, 128)))
    assert family.settings_key() == mad.settings_key()  # one data cache entry for both
    mamba = build_model("mamba", vocab_size=mad.vocab_size, head=mad.head, **mad.defaults.model_defaults("mamba"))
    assert all(b.mlp.kind == "swiglu" and b.mixer.d_state == 4 for b in mamba.blocks)
    attention = mad.defaults.model_defaults("transformer")
    assert attention["n_heads"] == 16 and attention["mlp"] == "swiglu"
    plain = build_model("mamba", vocab_size=family.vocab_size, head=family.head,
                        **family.defaults.model_defaults("mamba"))
    assert all(b.mlp is None and b.mixer.d_state == 16 for b in plain.blocks)
    for name in ("transformer", "transformer++", "transformer-abs", "hyena", "hybrid"):  # every family builds
        build_model(name, vocab_size=mad.vocab_size, head=mad.head, **mad.defaults.model_defaults(name))


def test_a_run_records_its_blocks_and_bad_blocks_are_one_line(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    result = CliRunner().invoke(app, ["run", "mad-compression", "--steps", "2", "--batch-size", "4", "--eval-samples",
                                      "8", "--set", "d_model=16", "--task-set", "train_examples=32", "--task-set",
                                      "blocks=mad", "--device", "cpu", "--no-progress", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("mad-compression").experiment_id])
    assert run.data.params["task.blocks"] == "mad" and run.data.params["model.mlp"] == "swiglu"
    bad = CliRunner().invoke(app, ["run", "mad-compression", "--task-set", "blocks=big", "--device", "cpu"])
    assert bad.exit_code == 2 and "blocks must be one of family, mad, got 'big'" in bad.stderr


def test_list_tasks_shows_the_six_mad_tasks():
    listed = CliRunner().invoke(app, ["list", "tasks"]).output
    assert all(name in listed for name in MAD_TASKS)


def test_bad_mad_settings_are_one_line():
    result = CliRunner().invoke(app, ["run", "mad-recall", "--seq-len", "127", "--device", "cpu"])
    assert result.exit_code == 2 and "takes even lengths" in result.stderr
    result = CliRunner().invoke(app, ["run", "mad-selective-copying", "--seq-len", "32", "--task-set", "tokens=16"])
    assert result.exit_code == 2 and "needs length > 2·tokens + 1" in result.stderr


def test_the_mad_grid_is_madss_cells_times_its_optimiser_points():
    from seqbench.harness.config import RunConfig
    from seqbench.harness.sweep.mad import GRID, mad_children

    base = RunConfig(task="mad-recall", device="cpu", experiment="mad")
    full = mad_children(base, [("mamba", None)], list(GRID), "full", "cpu")
    cells = {name: 1 + sum(len(v) for v in GRID[name][1].values()) for name in GRID}
    assert cells == {"mad-recall": 11, "mad-noisy-recall": 14, "mad-fuzzy-recall": 11, "mad-selective-copying": 13,
                     "mad-compression": 11, "mad-memorization": 6}
    assert len(full) == 6 * sum(cells.values()) and len({c.config_hash for c in full}) == len(full)
    # one spec and log file per child: recall, noisy and fuzzy recall share labels and lengths
    from seqbench.harness.sweep.plan import child_stem

    assert len({child_stem(c) for c in full}) == len(full)
    recall_1k = [c for c in full if c.config.task == "mad-recall" and c.seq_len == 1024]
    assert {(c.config.lr, c.config.weight_decay) for c in recall_1k} == {(lr, wd) for lr in (1e-4, 5e-4, 1e-3)
                                                                         for wd in (0.0, 0.1)}
    assert all(c.config.task_kwargs == {"vocab": 16, "train_examples": 12_800} and c.tags["mad.setting"] == "seq_len=1024"
               for c in recall_1k)
    assert all(c.config.eval_lengths == [c.seq_len] and c.config.eval_samples == 1280 for c in full)
    quick = mad_children(replace_kwargs(base, {"train_examples": 64}), [("mamba", None), ("hyena", None)],
                         list(GRID), "quick", "cpu")
    assert len(quick) == 12 and all(c.config.task_kwargs["train_examples"] == 64 for c in quick)


def replace_kwargs(config, task_kwargs):
    from dataclasses import replace

    return replace(config, task_kwargs=task_kwargs)


def test_sweep_mad_trains_every_cell_and_scores_the_best_optimiser_point(tmp_path, monkeypatch):
    """`seqbench sweep mad` on two tasks: compression over MAD's six optimiser points (grid
    baseline) for Mamba; the report's cell is the best of the six runs, its task score that cell,
    and the MAD score the mean of the two tasks."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mad.db"
    result = CliRunner().invoke(app, ["sweep", "mad", "--model", "mamba", "--tasks", "mad-compression,mad-memorization",
                                      "--grid", "baseline", "--steps", "3", "--batch-size", "8", "--set", "d_model=16",
                                      "--set", "n_layers=1", "--task-set", "train_examples=32", "--jobs", "2",
                                      "--device", "cpu", "--no-progress", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mad").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`seqbench.sweep` = 'true'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 12 and {c.data.tags["status"] for c in children} == {"ok"}
    best = {task: max(c.data.metrics["accuracy/32"] for c in children if c.data.tags["task"] == task)
            for task in ("mad-compression", "mad-memorization")}
    report = (tmp_path / ".seqbench" / "sweeps" / parent.info.run_id / "report")
    rows = [line.split(",") for line in (report / "mad.csv").read_text().splitlines()[1:]]
    cells = {r[1]: (float(r[3]), int(r[5])) for r in rows}  # task -> (accuracy, optimiser points that finished)
    assert cells.keys() == best.keys()
    assert all(cells[t][0] == pytest.approx(v, rel=1e-5) and cells[t][1] == 6 for t, v in best.items())
    score = client.get_run(parent.info.run_id).data.metrics["mad_score/mamba"]
    assert score == pytest.approx(sum(best.values()) / 2, rel=1e-6)
    assert (report / "mad.png").stat().st_size > 0 and "| mamba |" in (report / "mad.md").read_text()
    assert "Blocks: family (each family's own block" in (report / "mad.md").read_text()
    again = CliRunner().invoke(app, ["report", "--sweep", parent.info.run_id, "--out", str(tmp_path / "again"),
                                     "--tracking-uri", uri])  # `seqbench report` knows a MAD sweep
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "mad.csv").read_text() == (report / "mad.csv").read_text()


def test_sweep_mad_refuses_what_its_grid_sets():
    result = CliRunner().invoke(app, ["sweep", "mad", "--seq-len", "128"])
    assert result.exit_code == 2 and "the MAD grid sets each cell's length" in result.stderr
    result = CliRunner().invoke(app, ["sweep", "mad", "--tasks", "mad-recall,recall"])
    assert result.exit_code == 2 and "not a MAD task: recall" in result.stderr
    result = CliRunner().invoke(app, ["sweep", "induction-heads"])
    assert result.exit_code == 2 and "--seq-len is required" in result.stderr
    result = CliRunner().invoke(app, ["sweep", "mad", "--task-set", "colour=3"])
    assert result.exit_code == 2 and "--task-set colour: no MAD task takes it" in result.stderr
    result = CliRunner().invoke(app, ["sweep", "mad", "--tasks", "mad-selective-copying", "--task-set", "tokens=eight"])
    assert result.exit_code == 2 and "tokens" in result.stderr  # checked against the task that takes it
    # a setting only one MAD task takes fixes it there (and the others run as they are)
    result = CliRunner().invoke(app, ["sweep", "mad", "--task-set", "tokens=8", "--grid", "quick", "--dry-run"])
    assert result.exit_code == 0, result.output


def test_generated_sets_are_kept_in_the_data_cache(data_cache):
    task = get_task("mad-recall", seed=5, **SMALL)
    inputs, targets = task.dataset(TEST, 128)
    (saved,) = (data_cache / "mad").glob("mad-recall-*.pt")
    again = get_task("mad-recall", seed=5, **SMALL).dataset(TEST, 128)  # read back, not made again
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)
    get_task("mad-recall", seed=6, **SMALL).dataset(TEST, 128)
    assert len(list((data_cache / "mad").glob("mad-recall-*.pt"))) == 2  # another seed: another set
    saved.write_bytes(b"truncated")  # a damaged file is made again, not trusted
    assert torch.equal(get_task("mad-recall", seed=5, **SMALL).dataset(TEST, 128)[0], inputs)


def test_a_sweep_refuses_children_that_would_share_a_spec_file(tmp_path):
    """Children sharing a spec and log file would run each other's config (MAD's recall tasks have
    one label and length per cell): the sweep refuses them before anything runs."""
    import dataclasses

    from seqbench.core.errors import SeqbenchError
    from seqbench.harness.config import RunConfig
    from seqbench.harness.sweep import Sweep
    from seqbench.harness.sweep.mad import GRID, mad_children

    base = RunConfig(task="mad-recall", device="cpu", experiment="mad", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    children = mad_children(base, [("mamba", None)], list(GRID), "quick", "cpu")
    Sweep(base, [("mamba", None)], [], children=children)  # their own stems: accepted
    with pytest.raises(SeqbenchError, match="share the file name 'mamba,baseline,lr=0.0005,wd=0-128'"):
        Sweep(base, [("mamba", None)], [], children=[dataclasses.replace(c, stem_parts=()) for c in children])
