"""Model families on the shared backbone: shapes, counts, causality, gradients, decoding."""

import pytest
import torch

from seqbench.harness.config import RunConfig
from seqbench.harness.runner import run
from seqbench.models import build_model
from seqbench.models.presets import PUBLISHED, SIZES, count_parameters
from seqbench.tasks.base import HeadSpec

FAMILIES = ["mamba", "transformer", "transformer-abs", "transformer-xpos", "transformer++", "hyena", "hybrid"]
TINY = {"d_model": 32, "n_layers": 2}
TOKEN_HEAD = HeadSpec("token", 16)


def tiny(family: str, head: HeadSpec = TOKEN_HEAD, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    extra = {"n_heads": 4} if family.startswith("transformer") else {}
    if family == "hybrid":  # one Mamba layer, then attention: both kinds of state in every shared test
        extra = {"n_heads": 4, "attn_layers": "1"}
    return build_model(family, vocab_size=16, head=head, **TINY, **extra, **kwargs).to(dtype)


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_of_both_heads(family):
    ids = torch.randint(0, 16, (3, 20))
    assert tiny(family)(ids).shape == (3, 20, 16)
    assert tiny(family)(ids, last_only=True).shape == (3, 1, 16)
    for pool in ("last", "mean"):
        assert tiny(family, HeadSpec("class", 5, pool=pool))(ids).shape == (3, 5)


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_changing_a_token_never_changes_earlier_outputs(family):
    model = tiny(family)
    ids = torch.randint(0, 16, (2, 33))
    changed = ids.clone()
    changed[:, 20] = (changed[:, 20] + 1) % 16
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20], rtol=0, atol=1e-10)
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_gets_a_gradient(family):
    model = tiny(family, dtype=torch.float32)
    model(torch.randint(0, 16, (2, 24))).logsumexp(-1).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_step_by_step_decoding_equals_the_full_forward(family):
    model = tiny(family)
    ids = torch.randint(0, 16, (2, 21))
    full = model(ids)
    state = model.init_state(2, max_len=21, dtype=torch.float64)
    logits = model.prefill(ids[:, :7], state)
    torch.testing.assert_close(logits, full[:, 6], rtol=1e-6, atol=1e-6)
    for t in range(7, 21):
        logits, state = model.step(ids[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-6, atol=1e-6)  # the SSM state is fp32


@pytest.mark.parametrize("prompt_len", [1, 3, 4, 9])
def test_mamba_prefill_from_a_new_state_equals_carrying_a_zero_state(prompt_len):
    """A state that has seen no token is prefilled without carrying (no concatenation, no initial
    state): the same logits and the same conv and SSM states as carrying a zero state, for prompts
    shorter than, as long as and longer than the conv's window; then decoding goes on as the full
    forward does."""
    model = tiny("mamba")
    ids = torch.randint(0, 16, (2, prompt_len + 3))
    full = model(ids)
    fresh = model.init_state(2, max_len=ids.shape[1], dtype=torch.float64)
    carried = model.init_state(2, max_len=ids.shape[1], dtype=torch.float64)
    for layer in carried:
        layer["fresh"] = False  # the general path, from zeros
    a, b = model.prefill(ids[:, :prompt_len], fresh), model.prefill(ids[:, :prompt_len], carried)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for x, y in zip(fresh, carried):
        assert not x["fresh"] and not y["fresh"]
        torch.testing.assert_close(x["conv"], y["conv"], rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(x["ssm"], y["ssm"], rtol=1e-6, atol=1e-6)
    for t in range(prompt_len, ids.shape[1]):
        logits, fresh = model.step(ids[:, t], fresh)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", ["mamba", "hyena"])
def test_mamba_and_hyena_blocks_take_an_mlp_of_any_kind(family):
    """`--set mlp` (none, gelu, swiglu): a SwiGLU after every mixer (MAD's blocks) adds its
    parameters, learns, and a Mamba with MLPs still decodes as its full forward."""
    counts = {mlp: sum(p.numel() for p in tiny(family, mlp=mlp).parameters()) for mlp in ("none", "gelu", "swiglu")}
    assert counts["none"] < min(counts["gelu"], counts["swiglu"]) and counts["gelu"] != counts["swiglu"]
    model = tiny(family, mlp="swiglu")
    assert all(block.mlp is not None and block.mlp.kind == "swiglu" for block in model.blocks)
    if family == "mamba":
        ids = torch.randint(0, 16, (2, 12))
        full = model(ids)
        state = model.init_state(2, max_len=12, dtype=torch.float64)
        logits = model.prefill(ids[:, :5], state)
        for t in range(5, 12):
            logits, state = model.step(ids[:, t], state)
            torch.testing.assert_close(logits, full[:, t], rtol=1e-6, atol=1e-6)
    with pytest.raises(Exception, match="--set mlp must be one of gelu, swiglu, none"):
        tiny(family, mlp="relu")


def test_generate_is_greedy_and_deterministic_at_temperature_zero():
    model = tiny("mamba", dtype=torch.float32)
    prompt = torch.randint(0, 16, (2, 8))
    a = model.generate(prompt, 5, temperature=0)
    b = model.generate(prompt, 5, temperature=0)
    assert a.shape == (2, 13) and torch.equal(a, b) and torch.equal(a[:, :8], prompt)
    g = torch.Generator().manual_seed(1)
    sampled = model.generate(prompt, 5, temperature=1.0, top_k=3, generator=g)
    assert sampled.shape == (2, 13)


def test_hyena_takes_any_length_up_to_its_maximum():
    model = tiny("hyena", max_len=100)
    for length in (1, 2, 7, 64, 100):
        assert model(torch.randint(0, 16, (1, length))).shape == (1, length, 16)
    with pytest.raises(ValueError, match="defined up to length 100"):
        model(torch.randint(0, 16, (1, 101)))


def test_absolute_positions_refuse_lengths_beyond_the_table():
    model = tiny("transformer-abs", max_len=40)
    with pytest.raises(ValueError, match="exceeds the 40 learned positions"):
        model(torch.randint(0, 16, (1, 41)))


@pytest.mark.parametrize("family,size", sorted(PUBLISHED))
def test_language_model_sizes_are_within_5_percent_of_published(family, size):
    assert abs(count_parameters(family, size) / PUBLISHED[(family, size)] - 1) < 0.05


def test_synthetic_sizes():
    # The paper reports 74K for its Mamba and ~137K for attention-only models; see models/presets.py.
    assert count_parameters("mamba", "synthetic") == 66_496
    assert count_parameters("transformer", "synthetic") == 133_504
    assert set(SIZES["mamba"]) >= {"130m", "370m", "790m", "1.4b", "2.8b"}


def test_mamba_excludes_a_log_d_and_dt_bias_from_weight_decay():
    from seqbench.models.backbone import parameter_groups

    model = tiny("mamba", dtype=torch.float32)
    mixer = model.blocks[0].mixer
    no_decay = {id(p) for g in parameter_groups(model, 0.1) if g["weight_decay"] == 0 for p in g["params"]}
    assert {id(mixer.A_log), id(mixer.D), id(mixer.dt_proj.bias)} <= no_decay
    assert id(mixer.in_proj.weight) not in no_decay


def test_hyena_filter_trains_at_its_own_learning_rate():
    from seqbench.models.backbone import parameter_groups

    model = tiny("hyena", dtype=torch.float32)
    groups = parameter_groups(model, 0.1, lr=4e-3)
    ratios = {g["lr_ratio"] for g in groups}
    assert ratios == {1.0, 0.25}
    filter_group = next(g for g in groups if g["lr_ratio"] == 0.25)
    assert filter_group["weight_decay"] == 0.0


@pytest.mark.parametrize("family", ["transformer", "transformer-abs", "hyena"])
def test_every_family_runs_induction_heads_through_the_runner(family, tmp_path):
    config = RunConfig(task="induction-heads", model=family, steps=3, batch_size=2, eval_lengths=[64, 256],
                       eval_samples=4, model_kwargs={"d_model": 32, "n_layers": 1}, device="cpu",
                       tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", checkpoint_dir=str(tmp_path / "ckpt"))
    result = run(config, progress=False)
    assert result.status == "ok"
    assert "accuracy/256" in result.metrics


@pytest.mark.parametrize("family", ["transformer", "transformer-xpos", "transformer++", "hybrid"])
def test_fixed_shape_attention_step_equals_the_full_forward(family):
    """The step a CUDA graph captures (device-side position, masked full cache) decodes exactly
    like the eager one; on the CPU it runs eagerly, the GPU test replays it as a graph."""
    model = tiny(family)
    ids = torch.randint(0, 16, (2, 15))
    full = model(ids)
    state = model.init_state(2, max_len=15, dtype=torch.float64)
    model.prefill(ids[:, :5], state)
    for layer in state:
        if "k" in layer:  # attention layers (a hybrid's Mamba layers have no position), as GraphedStep does
            layer["pos_t"] = torch.tensor([layer["pos"]])
    for t in range(5, 15):
        logits, state = model.step(ids[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-6, atol=1e-6)


def test_only_fixed_shape_families_are_graph_decodable():
    from seqbench.models.decoding import graph_decodable

    decodable = {family: graph_decodable(tiny(family)) for family in ("mamba", "transformer", "transformer++",
                                                                      "transformer-xpos", "transformer-abs", "hyena",
                                                                      "hybrid")}
    assert decodable == {"mamba": True, "transformer": True, "transformer++": True, "transformer-xpos": True,
                         "transformer-abs": False, "hyena": False, "hybrid": True}


def test_xpos_scales_a_query_key_product_by_its_distance_only():
    """xPos: queries times the scales, keys divided by them, so the product at positions (m, n)
    carries zeta ** ((m - n) / 512), decaying with distance, whatever the centre."""
    from seqbench.models.transformer import xpos_scales

    a = xpos_scales(64, 16, center=0)
    b = xpos_scales(64, 16, center=30)
    pair = lambda s, m, n: s[m] / s[n]  # noqa: E731
    torch.testing.assert_close(pair(a, 50, 10), pair(b, 50, 10))
    near, far = pair(a, 50, 40), pair(a, 50, 0)
    assert (far < near).all() and (near < 1).all() and (near[:-1] < near[1:]).all()  # low dims decay fastest
    model = tiny("transformer-xpos")
    assert model.max_seq_len == 16384 and model.family == "transformer-xpos"
