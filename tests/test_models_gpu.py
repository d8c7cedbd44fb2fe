"""On the GPU: the Mamba model runs on the Triton kernels and agrees with the PyTorch path."""

import pytest
import torch

from seqbench.models import build_model
from seqbench.tasks.base import HeadSpec

pytestmark = pytest.mark.gpu


def _pair(**kwargs):
    torch.manual_seed(0)
    fused = build_model("mamba", 16, HeadSpec("token", 16), d_model=64, n_layers=2, **kwargs).cuda()
    torch.manual_seed(0)
    plain = build_model("mamba", 16, HeadSpec("token", 16), d_model=64, n_layers=2, backend="reference").cuda()
    return fused, plain


def test_mamba_on_triton_matches_the_reference_scan_forward_and_backward():
    fused, plain = _pair()
    ids = torch.randint(0, 16, (4, 1000), device="cuda")
    a, b = fused(ids), plain(ids)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    a.float().pow(2).mean().backward()
    b.float().pow(2).mean().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-2, atol=1e-4, msg=name)


def test_mamba_decodes_on_the_gpu_step_kernels():
    fused, _ = _pair()
    ids = torch.randint(0, 16, (2, 40), device="cuda")
    full = fused(ids)
    state = fused.init_state(2)
    logits = fused.prefill(ids[:, :20], state)
    torch.testing.assert_close(logits, full[:, 19], rtol=1e-3, atol=1e-3)
    for t in range(20, 40):
        logits, state = fused.step(ids[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-3, atol=1e-3)


def test_bf16_autocast_training_step_is_finite():
    fused, _ = _pair()
    ids = torch.randint(0, 16, (8, 2048), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(fused(ids).float().flatten(0, 1), ids.flatten())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in fused.parameters())


@pytest.mark.parametrize("family", ["mamba", "transformer"])
def test_cuda_graph_decoding_equals_eager_decoding(family):
    from seqbench.models.decoding import GraphedStep

    torch.manual_seed(0)
    model = build_model(family, 16, HeadSpec("token", 16), d_model=64, n_layers=2).cuda()
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
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.equal(model.generate(prompt, 6, temperature=0, cuda_graph=True)[:, :40], prompt)


@pytest.mark.parametrize("family", ["mamba", "transformer"])
def test_held_decode_step_is_reused_and_reset_between_calls(family):
    """generate(cuda_graph=True) keeps its captured step: calls of the same shape replay it from a
    reset state (same tokens as eager decoding for each new prompt), another batch recaptures."""
    from seqbench.models.decoding import _held, release_held_step

    torch.manual_seed(0)
    model = build_model(family, 16, HeadSpec("token", 16), d_model=64, n_layers=2).cuda()
    prompts = [torch.randint(0, 16, (3, 40), device="cuda") for _ in range(2)]
    steps = []
    for prompt in (prompts[0], prompts[1], prompts[0]):
        graphed = model.generate(prompt, 8, temperature=0, cuda_graph=True)
        assert torch.equal(graphed, model.generate(prompt, 8, temperature=0))
        steps.append(_held[model])
    assert steps[0] is steps[1] is steps[2]
    model.generate(prompts[0][:2], 8, temperature=0, cuda_graph=True)
    assert _held[model] is not steps[0]
    release_held_step(model)
    assert model not in _held
