"""The Mamba block's channel-major forward (models.channel_major projections, the conv and scan
kernels on their native layout) against the plain token-major PyTorch block: values and every
parameter gradient, on the reference kernels and on the Triton kernels (interpreter on CPU), in
both row layouts the projections can write (batch-major, channel-outer)."""

import pytest
import torch

from seqbench.models import channel_major
from seqbench.models.mamba import MambaMixer, mamba_mixer_reference

LAYOUTS = {"batch-major": False, "channel-outer": True}


def _grads(mixer, out, seed):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    mixer.zero_grad(set_to_none=True)
    params = dict(mixer.named_parameters())
    grads = torch.autograd.grad(out, [*params.values()], g, allow_unused=True, retain_graph=True)
    return dict(zip(params, grads))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("batch,length,bias", [(2, 37, False), (1, 16, True)])
def test_channel_major_block_matches_the_plain_block(backend, batch, length, bias, layout, monkeypatch):
    monkeypatch.setattr(channel_major, "CHANNEL_OUTER", LAYOUTS[layout])
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4, expand=2, bias=bias, backend=backend)
    hidden = torch.randn(batch, length, 16, requires_grad=True)
    ref_hidden = hidden.detach().clone().requires_grad_()
    out = mixer(hidden)
    ref = mamba_mixer_reference(mixer, ref_hidden)
    torch.testing.assert_close(out, ref, rtol=2e-4, atol=2e-5)
    grads, ref_grads = _grads(mixer, out, 1), _grads(mixer, ref, 1)
    for name, g in grads.items():
        assert g is not None, name
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-3, atol=1e-4, msg=name)
    (dh,) = torch.autograd.grad(out, hidden, torch.ones_like(out))
    (ref_dh,) = torch.autograd.grad(ref, ref_hidden, torch.ones_like(ref))
    assert dh.is_contiguous()
    torch.testing.assert_close(dh, ref_dh, rtol=1e-3, atol=1e-4)


def _ops(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_channel_outer_projections_are_single_gemms_forward_and_backward(monkeypatch):
    """Channel-outer, a training step of the block on the Triton kernels (the one-node block)
    runs its projections and their weight gradients as 2-D GEMMs over all positions: no batched
    GEMM, so no batch sums of weight gradients; batch-major (the other layout) does run them,
    which keeps this check meaningful. (The reference scan has batched products of its own.)"""
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4, expand=2, backend="triton")
    hidden = torch.randn(3, 20, 16, requires_grad=True)
    step = lambda: mixer(hidden).square().sum().backward()  # noqa: E731
    step()  # compile / warm
    seen = {}
    for layout, outer in LAYOUTS.items():
        monkeypatch.setattr(channel_major, "CHANNEL_OUTER", outer)
        seen[layout] = _ops(step)
    assert "aten::bmm" not in seen["channel-outer"] and "aten::mm" in seen["channel-outer"]
    assert "aten::bmm" in seen["batch-major"]


def test_bf16_weights_run_in_bf16_without_autocast():
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4).to(torch.bfloat16)
    hidden = torch.randn(2, 24, 16, dtype=torch.bfloat16)
    out = mixer(hidden)
    assert out.dtype == torch.bfloat16
    ref = mamba_mixer_reference(mixer.float(), hidden.float())
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_major_block_matches_the_plain_block_on_cuda(dtype, layout, monkeypatch):
    """The Triton kernels on the GPU, at a width where the tiles are full: fp32 inputs, and bf16
    under autocast (the training setting) compared with the plain block under the same autocast."""
    monkeypatch.setattr(channel_major, "CHANNEL_OUTER", LAYOUTS[layout])
    torch.manual_seed(0)
    mixer = MambaMixer(256, d_state=16).cuda()
    hidden = torch.randn(2, 1000, 256, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = mixer(hidden)
        ref = mamba_mixer_reference(mixer, hidden)
    tol = dict(rtol=1e-3, atol=1e-4) if dtype == torch.float32 else dict(rtol=5e-2, atol=2e-2)
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    grads, ref_grads = _grads(mixer, out.float(), 1), _grads(mixer, ref.float(), 1)
    for name, g in grads.items():
        scale = ref_grads[name].abs().max().clamp_min(1e-6)
        rel = ((g - ref_grads[name]).abs().max() / scale).item()
        assert rel < (2e-3 if dtype == torch.float32 else 6e-2), (name, rel)
