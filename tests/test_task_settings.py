"""--task-set values checked against the task's __init__ before anything is built: unknown keys list
the accepted ones, a value of the wrong type names the type, and values reach the task converted
to the declared type."""

import pytest

from seqbench.core.errors import SeqbenchError
from seqbench.tasks import check_task_settings, get_task, task_settings


def test_settings_are_the_init_keywords_beyond_modality_data_and_seed():
    assert list(task_settings("mqar")) == ["vocab", "kv", "power"]
    assert list(task_settings("speed")) == ["prompt_len", "new_tokens", "gen_batches"]
    assert list(task_settings("lm")) == ["held_out"]


@pytest.mark.parametrize("task,settings,converted", [
    ("induction-heads", {"vocab": 8}, {"vocab": 8}),
    ("mqar", {"kv": "none", "power": 1}, {"kv": None, "power": 1.0}),  # an int for a float, "none" for None
    ("mqar", {"kv": 16}, {"kv": 16}),
    ("speed", {"gen_batches": "1,8,32"}, {"gen_batches": (1, 8, 32)}),  # text spells the tuple
    ("speed", {"gen_batches": 4}, {"gen_batches": (4,)}),
    ("speed", {"gen_batches": ""}, {"gen_batches": ()}),  # empty: no generation
    ("spoken-digits", {"split": 7}, {"split": "7"}),  # --task-set split=7 was read as a number
])
def test_values_are_brought_to_the_declared_type(task, settings, converted):
    assert check_task_settings(task, settings) == converted


@pytest.mark.parametrize("task,settings,message", [
    ("induction-heads", {"bogus": 1}, "task 'induction-heads' has no setting 'bogus'; accepted: vocab"),
    ("lm", {"vocab": 1}, "task 'lm' has no setting 'vocab'; accepted: held_out"),
    ("induction-heads", {"vocab": "abc"}, "--task-set vocab takes an integer, got 'abc'"),
    ("induction-heads", {"vocab": 2.5}, "--task-set vocab takes an integer, got 2.5"),
    ("induction-heads", {"vocab": True}, "--task-set vocab takes an integer, got True"),
    ("induction-heads", {"vocab": 0}, "--task-set vocab must be >= 1, got 0"),
    ("mqar", {"kv": "many"}, "--task-set kv takes an integer or none, got 'many'"),
    ("mqar", {"power": "high"}, "--task-set power takes a number, got 'high'"),
    ("speed", {"gen_batches": "a,b"}, "--task-set gen_batches takes comma-separated integers, got 'a,b'"),
    ("speed", {"gen_batches": "0,8"}, "--task-set gen_batches takes integers >= 1, got (0, 8)"),
    ("speed", {"prompt_len": "long"}, "--task-set prompt_len takes an integer, got 'long'"),
])
def test_bad_values_are_one_line(task, settings, message):
    with pytest.raises(SeqbenchError) as err:
        check_task_settings(task, settings)
    assert str(err.value) == message


def test_get_task_checks_before_building_and_passes_the_converted_values():
    assert get_task("speed", gen_batches="2,4").gen_batches == (2, 4)
    with pytest.raises(SeqbenchError, match="takes an integer"):
        get_task("induction-heads", vocab="abc")  # not a TypeError from inside the task


def test_a_run_records_every_task_setting_its_defaults_too(tmp_path):
    """MLflow params task.<name> hold each setting the task ran with, given or not, so runs made
    before a default changed (spoken digits' pool: last, then mean) are told apart."""
    from mlflow.tracking import MlflowClient

    from seqbench.harness.config import RunConfig
    from seqbench.harness.runner import run
    from seqbench.tasks import task_setting_values

    assert task_setting_values("mqar", {"kv": 4}) == {"vocab": 8192, "kv": 4, "power": 0.01}
    config = RunConfig(task="mqar", steps=2, batch_size=2, eval_samples=2, eval_lengths=[64], seq_len=64,
                       task_kwargs={"kv": 4}, model_kwargs={"d_model": 16, "n_layers": 1}, device="cpu",
                       tracking_uri=f"sqlite:///{tmp_path}/m.db", checkpoint_dir=str(tmp_path / "ckpt"))
    result = run(config, progress=False)
    params = MlflowClient(config.tracking_uri).get_run(result.run_id).data.params
    assert (params["task.vocab"], params["task.kv"], params["task.power"]) == ("8192", "4", "0.01")
