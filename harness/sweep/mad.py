"""The MAD protocol as one sweep (`seqbench sweep mad`): every MAD task over its grid of
difficulties, each cell trained at every point of MAD's learning-rate x weight-decay grid.

MAD varies one setting of a task's baseline at a time (length, vocabulary, training-set size, and
the noise share or tokens to copy where the task has them; the values below are MAD's task
configs), trains each cell at lr 1e-4, 5e-4, 1e-3 x weight decay 0, 0.1, keeps the best of the six,
and scores a task by the mean accuracy over its cells; the MAD score is the mean over the tasks
(harness.report.mad). `--grid baseline` keeps only each task's baseline cell (six optimiser
points), `--grid quick` its baseline at MAD's middle point (lr 5e-4, no weight decay).
"""

from __future__ import annotations

from dataclasses import replace

from seqbench.core.errors import SeqbenchError
from seqbench.harness.config import RunConfig
from seqbench.harness.sweep.plan import Child, model_label
from seqbench.tasks.mad import FixedSetTask

# task: (baseline setting, {setting: values it takes in turn}); "seq_len" is the run's length
GRID: dict[str, tuple[dict, dict[str, list]]] = {
    "mad-recall": ({"seq_len": 128, "vocab": 16, "train_examples": 12_800},
                   {"vocab": [32, 64, 128], "seq_len": [256, 512, 1024], "train_examples": [6400, 3200, 1600, 800]}),
    "mad-noisy-recall": ({"seq_len": 128, "vocab": 32, "noise_vocab": 16, "frac_noise": 0.2, "train_examples": 12_800},
                         {"vocab": [48, 80, 144], "seq_len": [256, 512, 1024],
                          "train_examples": [6400, 3200, 1600, 800], "frac_noise": [0.4, 0.6, 0.8]}),
    "mad-fuzzy-recall": ({"seq_len": 128, "vocab": 16, "k_motif": 3, "v_motif": 3, "train_examples": 12_800},
                         {"vocab": [32, 64, 128], "seq_len": [256, 512, 1024],
                          "train_examples": [6400, 3200, 1600, 800]}),
    "mad-selective-copying": ({"seq_len": 256, "vocab": 16, "tokens": 16, "train_examples": 12_800},
                              {"vocab": [32, 64, 128], "seq_len": [512, 1024],
                               "train_examples": [6400, 3200, 1600, 800], "tokens": [32, 64, 96]}),
    "mad-compression": ({"seq_len": 32, "vocab": 16, "train_examples": 12_800},
                        {"vocab": [32, 64, 128], "seq_len": [64, 128, 256], "train_examples": [6400, 3200, 1600, 800]}),
    "mad-memorization": ({"seq_len": 32, "vocab": 256, "train_examples": 256},
                         {"vocab": [512, 1024, 2048, 4096, 8192]}),
}
LEARNING_RATES = (1e-4, 5e-4, 1e-3)
WEIGHT_DECAYS = (0.0, 0.1)
GRIDS = ("full", "baseline", "quick")
# tags of a MAD child: its cell (task setting) and optimiser point
SETTING, LR, WD = "mad.setting", "mad.lr", "mad.weight_decay"


def cells(task: str, grid: str) -> list[tuple[str, dict]]:
    """(name, settings) of the task's cells: "baseline", then "vocab=32", "seq_len=256", ..."""
    baseline, changes = GRID[task]
    found = [("baseline", dict(baseline))]
    if grid == "full":
        found += [(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}", {**baseline, key: value})
                  for key, values in changes.items() for value in values]
    return found


def optimiser_points(grid: str) -> list[tuple[float, float]]:
    return [(5e-4, 0.0)] if grid == "quick" else [(lr, wd) for lr in LEARNING_RATES for wd in WEIGHT_DECAYS]


def mad_children(base: RunConfig, models: list[tuple[str, str | None]], tasks: list[str], grid: str,
                 device_type: str) -> list[Child]:
    """Every (model, task, cell, optimiser point) of the sweep, each config resolved and checked.
    `base.task_kwargs` (--task-set) fixes a setting in every cell of the tasks that take it."""
    from seqbench.tasks import get_task, task_settings

    if grid not in GRIDS:
        raise SeqbenchError(f"--grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    unknown = [t for t in tasks if t not in GRID]
    if unknown:
        raise SeqbenchError(f"not a MAD task: {', '.join(unknown)}; the suite's tasks: {', '.join(GRID)}")
    fixed = dict(base.task_kwargs)
    unused = [k for k in fixed if not any(k in task_settings(t) for t in tasks)]
    if unused:
        raise SeqbenchError(f"--task-set {', '.join(unused)}: no MAD task takes it")
    children = []
    for task_name in tasks:
        for cell, settings in cells(task_name, grid):
            settings = {**settings, **{k: v for k, v in fixed.items() if k in task_settings(task_name)}}
            seq_len = settings.pop("seq_len")
            task = get_task(task_name, seed=base.seed, **settings)
            for family, size in models:
                for lr, wd in optimiser_points(grid):
                    config = replace(base, task=task_name, model=family, size=size, seq_len=seq_len, lr=lr,
                                     weight_decay=wd, task_kwargs=settings, eval_lengths=[seq_len],
                                     eval_samples=FixedSetTask.test_examples, resume=False)  # the whole test set
                    resolved = config.resolve(task, device_type)
                    label = f"{model_label(family, size)},{cell},lr={lr:g},wd={wd:g}"
                    children.append(Child(config=config, label=label, seq_len=seq_len, config_hash=resolved.hash(),
                                          params=resolved.to_params(),
                                          tags={SETTING: cell, LR: f"{lr:g}", WD: f"{wd:g}"},
                                          stem_parts=(task_name,)))
    return children
