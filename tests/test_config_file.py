"""Config files: `seqbench run|sweep --config FILE.toml` (flags override the file), the resolved
config written back as TOML (`config_toml`) repeating a run exactly, one-line errors for bad files,
and the example configs of the paper's tables under configs/."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.main import get_command
from typer.testing import CliRunner

from seqbench.harness import records
from seqbench.harness.cli import app
from seqbench.harness.config import RunConfig, parse_lengths
from seqbench.harness.config_file import apply_config_file, config_toml
from seqbench.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
COMMANDS = get_command(app).commands
cli = CliRunner()
TINY = ["--seq-len", "16", "--steps", "3", "--eval-lengths", "16", "--set", "d_model=16", "--set", "n_layers=1",
        "--eval-samples", "8"]


def runs(uri: str) -> list:
    """The store's runs, oldest first."""
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return sorted(client.search_runs(experiments), key=lambda r: r.info.start_time)


def losses(uri: str, run) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(MlflowClient(uri).get_metric_history(run.info.run_id, records.TRAIN_LOSS),
                                              key=lambda m: m.step)]


def resolved_toml(uri: str, run, tmp_path: Path) -> str:
    """The run's config.toml artifact when the runner logs one, else `config_toml` of the config
    the runner resolved (checked to be the run's by its config hash)."""
    client = MlflowClient(uri)
    if "config.toml" in [a.path for a in client.list_artifacts(run.info.run_id)]:
        return Path(client.download_artifacts(run.info.run_id, "config.toml", str(tmp_path))).read_text()
    asked = RunConfig(task="induction-heads", seq_len=16, steps=3, eval_lengths=[16], eval_samples=8,
                      model_kwargs={"d_model": 16, "n_layers": 1}, tracking_uri=uri)
    resolved = asked.resolve(get_task("induction-heads"), "cpu")
    assert resolved.hash() == run.data.tags[records.CONFIG_HASH]
    return config_toml(resolved)


def test_the_resolved_config_repeats_the_run_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    first = cli.invoke(app, ["run", "induction-heads", *TINY, "--tracking-uri", uri])
    assert first.exit_code == 0, first.output
    (original,) = runs(uri)
    path = tmp_path / "config.toml"
    path.write_text(resolved_toml(uri, original, tmp_path))
    again = cli.invoke(app, ["run", "--config", str(path)])
    assert again.exit_code == 0, again.output
    _, repeated = runs(uri)
    assert repeated.info.run_id != original.info.run_id
    assert repeated.data.tags[records.CONFIG_HASH] == original.data.tags[records.CONFIG_HASH]
    history = losses(uri, original)
    assert len(history) >= 2 and history[-1][0] == 2 and losses(uri, repeated) == history
    assert repeated.data.params == {**original.data.params, "code_version": repeated.data.params["code_version"]}


def test_flags_given_override_the_file_and_set_merges_key_by_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "run.toml"
    path.write_text(f'task = "induction-heads"\nseq-len = "16"\nsteps = 3\neval_lengths = [16]\neval_samples = 8\n'
                    f'weight_decay = 0.05\ntracking_uri = "{uri}"\n[set]\nd_model = 16\nn_layers = 1\n')
    result = cli.invoke(app, ["run", "--config", str(path), "--steps", "2", "--set", "n_layers=2"])
    assert result.exit_code == 0, result.output
    (run,) = runs(uri)
    params = run.data.params
    assert (params["steps"], params["weight_decay"], params["seq_len"]) == ("2", "0.05", "16")
    assert (params["model.d_model"], params["model.n_layers"]) == ("16", "2")
    assert losses(uri, run)[-1][0] == 1  # the last of 2 steps


@pytest.mark.parametrize("text,message", [
    ('task = "induction-heads"\nsq_len = 16\n',
     "has an unknown key 'sq_len' (did you mean 'seq_len'?); accepted: batch_size, checkpoint_dir"),
    ('steps = "many"\n', "steps = 'many': Invalid value for '--steps'"),
    ("weight_decay = \"none\"\n", "weight_decay takes a number, got 'none'"),
    ("data = true\n", "data takes text, got True"),
    ("set = 3\n", "set takes a table of settings"),
    ("[set]\nd_model = {a = 1}\n", "set.d_model takes a number, text, true/false or a list of them"),
    ("steps = 3\n[", "is not TOML"),
])
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text(text)
    result = cli.invoke(app, ["run", "induction-heads", "--config", "bad.toml"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config file bad.toml") and message in lines[0], lines
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_keys_of_a_sweep_file_list_the_sweeps_keys(tmp_path):
    (tmp_path / "s.toml").write_text('task = "speed"\nseq_len = [1024]\nnproc = 2\n')
    result = cli.invoke(app, ["sweep", "--config", str(tmp_path / "s.toml")])
    assert result.exit_code == 2
    assert "unknown key 'nproc'" in result.stderr and "time_budget" in result.stderr and "jobs" in result.stderr


def test_config_toml_is_toml_of_every_value():
    config = RunConfig(task="mqar", model="transformer", size="125m", data='a "quoted"\\path', seq_len=256,
                       lr=1e-05, weight_decay=0.0, eval_lengths=[64, 1 << 20], world_size=4,
                       model_kwargs={"d_model": 64, "mlp": "none", "bias": False},
                       task_kwargs={"gen_batches": (1, 8), "weird key": 0.5}, resume=True, run_name="x")
    values = tomllib.loads(config_toml(config))
    assert values["lr"] == 1e-05 and values["weight_decay"] == 0.0 and values["data"] == 'a "quoted"\\path'
    assert values["eval_lengths"] == [64, 1 << 20] and values["size"] == "125m" and values["nproc"] == 4
    assert values["set"] == {"d_model": 64, "mlp": "none", "bias": False}
    assert values["task_set"] == {"gen_batches": [1, 8], "weird key": 0.5}
    assert not {"resume", "run_name", "world_size", "model_kwargs", "steps"} & set(values)  # None is left out


def test_a_sweep_file_gives_the_sweep_its_lists_and_settings(tmp_path):
    (tmp_path / "s.toml").write_text('task = "speed"\nmodel = ["mamba", "transformer:125m"]\n'
                                     'seq_len = ["1k", 4096]\ntime = 5\nreport_dir = "r"\nschedule = "cosine"\n'
                                     '[task_set]\ngen_batches = ""\n')
    ctx = COMMANDS["sweep"].make_context("sweep", ["--config", str(tmp_path / "s.toml"), "--jobs", "2"])
    assert ctx.params["model"] == "mamba,transformer:125m" and ctx.params["seq_len"] == "1k,4096"
    assert (ctx.params["time_limit"], str(ctx.params["report_dir"]), ctx.params["jobs"]) == (5, "r", 2)
    base = apply_config_file(ctx, RunConfig(task="speed", task_kwargs={"prompt_len": 64}))
    assert base.schedule == "cosine" and base.task_kwargs == {"gen_batches": "", "prompt_len": 64}


def test_the_table11_config_runs_with_the_papers_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    result = cli.invoke(app, ["run", "--config", str(CONFIGS / "induction-heads-table11-mamba.toml"), "--steps", "1",
                              "--batch-size", "2", "--eval-lengths", "64", "--eval-samples", "4", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    (run,) = runs(uri)
    params = run.data.params
    assert (params["task"], params["model"], params["seq_len"], params["lr"]) == ("induction-heads", "mamba", "256",
                                                                                  "0.001")
    assert (params["schedule"], params["weight_decay"], params["model.d_model"]) == ("constant", "0.0", "64")
    values = tomllib.loads((CONFIGS / "induction-heads-table11-mamba.toml").read_text())
    assert values["steps"] == 204_800 and values["batch_size"] == 8
    assert parse_lengths(",".join(values["eval_lengths"])) == [2**k for k in range(6, 21)]


@pytest.mark.parametrize("name,command", [
    ("induction-heads-table11-mamba.toml", "run"),
    ("selective-copying-table1.toml", "sweep"),
    ("speed-sweep.toml", "sweep"),
])
def test_every_example_config_parses_and_resolves_on_a_gpu(name, command):
    from seqbench.harness.sweep.plan import parse_models, plan

    ctx = COMMANDS[command].make_context(command, ["--config", str(CONFIGS / name)])
    p = ctx.params
    config = apply_config_file(ctx, RunConfig(task=p["task"], model=p["model"], steps=p["steps"],
                                              batch_size=p["batch_size"], lr=p["lr"]))
    if command == "run":
        config = replace(config, seq_len=int(p["seq_len"]), eval_lengths=parse_lengths(p["eval_lengths"]))
        config.resolve(get_task(config.task, **config.task_kwargs), "cuda")
    else:
        models = parse_models(p["model"])
        children = plan(replace(config, model=models[0][0]), models, parse_lengths(p["seq_len"]), "cuda")
        assert len(children) == len(models) * len(parse_lengths(p["seq_len"]))


def test_every_file_under_configs_is_checked():
    checked = {"induction-heads-table11-mamba.toml", "selective-copying-table1.toml", "speed-sweep.toml"}
    assert {p.name for p in CONFIGS.glob("*.toml")} == checked
