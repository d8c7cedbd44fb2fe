"""The hybrid family: attention where the settings put it, bad settings refused in one line,
named sizes matched to Mamba's, and every task run through the runner."""

import os
import sqlite3
import subprocess
import sys

import pytest
import torch

from seqbench.core.errors import SeqbenchError
from seqbench.core.registry import BUILTINS
from seqbench.models import build_model, check_model_settings
from seqbench.models.mamba import MambaMixer
from seqbench.models.presets import count_parameters, preset
from seqbench.models.transformer import MLP, CausalSelfAttention
from seqbench.tasks import get_task
from seqbench.tasks.base import HeadSpec

HEAD = HeadSpec("token", 16)


def hybrid(**settings):
    torch.manual_seed(0)
    settings = {"d_model": 32, "n_heads": 4, **settings}
    with torch.device("meta"):  # placement only: no memory, no init cost
        return build_model("hybrid", vocab_size=16, head=HEAD, **settings)


def kinds(model) -> str:
    """'M' per Mamba layer, 'A' per attention layer."""
    names = {MambaMixer: "M", CausalSelfAttention: "A"}
    return "".join(names[type(block.mixer)] for block in model.blocks)


@pytest.mark.parametrize("settings,expected", [
    ({"n_layers": 8, "attn_layers": "3,7"}, "MMMAMMMA"),
    ({"n_layers": 8, "attn_layers": " 0 , 5"}, "AMMMMAMM"),
    ({"n_layers": 4, "attn_layers": 2}, "MMAM"),  # the CLI reads --set attn_layers=2 as an integer
    ({"n_layers": 4, "attn_layers": [3, 0]}, "AMMA"),  # a TOML list, in any order
    ({"n_layers": 12, "attn_every": 4}, "MMMAMMMAMMMA"),
    ({"n_layers": 12, "attn_every": 0}, "MMMMMMMMMMMM"),
    ({"n_layers": 5}, "MAMAM"),  # the default: every 2nd layer
    ({"n_layers": 8, "attn_layers": "1", "attn_every": 4}, "MAMMMMMM"),  # the list wins over the period
    ({"n_layers": 8, "attn_layers": "", "attn_every": 4}, "MMMAMMMA"),  # empty: the period
])
def test_attention_layers_are_where_the_settings_say(settings, expected):
    model = hybrid(**settings)
    assert kinds(model) == expected
    assert model.attn_layers == [i for i, kind in enumerate(expected) if kind == "A"]
    assert model.family == "hybrid" and model.max_seq_len is None  # RoPE: no position limit
    assert all(block.mixer.rotary for block in model.blocks if isinstance(block.mixer, CausalSelfAttention))


def test_mlp_and_the_mamba_settings_reach_every_layer():
    model = hybrid(n_layers=4, attn_every=2, mlp="swiglu", d_state=8, d_conv=3, expand=1, n_heads=2)
    assert all(isinstance(block.mlp, MLP) and block.mlp.kind == "swiglu" for block in model.blocks)
    mambas = [block.mixer for block in model.blocks if isinstance(block.mixer, MambaMixer)]
    assert len(mambas) == 2
    assert all((m.d_state, m.d_conv, m.d_inner) == (8, 3, 32) for m in mambas)
    attention = [block.mixer for block in model.blocks if isinstance(block.mixer, CausalSelfAttention)]
    assert [a.n_heads for a in attention] == [2, 2]
    assert all(block.mlp is None for block in hybrid(n_layers=2).blocks)  # mlp none by default
    assert all(block.mlp.kind == "gelu" for block in hybrid(n_layers=2, mlp="gelu").blocks)


def test_a_hybrid_decodes_with_an_ssm_state_and_a_kv_cache():
    torch.manual_seed(0)
    model = build_model("hybrid", vocab_size=16, head=HEAD, d_model=32, n_layers=3, attn_layers="1", n_heads=4)
    model = model.double()
    state = model.init_state(2, max_len=12, dtype=torch.float64)
    mamba_state = {"conv", "ssm", "fresh"}  # "fresh": no token seen yet
    assert set(state[0]) == mamba_state and set(state[1]) == {"k", "v", "pos"} and set(state[2]) == mamba_state
    prompt = torch.randint(0, 16, (2, 5))
    out = model.generate(prompt, 7, temperature=0)
    assert out.shape == (2, 12) and torch.equal(out[:, :5], prompt)
    full = model(out[:, :-1]).argmax(-1)  # greedy decoding is the full forward's argmax at every new token
    assert torch.equal(full[:, 4:], out[:, 5:])
    assert model.graph_decodable


@pytest.mark.parametrize("settings,message", [
    ({"attn_layers": 9}, "layer 9 is out of range for 2 layers"),
    ({"attn_layers": "0,1"}, "needs at least one Mamba layer"),
    ({"attn_every": 1}, "needs at least one Mamba layer"),
    ({"attn_layers": "1,1", "n_layers": 3}, "lists layer 1 more than once"),
    ({"attn_layers": "a,b"}, "takes comma-separated layer indices"),
    ({"n_heads": 3}, "d_model 64 must be divisible by n_heads 3"),
    ({"n_heads": 64}, "rotary positions need an even head dimension"),
    ({"mlp": "relu"}, "mlp must be one of none, gelu, swiglu"),
])
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(SeqbenchError, match=message) as raised:
        build_model("hybrid", vocab_size=16, head=HEAD, **{"d_model": 64, "n_layers": 2, **settings})
    assert "\n" not in str(raised.value)


def test_the_settings_check_takes_a_zero_period_and_refuses_a_negative_one():
    check_model_settings("hybrid", {"attn_every": 0, "attn_layers": "3,7", "d_state": 8, "mlp": "gelu"})
    with pytest.raises(SeqbenchError, match="--set attn_every must be >= 0, got -1"):
        check_model_settings("hybrid", {"attn_every": -1})
    with pytest.raises(SeqbenchError, match="--set n_heads must be >= 1, got 0"):
        check_model_settings("hybrid", {"n_heads": 0})
    with pytest.raises(SeqbenchError, match="--set d_model must be >= 1, got 0"):  # other families keep >= 1
        check_model_settings("mamba", {"d_model": 0})
    with pytest.raises(SeqbenchError, match="no setting 'positions'"):
        check_model_settings("hybrid", {"positions": "absolute"})


CLI = ["run", "induction-heads", "--model", "hybrid", "--steps", "2", "--eval-samples", "2", "--eval-lengths", "64",
       "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("settings,message", [
    (["attn_layers=9"], "error: --set attn_layers: layer 9 is out of range for 2 layers (indices 0..1)"),
    (["n_heads=3"], "error: d_model 64 must be divisible by n_heads 3"),
    (["attn_every=-2"], "error: --set attn_every must be >= 0, got -2"),
])
def test_bad_settings_through_the_cli_exit_2_with_one_line_and_no_run(tmp_path, settings, message):
    env = {**os.environ, "SEQBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [*CLI, *(arg for s in settings for arg in ("--set", s))]
    proc = subprocess.run([sys.executable, "-m", "seqbench.harness.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines == [message], proc.stderr[-2000:]
    assert not (tmp_path / ".seqbench" / "checkpoints").exists()
    db = tmp_path / "mlflow.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from runs").fetchone()[0] == 0


@pytest.mark.parametrize("size", ["130m", "370m"])
def test_named_sizes_match_mambas_parameters_within_5_percent(size):
    hybrid_count, mamba_count = count_parameters("hybrid", size), count_parameters("mamba", size)
    assert abs(hybrid_count / mamba_count - 1) < 0.05
    settings = preset("hybrid", size)
    model = hybrid(**settings)
    assert settings["attn_every"] == 8 and model.attn_layers == list(range(7, settings["n_layers"], 8))


def test_the_synthetic_size_and_the_synthetic_tasks_defaults():
    assert kinds(hybrid(**preset("hybrid", "synthetic"))) == "MA"
    assert count_parameters("hybrid", "synthetic") == 50_240  # Mamba's 66,496 with its 2nd layer attention
    for name in ("induction-heads", "selective-copying", "mqar"):
        settings = get_task(name).defaults.model_defaults("hybrid")
        check_model_settings("hybrid", settings)
        assert kinds(hybrid(**settings)) == "MA"


# Each task at a length it takes (spoken-digits' clips are 2000 samples); speed measures instead of
# training, here with a short generation so that the hybrid's decoding runs too.
LENGTHS = {"spoken-digits": 2000}
TASK_SETTINGS = {"speed": {"prompt_len": 8, "new_tokens": 4, "gen_batches": (1,)}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from seqbench.harness.tracking import setup_experiment

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    setup_experiment(uri, "hybrid")
    return folder, uri


@pytest.mark.parametrize("task", sorted(BUILTINS["tasks"]))
def test_every_task_runs_two_steps_with_the_hybrid(task, store):
    from seqbench.harness.config import RunConfig
    from seqbench.harness.runner import run

    folder, uri = store
    length = LENGTHS.get(task, 64)
    config = RunConfig(task=task, model="hybrid", seq_len=length, steps=2, batch_size=2, eval_samples=4,
                       eval_lengths=[length], task_kwargs=TASK_SETTINGS.get(task, {}),
                       model_kwargs={"d_model": 16, "n_layers": 2, "attn_layers": "1", "n_heads": 2},
                       device="cpu", tracking_uri=uri, experiment="hybrid", checkpoint_dir=str(folder / "ckpt"))
    result = run(config, progress=False)
    assert result.status == "ok"
    if task == "speed":
        assert f"train_tokens_per_s/{length}" in result.metrics and "gen_tokens_per_s/b1" in result.metrics
    else:
        assert result.steps_done == 2 and f"loss/{length}" in result.metrics


def _gpu_hybrid(backend: str = "auto"):
    torch.manual_seed(0)
    return build_model("hybrid", 16, HEAD, d_model=64, n_layers=4, attn_every=2, n_heads=4, mlp="swiglu",
                       backend=backend).cuda()


@pytest.mark.gpu
def test_on_the_gpu_the_hybrid_trains_on_triton_like_the_reference():
    fused, plain = _gpu_hybrid(), _gpu_hybrid("reference")
    ids = torch.randint(0, 16, (4, 1000), device="cuda")
    a, b = fused(ids), plain(ids)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    a.float().pow(2).mean().backward()
    b.float().pow(2).mean().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-2, atol=1e-4, msg=name)


@pytest.mark.gpu
def test_on_the_gpu_the_hybrid_decodes_under_a_cuda_graph_as_eagerly():
    from seqbench.models.decoding import GraphedStep, release_held_step

    model = _gpu_hybrid()
    assert model.graph_decodable
    prompt = torch.randint(0, 16, (3, 40), device="cuda")
    tokens = torch.randint(0, 16, (10, 3), device="cuda")
    eager_state = model.init_state(3, max_len=50)
    graph_state = model.init_state(3, max_len=50)
    graphed = GraphedStep(model, graph_state, 3, torch.device("cuda"))
    torch.testing.assert_close(model.prefill(prompt, graph_state), model.prefill(prompt, eager_state))
    graphed.after_prefill()
    for token in tokens:
        expected, _ = model.step(token, eager_state)
        torch.testing.assert_close(graphed(token), expected, rtol=1e-4, atol=1e-4)
    full = model(torch.cat([prompt, tokens.T], dim=1))[:, -1]  # the same positions in one forward
    torch.testing.assert_close(expected, full, rtol=1e-3, atol=1e-3)
    for _ in range(2):  # the held step is reused from a reset state
        assert torch.equal(model.generate(prompt, 8, temperature=0, cuda_graph=True),
                           model.generate(prompt, 8, temperature=0))
    release_held_step(model)
