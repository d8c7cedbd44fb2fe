"""CLI: exit code 2 and one clear line on stderr for bad input; listings."""

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


def test_list_shows_tasks_with_their_modalities_and_models_with_sizes():
    result = invoke("list", "tasks")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines()
            if line.count("│") == 3}
    assert rows["induction-heads"] == "tokens" and rows["lm"] == "audio, dna, text"
    models = invoke("list", "models")
    assert models.exit_code == 0 and "130m (129.1M)" in models.stdout
    modalities = invoke("list", "modalities")
    assert set(modalities.stdout.split()) == {"audio", "dna", "text", "tokens"}


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
