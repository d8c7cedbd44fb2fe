"""The `seqbench` command line (typer).

    seqbench run TASK [--model M] [--modality X] [--data SRC] [--seq-len L] [--steps N] [--nproc N] ...
    seqbench sweep TASK --model M1,M2 --seq-len L1,L2 [--jobs K] [--launcher local|slurm ...]
    seqbench list tasks|models|modalities
    seqbench report [--sweep ID | --experiment NAME] --out DIR [--format md,csv,png,json]
    seqbench ui [--tracking-uri URI] [--port P]
    seqbench bench kernels [--out FILE]
    seqbench --version | --install-completion | --show-completion

Bad input (unknown name, impossible length, missing file, ...) prints one line on stderr and
exits with code 2; a finished run exits 0, a run that ended otherwise (oom, diverged,
interrupted) exits 1 after its status is recorded. Every next step the CLI suggests (open the UI,
write the report, resume) is printed as a command that works as printed: with the tracking store
and experiment of the command that printed it.
"""

from __future__ import annotations

import gc
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from seqbench.harness.config import RunConfig, format_length, parse_length, parse_lengths
from seqbench.harness.tracking import store_flags
from seqbench.harness.config_file import apply_config_file, config_option
from seqbench.harness.data_cli import data_app
from seqbench.core.errors import SeqbenchError
from seqbench.harness.user_errors import user_errors

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Benchmark long-sequence models (Mamba, Transformer, Hyena) on text, audio and DNA.")
bench_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Speed benchmarks (scripts, not tests).")
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from seqbench import __version__

        typer.echo(f"seqbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print `seqbench <version>` and exit.")) -> None:
    """Benchmark long-sequence models (Mamba, Transformer, Hyena) on text, audio and DNA."""


def _parse_settings(pairs: list[str]) -> dict:
    """--set / --task-set pairs: d_model=128 n_layers=4 -> {"d_model": 128, "n_layers": 4}
    (ints, floats, true/false, else strings)."""
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SeqbenchError(f"--set and --task-set take key=value, got {pair!r}")
        for cast in (int, float):
            try:
                kwargs[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = {"true": True, "false": False}.get(value.lower(), value)
    return kwargs


# Options `run` and `sweep` share (one definition each).
# Every option shows its default in --help; where the default is the task's, the help says so
# (`seqbench list tasks` shows each task's length, steps and batch).
TASK_DEFAULT = "default: the task's (see `seqbench list tasks`)"
MODALITY = typer.Option(None, help="Modality; default: the task's.")
DATA = typer.Option(None, help="The modality's source: a file, folder or dataset name; "
                               "default: the modality's generated sample data (none for generated tasks).")
STEPS = typer.Option(None, help=f"Training steps; {TASK_DEFAULT}.")
BATCH_SIZE = typer.Option(None, help=f"Training batch size; {TASK_DEFAULT}.")
LR = typer.Option(None, help="Peak learning rate; default: the task's.")
SEED = typer.Option(0, help="Seed for the data and the initialisation.", show_default=True)
DEVICE = typer.Option("auto", help="auto (CUDA if present), cpu or cuda.", show_default=True)
EVAL_SAMPLES = typer.Option(256, help="Evaluation sequences per length (fewer at very long lengths).",
                            show_default=True)
MODEL_SETTINGS = typer.Option([], "--set", help="Model setting key=value, e.g. --set d_model=128; "
                                                "default: the task's size for the family.")
TASK_SETTINGS = typer.Option([], "--task-set", help="Task setting key=value, e.g. --task-set kv=32; "
                                                    "default: the task's own defaults.")
TRACKING_URI = typer.Option(None, help="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
EXPERIMENT = typer.Option(None, help="MLflow experiment; default: the task's name.")
PROGRESS = typer.Option(True, help="Show progress bars.", show_default=True)
PRECISION = typer.Option("auto", help="auto (bf16 autocast on CUDA, fp32 on the CPU), bf16 or fp32; recorded as param dtype.")
TRAIN_STEP = typer.Option("auto", help="auto (a captured CUDA-graph step on one GPU, else eager), eager or captured.")
DETERMINISTIC = typer.Option(
    False, help="PyTorch's deterministic algorithms, cuDNN's deterministic choices and cuBLAS's fixed workspace, for "
                "runs of one seed that repeat bitwise; ops without a deterministic version are recorded in the run "
                "(tag nondeterministic_ops).", show_default=True)
EVAL_CHUNK = typer.Option(
    "auto", help="Streamed evaluation of a model whose state has a constant size (Mamba): each sequence in chunks "
                 "of this length, the state carried across them (the same metrics); auto: only where one forward "
                 "runs out of memory; 0: never.", show_default=True)
LOSS_BY_POSITION = typer.Option(
    False, "--loss-by-position", help="Also log each evaluation length's loss per power-of-two bin of positions "
                                      "(artifact loss_by_position/<L>.json): the loss against context.", show_default=True)
DRY_RUN = typer.Option(False, "--dry-run", help="Resolve everything (data, config, model, device) and print what "
                                                "would run; train nothing, record nothing.", show_default=True)


def _base_config(task: str, model: str, **options) -> RunConfig:
    """A RunConfig from the shared options: names checked before anything heavy is imported, then
    the task's settings against its signature and the tracking store (a server must answer)."""
    from seqbench.core.registry import registry
    from seqbench.harness.tracking import check_server, resolve_tracking_uri

    registry("tasks").target(task)
    eval_lengths = options.pop("eval_lengths")
    options["eval_chunk"] = _eval_chunk(options.pop("eval_chunk"))
    config = RunConfig(
        task=task, model=model, eval_lengths=parse_lengths(eval_lengths) if eval_lengths else None,
        model_kwargs=_parse_settings(options.pop("set_")), task_kwargs=_parse_settings(options.pop("task_set")),
        **options,
    )
    check_server(resolve_tracking_uri(config.tracking_uri))
    from seqbench.tasks import check_task_settings

    check_task_settings(task, config.task_kwargs)
    return config


def _eval_chunk(text: str) -> int | None:
    """--eval-chunk: auto -> None, 0 -> 0 (never), else a length."""
    if text.strip().lower() == "auto":
        return None
    if text.strip() == "0":
        return 0
    try:
        return parse_length(text)
    except SeqbenchError:
        raise SeqbenchError(f"--eval-chunk takes a length (64k, 2^16), 0 (never) or auto, got {text!r}") from None


def _output_path(path: Path | None, option: str) -> None:
    """A file the command will write at the end: refused now, not after the work, when it cannot be."""
    if path is None:
        return
    if path.is_dir():
        raise SeqbenchError(f"{option} {path} is a folder; give a file name, e.g. {path / 'run.json'}")
    if not path.parent.is_dir():
        raise SeqbenchError(f"{option} {path}: folder {path.parent} does not exist")


@app.command()
@user_errors
def run(
    ctx: typer.Context,
    task: str = typer.Argument(..., help="Task name (see `seqbench list tasks`)."),
    model: str = typer.Option("mamba", help="Model family (see `seqbench list models`).", show_default=True),
    size: Optional[str] = typer.Option(None, help="Named size of the family, e.g. 130m (see `seqbench list models`); "
                                                  "default: the task's size for the family."),
    modality: Optional[str] = MODALITY,
    data: Optional[str] = DATA,
    seq_len: Optional[str] = typer.Option(None, help="Training length: 256, 1k, 64k, 1m, 2^20 (up to 2^40); "
                                                     "default: the task's (induction-heads: 256; "
                                                     "see `seqbench list tasks`)."),
    steps: Optional[int] = STEPS,
    batch_size: Optional[int] = BATCH_SIZE,
    lr: Optional[float] = LR,
    seq_warmup_start: Optional[str] = typer.Option(
        None, help="Sequence-length warmup: first length (doubles up to --seq-len); default: none, no warmup."),
    seq_warmup_every: int = typer.Option(0, help="Sequence-length warmup: steps between doublings (batch halves).",
                                         show_default=True),
    seed: int = SEED,
    device: str = DEVICE,
    eval_lengths: Optional[str] = typer.Option(
        None, help="Comma-separated evaluation lengths, e.g. 256,1k,16k; default: the task's (on the CPU only "
                   "those up to 4x --seq-len, and --seq-len itself)."),
    eval_samples: int = EVAL_SAMPLES,
    eval_chunk: str = EVAL_CHUNK,
    loss_by_position: bool = LOSS_BY_POSITION,
    set_: list[str] = MODEL_SETTINGS,
    task_set: list[str] = TASK_SETTINGS,
    tracking_uri: Optional[str] = TRACKING_URI,
    experiment: Optional[str] = EXPERIMENT,
    resume: bool = typer.Option(False, help="Continue from this config's checkpoint if there is one.",
                                show_default=True),
    checkpoint_every: int = typer.Option(0, help="Steps between periodic checkpoints (0: every --checkpoint-minutes).",
                                         show_default=True),
    checkpoint_minutes: float = typer.Option(
        5.0, help="Minutes between periodic checkpoints when --checkpoint-every is 0.", show_default=True),
    output_json: Optional[Path] = typer.Option(
        None, help="Also write the run's status, config, versions, device and metrics to this JSON file "
                   "(README: Machine-readable results); default: none."),
    progress: bool = PROGRESS,
    precision: str = PRECISION,
    train_step: str = TRAIN_STEP,
    deterministic: bool = DETERMINISTIC,
    log_every: int = typer.Option(10, help="Steps between logged losses (each a read-back from the GPU)."),
    nproc: int = typer.Option(
        1, help="Data-parallel processes on this host (runs torchrun); --batch-size is per process.", show_default=True),
    config_file: Optional[Path] = config_option(),
    dry_run: bool = DRY_RUN,
) -> None:
    """Train and evaluate one model on one task at one length, tracked in MLflow."""
    from seqbench.core.registry import registry

    registry("models").target(model)  # unknown names fail before anything heavy is imported
    config = _base_config(
        task, model, size=size, modality=modality, data=data, seq_len=parse_length(seq_len) if seq_len else None,
        steps=steps, batch_size=batch_size, lr=lr,
        seq_warmup_start=parse_length(seq_warmup_start) if seq_warmup_start else None,
        seq_warmup_every=seq_warmup_every, seed=seed, device=device, eval_lengths=eval_lengths,
        eval_samples=eval_samples, eval_chunk=eval_chunk, loss_by_position=loss_by_position, set_=set_,
        task_set=task_set, tracking_uri=tracking_uri,
        experiment=experiment, resume=resume, checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes,
        precision=precision, train_step=train_step, deterministic=deterministic, log_every=log_every,
    )
    config = apply_config_file(ctx, config)  # the file's settings that have no flag, its [set] and [task_set]
    if checkpoint_every < 0 or checkpoint_minutes <= 0:
        raise SeqbenchError(f"--checkpoint-every must be >= 0 and --checkpoint-minutes > 0, got "
                            f"{checkpoint_every} and {checkpoint_minutes}")
    _output_path(output_json, "--output-json")
    if dry_run:
        from seqbench.harness.dry_run import describe_run

        if nproc < 1:
            raise SeqbenchError(f"--nproc must be >= 1, got {nproc}")
        _print_dry_run(describe_run(config, nproc))
        return
    if nproc != 1:  # after the cheap checks: bad input fails here once, not in every rank
        _exec_torchrun(nproc)
    from seqbench.harness.runner import run as run_one

    result = run_one(config, console=err, progress=progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        _print_result(result, ctx)
        if output_json is not None:
            from seqbench.harness.results import write_run_json

            write_run_json(output_json, result)
            out.print(f"wrote {output_json}")
    if result.status != "ok":
        raise typer.Exit(1)


def _print_dry_run(rows: list[tuple[str, str]], children: list[dict[str, str]] | None = None) -> None:
    """A dry run's plan on stdout: what would run, then (a sweep) one row per child."""
    table = Table(title="dry run: nothing trained or recorded", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)
    if children:
        per_child = Table(title="children, in the order they start", title_justify="left")
        for column in children[0]:
            per_child.add_column(column, no_wrap=column == "config hash", overflow="fold")
        for child in children:
            per_child.add_row(*child.values())
        out.print(per_child)


def _exec_torchrun(nproc: int) -> None:
    """Replace this process by `torchrun --standalone --nproc-per-node N -m seqbench.harness.cli <this command
    line without --nproc>` (standalone: a free local rendezvous port, so runs on one host never clash)."""
    if nproc < 1:
        raise SeqbenchError(f"--nproc must be >= 1, got {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise SeqbenchError("--nproc starts torchrun itself; under torchrun leave it out")
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "seqbench.harness.cli", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


@app.command()
@user_errors
def sweep(
    ctx: typer.Context,
    task: str = typer.Argument(..., help="Task name (see `seqbench list tasks`)."),
    model: str = typer.Option("mamba,transformer,hyena", help="Comma-separated families, each optionally family:size.",
                              show_default=True),
    seq_len: Optional[str] = typer.Option(
        None, help="Comma-separated training lengths, e.g. 256,1k,4k,16k,64k,256k,1m; no default: required, "
                   "except by `sweep mad` (its grid sets the lengths)."),
    modality: Optional[str] = MODALITY,
    data: Optional[str] = DATA,
    steps: Optional[int] = STEPS,
    batch_size: Optional[int] = BATCH_SIZE,
    batch_tokens: Optional[str] = typer.Option(
        None, help="Tokens per training batch at every length (batch = tokens // length, at least 1), e.g. 64k; "
                   "default: none, the task's batch (or --batch-size) at every length."),
    lr: Optional[float] = LR,
    seed: int = SEED,
    device: str = DEVICE,
    eval_lengths: Optional[str] = typer.Option(None, help="Evaluation lengths of every child; default: its own length."),
    eval_samples: int = EVAL_SAMPLES,
    eval_chunk: str = EVAL_CHUNK,
    set_: list[str] = MODEL_SETTINGS,
    task_set: list[str] = TASK_SETTINGS,
    time_budget: Optional[float] = typer.Option(
        None, help="Seconds one child may run; past it the child is stopped (timeout); default: no limit."),
    jobs: int = typer.Option(1, help="Children run at once: one per GPU where there are several, else CPU processes.",
                             show_default=True),
    longest_first: bool = typer.Option(
        False, help="Start the longest lengths first: with --jobs K the slowest children do not start last, "
                    "but a failure no longer skips a family's longer lengths (they ran first).", show_default=True),
    resume: bool = typer.Option(False, help="Continue the same sweep: skip children that finished, retry the rest.",
                                show_default=True),
    seeds: Optional[str] = typer.Option(
        None, help="Comma-separated seeds: every (model, length) runs once per seed and the report gives "
                   "each cell's mean and spread, e.g. 0,1,2; default: --seed alone."),
    retry: Optional[str] = typer.Option(
        None, help="With --resume, also run again the children that ended with these final statuses "
                   "(comma-separated of oom, diverged, ok), e.g. after other work on a shared GPU ran them out of memory; "
                   "default: none, a final status is kept."),
    report_dir: Optional[Path] = typer.Option(
        None, "--report", help="Also write the report (table, plots) here; default: only to the parent run's "
                               "artifacts (and .seqbench/sweeps/<parent run>/report)."),
    tracking_uri: Optional[str] = TRACKING_URI,
    experiment: Optional[str] = EXPERIMENT,
    progress: bool = PROGRESS,
    precision: str = PRECISION,
    train_step: str = TRAIN_STEP,
    deterministic: bool = DETERMINISTIC,
    launcher: str = typer.Option(
        "local", help="Where children run: local (processes here) or slurm (a job array via submitit).",
        show_default=True),
    partition: Optional[str] = typer.Option(None, help="Slurm partition of the jobs (sbatch --partition); "
                                                       "default: the cluster's."),
    gpus_per_job: Optional[int] = typer.Option(None, help="GPUs per Slurm job (sbatch --gpus-per-node); "
                                                          "default: none asked (the partition's)."),
    max_parallel: Optional[int] = typer.Option(None, help="Slurm jobs of the array running at once "
                                                          "(sbatch --array=...%K); default: no limit."),
    time_limit: Optional[int] = typer.Option(None, "--time", help="Slurm time limit per job in minutes (sbatch --time); default 60."),
    grid: str = typer.Option("full", help="mad only: full (every task cell x MAD's 3 lr x 2 weight decays), "
                                          "baseline (each task's baseline cell x the 6 points) or quick (baseline, "
                                          "lr 5e-4, no decay).", show_default=True),
    tasks: Optional[str] = typer.Option(None, help="mad only: comma-separated MAD tasks; default: all six."),
    config_file: Optional[Path] = config_option(),
    dry_run: bool = DRY_RUN,
) -> None:
    """Run every (model, length), each child in its own process (or Slurm job) under one parent MLflow run.
    `seqbench sweep mad` runs the MAD suite instead: every MAD task over its grid (README)."""
    from seqbench.harness.report import check_out_dir
    from seqbench.harness.slurm import SlurmOptions
    from seqbench.harness.sweep import Sweep
    from seqbench.harness.sweep.plan import parse_models

    if report_dir is not None:
        check_out_dir(report_dir, "--report")  # now, not after the sweep's hours
    models = parse_models(model)
    suite = task == MAD_SUITE
    if suite and (seq_len or eval_lengths or lr is not None or modality or data or batch_tokens):
        raise SeqbenchError("sweep mad: the MAD grid sets each cell's length, evaluation, learning rate and data; "
                            "leave out --seq-len, --eval-lengths, --lr, --modality, --data and --batch-tokens")
    if seeds and suite:
        raise SeqbenchError("--seeds is for a sweep of one task; sweep mad takes --seed")
    if retry and not resume:
        raise SeqbenchError("--retry is for --resume: it names the finished children a resumed sweep runs again")
    if not suite and (grid != "full" or tasks):
        raise SeqbenchError("--grid and --tasks are for `seqbench sweep mad`")
    if not suite and not seq_len:
        raise SeqbenchError("--seq-len is required: comma-separated training lengths, e.g. 256,1k,4k")
    base = _base_config(
        "mad-recall" if suite else task, models[0][0], modality=modality, data=data, steps=steps,
        batch_size=batch_size, lr=lr, seed=seed,
        device=device, eval_lengths=eval_lengths, eval_samples=eval_samples, eval_chunk=eval_chunk, set_=set_,
        task_set=[] if suite else task_set,  # the suite's settings are checked per MAD task (mad_children)
        tracking_uri=tracking_uri, experiment=experiment, precision=precision, train_step=train_step,
        deterministic=deterministic,
    )
    if suite:
        base = replace(base, task_kwargs=_parse_settings(task_set))
    base = apply_config_file(ctx, base)  # the file's settings that have no flag, its [set] and [task_set]
    slurm = SlurmOptions(partition=partition, gpus_per_job=gpus_per_job, max_parallel=max_parallel,
                         time_minutes=time_limit)
    children = None
    if suite:
        from seqbench.harness.sweep.launch import children_device_type
        from seqbench.harness.sweep.mad import GRID, mad_children

        base = replace(base, experiment=base.experiment or MAD_SUITE)
        chosen = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else list(GRID)
        children = mad_children(base, models, chosen, grid, children_device_type(device, launcher, slurm))
    planned = Sweep(base, models, [] if suite else parse_lengths(seq_len), time_budget=time_budget, jobs=jobs,
                    resume=resume, console=err, progress=progress, launcher=launcher, slurm=slurm,
                    batch_tokens=_token_count(batch_tokens) if batch_tokens is not None else None,
                    longest_first=longest_first, resume_command=_command_line(ctx, resume=True),
                    children=children, name=MAD_SUITE if suite else None,
                    retry=tuple(word.strip() for word in (retry or "").split(",") if word.strip()),
                    seeds=_seed_list(seeds) if seeds else None)
    if dry_run:
        from seqbench.harness.dry_run import describe_sweep

        _print_dry_run(*describe_sweep(planned))
        return
    result = planned.run()
    if suite:
        _mad_report(report_dir or Path(base.checkpoint_dir).parent / "sweeps" / result.parent_run_id / "report",
                    base.tracking_uri, result.parent_run_id, f"MAD · sweep {result.parent_run_id} · {result.status}")
        if result.status != "ok":
            raise typer.Exit(1)
        return
    _print_sweep(result, base.tracking_uri)
    # The report always goes to the parent run's artifacts (the UI shows it); --report keeps a copy.
    _report(report_dir or Path(base.checkpoint_dir).parent / "sweeps" / result.parent_run_id / "report",
            base.tracking_uri, sweep_run_id=result.parent_run_id, show=report_dir is not None)
    if result.status != "ok":
        raise typer.Exit(1)


MAD_SUITE = "mad"  # `seqbench sweep mad`: the MAD suite, not one task


def _seed_list(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; one line naming what is accepted otherwise."""
    try:
        seeds = [int(word) for word in text.split(",") if word.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds):
        raise SeqbenchError(f"--seeds takes comma-separated non-negative integers, e.g. 0,1,2; got {text!r}")
    return seeds


def _mad_report(folder: Path, tracking_uri: str | None, sweep_run_id: str, title: str) -> None:
    """A MAD sweep's scores on stdout; its report files into `folder` and the parent run's artifacts."""
    from seqbench.harness.report.mad import write_mad_report

    report = write_mad_report(folder, tracking_uri, sweep_run_id)
    table = Table(title=title)
    for column in ("model", *[t.removeprefix("mad-") for t in report.tasks], "MAD score"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model in report.models:
        scores = [report.task_score(model, t) for t in report.tasks] + [report.mad_score(model)]
        table.add_row(model, *["-" if v is None else f"{100 * v:.1f}" for v in scores])
    out.print(table)
    _say(f"MLflow parent run {sweep_run_id} · report: {folder / 'mad.md'} (also in the run's artifacts)")


def _token_count(text: str) -> int:
    try:
        return parse_length(text)
    except SeqbenchError:
        raise SeqbenchError(f"--batch-tokens takes a token count such as 65536, 64k or 1m (up to 2^40), "
                            f"got {text!r}") from None


def _command_line(ctx: typer.Context, resume: bool = False, world_size: int = 1) -> str:
    """The running command as `seqbench ...` with the options it was given (on the command line or
    through their environment variables), however it was started (console script, python -m,
    torchrun), optionally with --resume. A run that torchrun started gets its --nproc, so the
    resumed run has the same world size and config hash."""
    def given(name: str) -> bool:  # by name: typer carries its own copy of click's ParameterSource
        return getattr(ctx.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")

    names, up = [], ctx
    while up.parent is not None:
        names.append(up.info_name)
        up = up.parent
    words = ["seqbench", *reversed(names)]
    for param in ctx.command.params:
        if not given(param.name) or (resume and param.name == "resume"):
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            words.append(str(value))
        elif getattr(param, "is_flag", False) and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else []
        elif getattr(param, "multiple", False):
            for item in value:
                words += [param.opts[0], str(item)]
        else:
            words += [param.opts[0], str(value)]
    if world_size > 1 and not given("nproc") and "nproc" in ctx.params:
        words += ["--nproc", str(world_size)]
    if resume:
        words.append("--resume")
    return shlex.join(words)


def _print_sweep(result, tracking_uri: str | None = None) -> None:
    children = result.children
    lengths = sorted({c.seq_len for c in children})
    labels = list(dict.fromkeys(c.label for c in children))
    table = Table(title=f"sweep {result.parent_run_id} · {result.status}")
    table.add_column("model")
    for n in lengths:
        table.add_column(format_length(n), justify="right")
    cells: dict[tuple[str, int], list] = {}
    for c in children:
        cells.setdefault((c.label, c.seq_len), []).append(c)
    for label in labels:
        row = []
        for n in lengths:
            done = [c.metric for c in cells[(label, n)] if c.status == "ok" and c.metric is not None]
            first = cells[(label, n)][0]
            if len(cells[(label, n)]) > 1:  # one child per seed: their mean, and how many finished
                row.append(f"{sum(done) / len(done):.4g} ({len(done)}/{len(cells[(label, n)])} seeds)" if done
                           else first.status)
            elif done:
                row.append(f"{done[0]:.4g}")
            else:
                row.append(first.status + (f" ({first.message})" if first.status == "skipped" else ""))
        table.add_row(label, *row)
    out.print(table)
    _say(f"MLflow parent run {result.parent_run_id} · report: seqbench report --sweep {result.parent_run_id} "
         f"--out DIR{store_flags(tracking_uri)}")


def _report(out_dir: Path, tracking_uri: str | None, sweep_run_id: str | None = None,
            experiment: str | None = None, show: bool = True, formats: tuple[str, ...] | None = None) -> None:
    from seqbench.harness.report import DEFAULT_FORMATS, render_console_table, write_report

    report = write_report(out_dir, tracking_uri, sweep_run_id=sweep_run_id, experiment=experiment,
                          formats=formats or DEFAULT_FORMATS)
    if show:
        out.print(render_console_table(report))
        out.print("wrote " + ", ".join(str(p) for p in report.paths))
    if report.parent_run_id:
        out.print(f"report logged to MLflow run {report.parent_run_id} (artifacts: report/)")


@app.command()
@user_errors
def report(
    experiment: Optional[str] = typer.Option(
        None, help="Report the newest sweep of this experiment (or its runs); default: any experiment's."),
    sweep_run_id: Optional[str] = typer.Option(
        None, "--sweep", help="Report this sweep (its parent run id); default: the newest sweep."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for report.md, report.csv, report.json and the PNG plots."),
    tracking_uri: Optional[str] = TRACKING_URI,
    formats: str = typer.Option("md,csv,png", "--format", show_default=True,
                                help="Comma-separated files to write: md, csv, png, json (the CSV's numbers)."),
) -> None:
    """Table and log-log plots of a sweep: metric, time per token (fitted exponent) and memory vs length."""
    from seqbench.harness.report import parse_formats

    if sweep_run_id and _sweep_of(tracking_uri, sweep_run_id) == MAD_SUITE:  # the suite's own report
        _mad_report(out_dir, tracking_uri, sweep_run_id, f"MAD · sweep {sweep_run_id}")
        return
    _report(out_dir, tracking_uri, sweep_run_id=sweep_run_id, experiment=experiment, formats=parse_formats(formats))


def _sweep_of(tracking_uri: str | None, run_id: str) -> str | None:
    """The task tag of a run (a sweep's parent: its task, or `mad` for the suite); None if no such run."""
    from mlflow.exceptions import MlflowException

    from seqbench.harness import records
    from seqbench.harness.report.query import _client
    from seqbench.harness.tracking import resolve_tracking_uri

    try:
        return _client(resolve_tracking_uri(tracking_uri)).get_run(run_id).data.tags.get(records.TASK)
    except MlflowException:
        return None  # the report says what is wrong with the id


def _print_result(result, ctx: typer.Context) -> None:
    config = result.config
    table = Table(title=f"{config.task} · {config.model} · trained at {format_length(config.seq_len)} "
                        f"for {result.steps_done} steps · status {result.status}")
    names = [n for n in ("accuracy", "loss", "bits_per_byte", "bits_per_token", "perplexity", "fwd_ms", "fwd_bwd_ms",
                         "train_tokens_per_s", "peak_memory_gb")
             if any(f"{n}/{L}" in result.metrics for L in config.eval_lengths)]
    table.add_column("eval length", justify="right")
    for name in names + ["samples"]:
        table.add_column(name.replace("_", " "), justify="right")
    for seq_len in config.eval_lengths:
        cells = []
        for name in names + ["samples"]:
            value = result.metrics.get(f"{name}/{seq_len}")
            if value is None:
                cells.append("-")
            elif name == "accuracy":
                cells.append(f"{100 * value:.1f}%")
            elif name == "samples":
                cells.append(str(int(value)))
            else:
                cells.append(f"{value:.3f}")
        table.add_row(format_length(seq_len), *cells)
    out.print(table)
    generation = {k: v for k, v in result.metrics.items() if k.startswith("gen_tokens_per_s/")}
    if generation:
        out.print("generation tokens/s: " + ", ".join(f"batch {k.split('/b')[-1]}: {v:,.0f}" for k, v in generation.items()))
    if result.message:
        out.print(f"[yellow]{result.message}")
    _say(f"MLflow run {result.run_id} · open with: seqbench ui{store_flags(config.tracking_uri)}")
    if result.status == "interrupted":
        from seqbench.harness.runner import checkpoint_path

        ckpt = checkpoint_path(config, result.run_id)
        if ckpt.exists():
            _say(f"checkpoint: {ckpt.resolve()}")
            _say(f"continue with: {_command_line(ctx, resume=True, world_size=config.world_size)}")
        else:
            _say("no checkpoint (interrupted before the first step finished): run the same command to start again")


def _say(text: str) -> None:
    """A line meant to be copied (a command, a path): printed as is, never wrapped or styled."""
    out.print(text, highlight=False, markup=False, soft_wrap=True)


@app.command("list")
@user_errors
def list_(kind: str = typer.Argument(..., help="tasks, models or modalities")) -> None:
    """List the tasks, models or modalities that are available (built-ins and plugins)."""
    import difflib

    from seqbench.core.registry import KINDS, registry

    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SeqbenchError(f"unknown kind {kind!r}.{hint} Choices: {', '.join(KINDS)}")
    names = registry(kind).names()
    {"tasks": _list_tasks, "models": _list_models, "modalities": _list_modalities}[kind](names)


def _summary(obj) -> str:
    """The first line of a docstring (its summary), without a dangling ',' or ';'."""
    lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return lines[0].strip().rstrip(",;") if lines else ""


def _list_tasks(names: list[str]) -> None:
    from seqbench.core.registry import registry
    from seqbench.modalities import loadable_modalities

    table = Table(title="tasks (defaults: training length, steps, batch; --seq-len, --steps, --batch-size change them)")
    for column in ("task", "modalities", "length", "steps", "batch", "description"):
        table.add_column(column, justify="right" if column in ("length", "steps", "batch") else "left",
                         no_wrap=column == "task")  # a name is read and typed whole
    for name in names:
        task_cls = registry("tasks").load(name)
        accepted = task_cls.modalities
        d = task_cls.defaults
        table.add_row(name, ", ".join(loadable_modalities() if accepted is None else accepted),
                      format_length(d.seq_len), f"{d.steps:,}", str(d.batch_size), _summary(task_cls))
    out.print(table)


def _list_models(names: list[str]) -> None:
    from seqbench.core.registry import registry
    from seqbench.models.presets import count_parameters, sizes_of

    table = Table(title="models (parameters counted at vocab 16 for synthetic, 50,280 for LM sizes)")
    for column in ("model", "sizes", "description"):
        table.add_column(column, no_wrap=column == "model")
    for name in names:
        sizes = sizes_of(name)
        table.add_row(name, ", ".join(f"{size} ({_short(count_parameters(name, size))})" for size in sizes) or "-",
                      _summary(registry("models").load(name)))
    out.print(table)


def _list_modalities(names: list[str]) -> None:
    from seqbench.core.registry import registry
    from seqbench.modalities import LoadableModality, get_modality

    table = Table(title="modalities (--modality; --data gives a loading modality its source)")
    for column in ("modality", "vocab", "data", "description"):
        table.add_column(column, justify="right" if column == "vocab" else "left", no_wrap=column == "modality")
    for name in names:
        modality = get_modality(name)
        loads = isinstance(modality, LoadableModality)
        table.add_row(name, f"{modality.vocab_size:,}" if loads else "the task's",
                      "--data, else its sample data" if loads else "generated by the task",
                      _summary(registry("modalities").load(name)))
    out.print(table)


def _short(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


@app.command()
@user_errors
def ui(
    tracking_uri: Optional[str] = typer.Option(None, help="Store to show; default the one runs use."),
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
) -> None:
    """Start the MLflow UI on the store the runs use (loopback only) and print its URL."""
    from seqbench.harness.tracking import resolve_tracking_uri, sqlite_path

    if not 1 <= port <= 65535:
        raise SeqbenchError(f"--port must be in 1..65535, got {port}")
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise SeqbenchError(f"no tracking store at {db}; run `seqbench run ...` first or pass --tracking-uri")
    mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    out.print(f"MLflow UI for {uri} at http://127.0.0.1:{port}  (Ctrl-C to stop)")
    # The server (uvicorn, its workers, huey consumers) runs in a process group of its own, which
    # goes down with this command however it is stopped: Ctrl-C, SIGTERM, a closed terminal.
    server = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port)], start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_group(server)


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to a process group started with start_new_session, SIGKILL if it outlives grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait_s  # the leader is gone; give the rest of its group the same time
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@bench_app.command("kernels")
@user_errors
def bench_kernels(
    out_file: Optional[Path] = typer.Option(None, "--out", help="CSV file to write; default: none, the table is printed only."),
    shapes: str = typer.Option("table", help="table (every shape) or small (lengths up to 32k)."),
    flash: bool = typer.Option(True, help="Also time flash attention at the matching shapes."),
    variants: bool = typer.Option(False, help="Compare tile configurations side by side instead."),
    profile: Optional[str] = typer.Option(None, help="batch,dim,length: per-kernel times of one fwd+bwd; default: none, the timing table."),
    conv: bool = typer.Option(False, help="Time the conv and decode-step kernels against PyTorch."),
    host: bool = typer.Option(False, help="Short shapes: device and host time per call (with --variants, more)."),
    alternate: bool = typer.Option(False, help="With --host: the short calls' paths against the long calls' "
                                               "at short shapes, in alternating rounds (wall and device time)."),
) -> None:
    """Selective-scan forward and forward+backward times vs the CUDA reference and flash attention."""
    import torch

    if shapes not in ("table", "small"):
        raise SeqbenchError(f"--shapes takes table or small, got {shapes!r}")
    if alternate and not host:
        raise SeqbenchError("--alternate is a --host measurement: give both")
    if not torch.cuda.is_available():
        raise SeqbenchError("`seqbench bench kernels` times the Triton kernels and needs a CUDA device")
    from seqbench.harness.bench.kernels import run_kernels_command

    run_kernels_command(out_file, shapes, flash, variants, profile, conv, host, alternate)


@bench_app.command("generation-split")
@user_errors
def bench_generation_split(out_file: Path = typer.Option(..., "--out", help="CSV file to write.")) -> None:
    """Where one generate call's time goes (state set-up, capture, prefill, decode), per model and batch."""
    import torch

    if not torch.cuda.is_available():
        raise SeqbenchError("`seqbench bench generation-split` times models on a CUDA device; none is available")
    from seqbench.harness.bench.generation_split import run_generation_split

    run_generation_split(out_file)


@bench_app.command("step-time")
@user_errors
def bench_step_time(
    out_file: Optional[Path] = typer.Option(None, "--out", help="CSV file to write."),
    profile: bool = typer.Option(False, help="Also print each row's top kernels (one eager step)."),
) -> None:
    """Training-step wall time of the paper's small synthetic models, eager vs captured, beside GPU busy time."""
    import torch

    if not torch.cuda.is_available():
        raise SeqbenchError("`seqbench bench step-time` times CUDA graphs and needs a CUDA device")
    from seqbench.harness.bench.step_time import run_step_time

    run_step_time(out_file, profile)


@bench_app.command("operators")
@user_errors
def bench_operators(
    seq_len: str = typer.Option(",".join(str(2**k) for k in range(9, 21)), help="Comma-separated lengths."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="CSV to write (a PNG plot goes beside it); default: none, the table is printed only."),
) -> None:
    """Paper Figure 8 (left): our scan vs flash attention vs FFT convolution vs PyTorch scans."""
    import torch

    if not torch.cuda.is_available():
        raise SeqbenchError("`seqbench bench operators` times GPU kernels and needs a CUDA device")
    from seqbench.harness.bench.operators import run_operator_bench

    run_operator_bench(out_file, parse_lengths(seq_len))


@bench_app.command("models")
@user_errors
def bench_models(
    model: str = typer.Option("mamba:130m,transformer:125m", help="Comma-separated family:size pairs."),
    seq_len: str = typer.Option("2048", help="Comma-separated lengths."),
    batch_size: int = typer.Option(8, help="Batch size."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="CSV file to write; default: none, the table is printed only."),
) -> None:
    """Forward and forward+backward time, training tokens/s and peak memory per model size."""
    import torch

    if not torch.cuda.is_available():
        raise SeqbenchError("`seqbench bench models` times models on a CUDA device; none is available")
    from seqbench.harness.bench.models import run_model_bench

    run_model_bench(_family_sizes(model), parse_lengths(seq_len), batch_size, out_file)


def _family_sizes(text: str) -> list[tuple[str, str]]:
    """'mamba:130m,transformer:125m' -> [('mamba', '130m'), ('transformer', '125m')]: like a
    sweep's --model, but every family needs its size."""
    from seqbench.harness.sweep.plan import parse_models

    models = parse_models(text)
    for family, size in models:
        if size is None:
            raise SeqbenchError(f"--model takes family:size pairs such as mamba:130m, got {family!r}")
    return models


@bench_app.command("mamba-ssm")
@user_errors
def bench_mamba_ssm(
    parts: str = typer.Option("train,prefill,generation,scan",
                              help="Comma-separated parts to measure; `profile` adds per-kernel profiles of a 130m "
                                   "training step, the 1.4b batch-1 prefill, batch-32 generation and one of its decode steps (<out>-profile.csv); "
                                   "`layouts` times our training step in both layouts of the channel-major projections (<out>-layouts.csv)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="CSV file to write (and its plot, beside it as .png); default: none, printed only."),
) -> None:
    """seqbench's Mamba against the authors' mamba_ssm (when importable) in one process: training,
    prefill, generation and the scan alone."""
    import torch

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = set(chosen) - {"train", "prefill", "generation", "scan", "profile", "layouts"}
    if unknown or not chosen:
        raise SeqbenchError(f"--parts takes train, prefill, generation, scan, profile, layouts; got {parts!r}")
    if not torch.cuda.is_available():
        raise SeqbenchError("`seqbench bench mamba-ssm` times models on a CUDA device; none is available")
    from seqbench.harness.bench.mamba_ssm import run_mamba_ssm_bench

    run_mamba_ssm_bench(out_file, chosen)


@bench_app.command("generation")
@user_errors
def bench_generation(
    model: str = typer.Option("mamba:130m,transformer:125m", help="Comma-separated family:size pairs."),
    prompt_len: int = typer.Option(2048, help="Prompt length."),
    new_tokens: int = typer.Option(128, help="Tokens generated after the prompt."),
    batch_sizes: str = typer.Option("1,8,32,128", help="Comma-separated batch sizes."),
    cuda_graph: bool = typer.Option(True, help="Replay the decode step as a CUDA graph where the family allows it."),
    dtype: str = typer.Option("bf16", help="Weights: bf16 (inference as deployed) or fp32 (under bf16 autocast)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="CSV file to write (and its plot, beside it as .png); default: none, printed only."),
    replot: bool = typer.Option(False, help="Measure nothing: redraw the plot of the existing --out CSV."),
) -> None:
    """Generation throughput (batch × new tokens / time) per model size and batch size."""
    import torch

    if replot:
        from seqbench.harness.bench.models import plot_generation, read_generation_csv

        if out_file is None or not out_file.is_file():
            raise SeqbenchError(f"--replot needs --out naming an existing generation CSV, got {out_file}")
        try:
            rows = read_generation_csv(out_file)
        except ValueError as error:
            raise SeqbenchError(str(error)) from None
        plot_generation(rows, out_file.with_suffix(".png"))
        typer.echo(f"wrote {out_file.with_suffix('.png')}")
        return
    if not torch.cuda.is_available():
        raise SeqbenchError("`seqbench bench generation` times models on a CUDA device; none is available")
    from seqbench.harness.bench.models import run_generation_bench

    if dtype not in ("bf16", "fp32"):
        raise SeqbenchError(f"--dtype takes bf16 or fp32, got {dtype!r}")
    run_generation_bench(_family_sizes(model), prompt_len, new_tokens, parse_lengths(batch_sizes), out_file,
                         cuda_graph=cuda_graph, dtype=dtype)


def main() -> None:  # pragma: no cover - console-script entry
    """`seqbench`: the typer app, with the heap frozen before the interpreter's shutdown (torch and
    MLflow leave so many objects that collecting them at exit takes about a second)."""
    try:
        app(prog_name="seqbench")  # the same name in help and errors under `python -m seqbench`
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    main()
