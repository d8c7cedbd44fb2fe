"""The report of a MAD sweep (`seqbench sweep mad`): per model, the accuracy of every task cell
(the best of MAD's learning-rate x weight-decay points), each task's score (the mean over its
cells) and the MAD score (the mean over the tasks), with each model's parameters and state size.

Written as mad.md, mad.csv (one row per model, task and cell) and mad.png (task scores per model),
each through a temporary file, and logged to the sweep's parent run under report/.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from seqbench.core.errors import SeqbenchError
from seqbench.harness import records
from seqbench.harness.report.query import _client, _children, run_label
from seqbench.harness.report.write import _write_text
from seqbench.harness.sweep.mad import GRID, LR, SETTING, WD
from seqbench.harness.tracking import resolve_tracking_uri
from seqbench.tasks.mad import BLOCKS

FILES = ("mad.md", "mad.csv", "mad.png")


@dataclass
class Cell:
    model: str
    task: str
    setting: str
    accuracy: float | None  # the best over the optimiser points that finished; None: none did
    best_at: str  # "lr=5e-4 wd=0"
    points: int  # optimiser points that finished
    status: str  # ok, or what the points that did not finish ended as


@dataclass
class MadReport:
    sweep_run_id: str
    cells: list[Cell]
    models: list[str]
    tasks: list[str]
    parameters: dict[str, str] = field(default_factory=dict)  # model -> count (at the baseline recall cell)
    state: dict[str, str] = field(default_factory=dict)  # model -> state size at that cell's length
    blocks: str = "family"  # the models' blocks (task setting `blocks`; runs from before it: family)

    def task_score(self, model: str, task: str) -> float | None:
        scores = [c.accuracy for c in self.cells if c.model == model and c.task == task]
        if not scores or any(s is None for s in scores):
            return None  # a cell without a result: no score rather than a flattering one
        return statistics.fmean(scores)

    def mad_score(self, model: str) -> float | None:
        scores = [self.task_score(model, t) for t in self.tasks]
        return None if any(s is None for s in scores) else statistics.fmean(scores)


def collect(tracking_uri: str | None, sweep_run_id: str) -> MadReport:
    """The MAD report of the sweep whose parent run is `sweep_run_id`."""
    client = _client(resolve_tracking_uri(tracking_uri))
    parent = client.get_run(sweep_run_id)
    if parent.data.tags.get(records.TASK) != "mad":
        raise SeqbenchError(f"run {sweep_run_id} is not a MAD sweep (seqbench sweep mad)")
    by_cell: dict[tuple[str, str, str], list] = {}
    parameters, state, blocks = {}, {}, set()
    for run in _children(client, parent):
        tags = run.data.tags
        if SETTING not in tags:
            continue
        blocks.add(run.data.params.get("task.blocks", "family"))
        model = run_label(tags, run.data.params)
        by_cell.setdefault((model, tags[records.TASK], tags[SETTING]), []).append(run)
        if tags[records.TASK] == "mad-recall" and tags[SETTING] == "baseline":
            parameters.setdefault(model, run.data.params.get("n_parameters", "-"))
            state.setdefault(model, run.data.params.get("state_size", "-"))
    cells = []
    for (model, task, setting), runs in sorted(by_cell.items()):
        done = [r for r in runs if r.data.tags.get(records.STATUS) == "ok"
                and f"accuracy/{r.data.tags[records.SEQ_LEN]}" in r.data.metrics]
        best = max(done, key=lambda r: r.data.metrics[f"accuracy/{r.data.tags[records.SEQ_LEN]}"], default=None)
        others = sorted({r.data.tags.get(records.STATUS, "?") for r in runs} - {"ok"})
        cells.append(Cell(model=model, task=task, setting=setting,
                          accuracy=None if best is None else best.data.metrics[f"accuracy/{best.data.tags[records.SEQ_LEN]}"],
                          best_at="-" if best is None else f"lr={best.data.tags[LR]} wd={best.data.tags[WD]}",
                          points=len(done), status="ok" if not others else ", ".join(others)))
    if not cells:
        raise SeqbenchError(f"sweep {sweep_run_id} has no MAD cells yet")
    order = [m for m in parent.data.tags.get(records.MODELS, "").split(",") if m]
    models = sorted({c.model for c in cells}, key=lambda m: (order.index(m) if m in order else len(order), m))
    tasks = [t for t in GRID if any(c.task == t for c in cells)]
    return MadReport(sweep_run_id, cells, models, tasks, parameters, state, ", ".join(sorted(blocks)))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def render_markdown(report: MadReport) -> str:
    short = {t: t.removeprefix("mad-") for t in report.tasks}
    lines = [f"# MAD: sweep {report.sweep_run_id}", "",
             "Accuracy (%) on each task's test set: per task the mean over its cells of the best of the "
             "learning-rate x weight-decay points; MAD score the mean over the tasks. A cell with no finished "
             "point leaves its task and the MAD score without a number.", "",
             f"Blocks: {report.blocks} ({BLOCKS.get(report.blocks, 'mixed')}).", "",
             "| model | parameters | state | " + " | ".join(short.values()) + " | MAD score |",
             "|---|---|---|" + "---|" * len(short) + "---|"]
    for model in report.models:
        lines.append(f"| {model} | {report.parameters.get(model, '-')} | {report.state.get(model, '-')} | "
                     + " | ".join(_percent(report.task_score(model, t)) for t in report.tasks)
                     + f" | {_percent(report.mad_score(model))} |")
    lines += ["", "Parameters and state size (numbers kept per sequence, at length 128) at the baseline "
              "in-context recall cell.", "", "## Every cell", "",
              "| model | task | setting | accuracy | best at | points | status |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {c.model} | {c.task} | {c.setting} | {_percent(c.accuracy)} | {c.best_at} | {c.points} | {c.status} |"
              for c in report.cells]
    return "\n".join(lines) + "\n"


def render_csv(report: MadReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "task", "setting", "accuracy", "best_at", "points", "status"])
    for c in report.cells:
        writer.writerow([c.model, c.task, c.setting, "" if c.accuracy is None else f"{c.accuracy:.6g}", c.best_at,
                         c.points, c.status])
    return out.getvalue()


def plot(report: MadReport, path: Path) -> None:
    """Task scores per model as grouped bars, the MAD score last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seqbench.harness.report.plots import _save_png

    labels = [t.removeprefix("mad-") for t in report.tasks] + ["MAD score"]
    figure, axis = plt.subplots(figsize=(1.4 * len(labels) + 2, 4))
    width = 0.8 / max(1, len(report.models))
    for i, model in enumerate(report.models):
        values = [report.task_score(model, t) for t in report.tasks] + [report.mad_score(model)]
        xs = [x + i * width for x in range(len(labels))]
        axis.bar(xs, [0 if v is None else 100 * v for v in values], width, label=model)
        for x, v in zip(xs, values):
            if v is None:  # a cell with no finished point: say so rather than draw a zero
                axis.text(x, 2, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
    axis.set_xticks([x + width * (len(report.models) - 1) / 2 for x in range(len(labels))], labels, rotation=20)
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 105)
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axis.set_title("MAD: task scores (best optimiser point per cell, mean over cells)")
    figure.tight_layout()
    _save_png(figure, path)


def write_mad_report(out_dir: Path, tracking_uri: str | None, sweep_run_id: str, log_to_parent: bool = True) -> MadReport:
    """Collect, write mad.md / mad.csv / mad.png into `out_dir` and log them to the parent run."""
    report = collect(tracking_uri, sweep_run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "mad.md", render_markdown(report))
    _write_text(out_dir / "mad.csv", render_csv(report))
    plot(report, out_dir / "mad.png")
    if log_to_parent:
        client = _client(resolve_tracking_uri(tracking_uri))
        for name in FILES:
            client.log_artifact(sweep_run_id, str(out_dir / name), "report")
        for model in report.models:
            score = report.mad_score(model)
            if score is not None:
                client.log_metric(sweep_run_id, f"mad_score/{model.replace(':', '-')}", score)
    return report
