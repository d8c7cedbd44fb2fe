"""Inference runs the kernels without autograd nodes (kernels.backend.needs_autograd): the fused
add + RMSNorm, the causal conv and the channel-major projections give, under torch.no_grad or on
tensors that need no gradient, exactly what their differentiable calls give, and record nothing.
Triton on CPU tensors under TRITON_INTERPRET=1 (tests/conftest.py), on CUDA where there is one."""

from __future__ import annotations

import os

import pytest
import torch

from seqbench.kernels.backend import needs_autograd
from seqbench.kernels.conv import causal_conv1d
from seqbench.kernels.norm import add_rms_norm
from seqbench.models.channel_major import channels_to_tokens, tokens_to_channels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="needs CUDA or TRITON_INTERPRET=1")


def _t(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype).to(DEVICE)


def test_needs_autograd_follows_grad_mode_and_requires_grad():
    leaf = torch.zeros(2, requires_grad=True)
    assert needs_autograd(torch.zeros(2), leaf, None, 3)
    assert not needs_autograd(torch.zeros(2), None, 3)
    with torch.no_grad():
        assert not needs_autograd(leaf)


def _both(fn, *tensors):
    """fn on leaves that require gradients (an autograd node), then under no_grad (none)."""
    leaves = [t if t is None else t.clone().requires_grad_(True) for t in tensors]
    with_grad = fn(*leaves)
    with torch.no_grad():
        without = fn(*tensors)
    plain = fn(*tensors)  # grad mode on, but nothing requires a gradient
    return [with_grad, without, plain]


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_conv_and_projections_without_autograd_give_the_same_values(dtype):
    b, d, l, k = 2, 32, 24, 16
    cases = {
        "add_rms_norm": (lambda h, r, w: add_rms_norm(h, r, w, eps=1e-5, residual_in_fp32=True,
                                                      backend="triton"),
                         (_t(b, l, d, dtype=dtype), _t(b, l, d, seed=1), 1 + 0.1 * _t(d, seed=2))),
        "causal_conv1d": (lambda x, w, bias: causal_conv1d(x, w, bias, activation="silu", backend="triton"),
                          (_t(b, d, l, dtype=dtype), _t(d, 4, seed=1, dtype=dtype), _t(d, seed=2, dtype=dtype))),
        "tokens_to_channels": (lambda h, w: tokens_to_channels(h, w, (k, d - k)),
                               (_t(b, l, k, dtype=dtype), _t(d, k, seed=1, dtype=dtype))),
        "channels_to_tokens": (lambda y, w: channels_to_tokens(y, w),
                               (_t(b, d, l, dtype=dtype), _t(k, d, seed=1, dtype=dtype))),
    }
    for name, (fn, tensors) in cases.items():
        with_grad, without, plain = (_flat(o) for o in _both(fn, *tensors))
        assert all(o.grad_fn is not None for o in with_grad), name
        for outs in (without, plain):
            assert all(o.grad_fn is None and not o.requires_grad for o in outs), name
            for a, e in zip(outs, with_grad):
                assert a.dtype == e.dtype and a.shape == e.shape and a.is_contiguous() == e.is_contiguous(), name
                torch.testing.assert_close(a, e.detach(), rtol=0, atol=0, msg=name)


@needs_triton
def test_a_mamba_model_infers_the_same_with_and_without_autograd():
    from seqbench.core.types import HeadSpec
    from seqbench.models.mamba import build_mamba

    torch.manual_seed(0)
    model = build_mamba(vocab_size=11, head=HeadSpec(kind="token", n_outputs=11), d_model=16, n_layers=2,
                        backend="triton").to(DEVICE)
    ids = torch.randint(0, 11, (2, 20), device=DEVICE)
    with torch.no_grad():
        inferred = model(ids)
    trained = model(ids)
    assert inferred.grad_fn is None and trained.grad_fn is not None
    torch.testing.assert_close(inferred, trained.detach(), rtol=1e-5, atol=1e-5)
