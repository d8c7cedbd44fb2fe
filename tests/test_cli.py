"""CLI: exit code 2 and one clear line on stderr for bad input; listings, --version, completion and
the defaults every option shows in --help."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from seqbench.harness.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("args,message", [
    (["run", "induction-head"], "unknown task 'induction-head'. Did you mean 'induction-heads'?"),
    (["run", "induction-heads", "--model", "mambo"], "unknown model 'mambo'. Did you mean 'mamba'?"),
    (["run", "induction-heads", "--steps", "0"], "--steps must be > 0"),
    (["run", "induction-heads", "--steps", "-3"], "--steps must be > 0"),
    (["run", "induction-heads", "--seq-len", "2"], "at least 4 tokens"),
    (["run", "induction-heads", "--seq-len", "12q"], "cannot read length '12q'"),
    (["run", "induction-heads", "--modality", "audio"], "does not take modality 'audio'"),
    (["run", "induction-heads", "--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["run", "induction-heads", "--set", "d_model"], "--set and --task-set take key=value"),
    (["run", "mqar", "--task-set", "pairs=3"], "task 'mqar' has no setting 'pairs'; accepted: vocab, kv, power"),
    (["sweep", "induction-heads", "--seq-len", "64,1q"], "cannot read length '1q'"),
    (["sweep", "induction-heads", "--seq-len", "2,64"], "at least 4 tokens"),
    (["sweep", "induction-heads", "--seq-len", "64", "--model", "mamba,hyenna"], "unknown model 'hyenna'"),
    (["sweep", "induction-heads", "--seq-len", "64", "--model", "mamba,mamba"], "lists a model twice"),
    (["sweep", "induction-heads", "--seq-len", "64", "--model", "mamba:9t"], "mamba"),
    (["sweep", "induction-heads", "--seq-len", "64", "--jobs", "0"], "--jobs must be >= 1"),
    (["sweep", "induction-heads", "--seq-len", "64", "--batch-tokens", "lots"], "--batch-tokens takes a token count"),
    (["sweep", "induction-heads", "--seq-len", "64", "--batch-tokens", "1k", "--batch-size", "4"],
     "--batch-tokens and --batch-size both set the batch"),
    (["sweep", "induction-heads", "--seq-len", "64", "--time-budget", "-1"], "--time-budget must be > 0"),
    (["list", "widgets"], "unknown kind 'widgets'"),
    (["list", "task"], "unknown kind 'task'. Did you mean 'tasks'? Choices: tasks, models, modalities"),
    (["list", "modality"], "Did you mean 'modalities'?"),
    (["run", "induction-heads", "--task-set", "vocab=abc"], "--task-set vocab takes an integer, got 'abc'"),
    (["run", "mqar", "--task-set", "kv=many"], "--task-set kv takes an integer or none, got 'many'"),
    (["run", "induction-heads", "--seq-len", "2^99"], "beyond what this machine can address"),
    (["sweep", "induction-heads", "--seq-len", "64,2^41"], "length 2^41 is beyond"),
    (["report", "--out", "x", "--format", "html"], "--format takes comma-separated md, csv, png, json"),
    (["ui", "--tracking-uri", "sqlite:///does/not/exist.db"], "no tracking store"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "mlflow.db").exists()  # nothing is created for a rejected run


def table_rows(text: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell, continuation lines (wrapped cells) joined in."""
    rows: dict[str, list[str]] = {}
    last = None
    for line in text.splitlines():
        if "│" not in line:
            continue
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells[0]:
            last = cells[0]
            rows[last] = cells
        elif last is not None:
            rows[last] = [f"{a} {b}".strip() for a, b in zip(rows[last], cells)]
    return rows


def test_list_shows_tables_with_descriptions():
    from seqbench.core.registry import registry

    wide = {"COLUMNS": "250"}
    tasks = runner.invoke(app, ["list", "tasks"], env=wide)
    assert tasks.exit_code == 0
    rows = table_rows(tasks.stdout)
    assert set(rows) >= set(registry("tasks").names())
    assert rows["induction-heads"][:5] == ["induction-heads", "tokens", "256", "1,200", "16"]
    assert rows["induction-heads"][5] == "Recall the token that followed the first occurrence of the special token."
    assert rows["lm"][1] == "audio, dna, text"
    models = table_rows(runner.invoke(app, ["list", "models"], env=wide).stdout)
    assert "130m (129.1M)" in models["mamba"][1]
    assert models["transformer++"][2] == "Transformer++: RMSNorm, no biases, SwiGLU MLP, RoPE."
    modalities = table_rows(runner.invoke(app, ["list", "modalities"], env=wide).stdout)
    assert set(modalities) == set(registry("modalities").names()) >= {"audio", "dna", "text", "tokens"}
    assert modalities["text"][1] == "259" and modalities["tokens"][1] == "the task's"
    assert modalities["dna"][3] == "Bases A C G T N (ids 0-4) plus pad/bos/eos (5-7)."


def test_the_cli_starts_without_torch_or_mlflow():
    """--version, --help, completion and name checks answer at once: the CLI imports torch and
    MLflow only in the commands that need them."""
    probe = "import sys, seqbench.harness.cli; print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_version_and_shell_completion():
    from seqbench import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"seqbench {__version__}\n"
    help_text = invoke("--help").stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text
    shown = runner.invoke(app, ["--show-completion", "bash"], prog_name="seqbench")
    assert shown.exit_code == 0 and "_SEQBENCH_COMPLETE" in shown.stdout


def test_python_dash_m_runs_the_same_cli():
    """`python -m seqbench` is the `seqbench` command: same version line, same name in its help
    and in a bad input's usage line (exit code 2)."""
    from seqbench import __version__

    def run(*args):
        return subprocess.run([sys.executable, "-m", "seqbench", *args], capture_output=True, text=True, timeout=120)

    version = run("--version")
    assert version.returncode == 0 and version.stdout == f"seqbench {__version__}\n", version.stderr
    assert run("--help").stdout.count("Usage: seqbench ") == 1
    bad = run("run")
    assert bad.returncode == 2 and "Usage: seqbench run" in bad.stderr, bad.stderr


@pytest.mark.parametrize("command", [["run"], ["sweep"], ["report"], ["ui"], ["list"], ["bench", "kernels"],
                                     ["bench", "operators"], ["bench", "models"], ["bench", "generation"],
                                     ["bench", "mamba-ssm"], ["bench", "generation-split"]])
def test_help_shows_every_default(command):
    """Every option says what it defaults to: its value, or in words where the value is the
    task's (or another None that means something)."""
    import typer.main

    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.get_command(None, name)
    for param in cmd.params:
        if param.param_type_name != "option" or param.name in ("help", "config_file"):
            continue
        if param.required:
            continue
        shown = param.default not in (None, [], ()) and param.show_default is not False
        assert shown or "default" in (param.help or "").lower(), f"{command[0]} {param.opts[0]}"
    text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"}).stdout
    if command == ["run"]:
        assert "default: the task's (induction-heads: 256" in text and "[default: mamba]" in text


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", "run", "nope"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown task 'nope'")
    assert "Traceback" not in proc.stderr


def test_generation_replot_draws_the_plot_of_a_csv(tmp_path):
    """`bench generation --replot --out CSV` redraws the figure from a measured CSV (no GPU):
    throughput per model and the Mamba / Transformer ratio at the nearest parameter count."""
    from seqbench.harness.bench.models import GENERATION_FIELDS, generation_ratios, read_generation_csv, write_csv

    rows = [dict(model=m, size=s, n_parameters=p, batch=b, prompt_len=2048, new_tokens=128, cuda_graph=1,
                 status=status, gen_ms=1.0, gen_tokens_per_s=speed)
            for m, s, p, b, status, speed in [
                ("mamba", "130m", 129_000_000, 1, "ok", 400.0), ("mamba", "130m", 129_000_000, 8, "ok", 3000.0),
                ("transformer", "125m", 125_000_000, 1, "ok", 200.0), ("transformer", "125m", 125_000_000, 8, "oom", ""),
                ("transformer", "1.3b", 1_300_000_000, 1, "ok", 100.0)]]
    csv_path = tmp_path / "generation.csv"
    write_csv(rows, csv_path, GENERATION_FIELDS)
    assert generation_ratios(read_generation_csv(csv_path)) == {"mamba:130m / transformer:125m": {1: 2.0}}

    result = invoke("bench", "generation", "--replot", "--out", str(csv_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "generation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    for path, message in ((tmp_path / "missing.csv", "needs --out naming an existing generation CSV"),
                          (tmp_path / "other.csv", "is not a generation CSV")):
        result = invoke("bench", "generation", "--replot", "--out", str(path))
        assert result.exit_code == 2 and message in result.output


def test_bench_kernels_alternate_needs_host():
    """--alternate is a --host measurement: without --host it is one line and exit 2, before any
    device is looked for."""
    result = invoke("bench", "kernels", "--alternate")
    assert result.exit_code == 2 and "--alternate is a --host measurement" in result.output


def test_bench_mamba_ssm_names_its_parts():
    """A part that does not exist is one line naming those that do (profile among them), exit 2."""
    result = invoke("bench", "mamba-ssm", "--parts", "train,profiles")
    assert result.exit_code == 2 and "--parts takes train, prefill, generation, scan, profile" in result.output


def test_dry_run_resolves_everything_and_writes_nothing(tmp_path, monkeypatch):
    """--dry-run prints the resolved plan (defaults filled, parameters counted, config hash) and
    leaves no store, checkpoint or run behind; bad input is still one line and exit 2."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    done = invoke("run", "induction-heads", "--set", "d_model=32", "--dry-run")
    assert done.exit_code == 0, done.output
    from seqbench.harness.config import RunConfig
    from seqbench.tasks import get_task

    config = RunConfig(task="induction-heads", model="mamba", model_kwargs={"d_model": 32}).resolve(
        get_task("induction-heads"), "cpu")
    assert config.hash() in done.stdout and "1,200 steps at 256" in done.stdout
    swept = invoke("sweep", "induction-heads", "--model", "mamba,hyena", "--seq-len", "64,128", "--dry-run")
    assert swept.exit_code == 0, swept.output
    assert swept.stdout.count("mamba ") + swept.stdout.count("hyena ") >= 4 and "4 (2 models x 2 lengths)" in swept.stdout
    assert list(tmp_path.iterdir()) == []
    bad = invoke("run", "induction-heads", "--seq-len", "2", "--dry-run")
    assert bad.exit_code == 2 and "at least 4 tokens" in bad.stderr
