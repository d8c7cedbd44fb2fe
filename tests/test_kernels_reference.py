"""CPU checks of the PyTorch references in kernels/reference.py: the chunked scan against the
sequential oracle, float64 gradcheck of the oracle, decode-step and conv consistency."""

from __future__ import annotations

import pytest
import torch

from seqbench.kernels.conv.reference import causal_conv1d_ref, causal_conv1d_update_ref
from seqbench.kernels.scan.reference import selective_scan_chunked, selective_scan_ref
from seqbench.kernels.decode.reference import selective_state_update_ref


def _inputs(batch, dim, length, n, dtype=torch.float32, groups=None, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rn(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)

    bc = (batch, n, length) if groups is None else (batch, groups, n, length)
    return dict(
        u=rn(batch, dim, length),
        delta=(0.5 * rn(batch, dim, length) - 1.0).to(dtype),
        A=(-torch.rand(dim, n, generator=g, dtype=torch.float64) * 2 - 0.1).to(torch.float32 if dtype != torch.float64 else dtype),
        B=rn(*bc), C=rn(*bc),
        D=rn(dim).to(torch.float32 if dtype != torch.float64 else dtype),
        z=rn(batch, dim, length),
        delta_bias=(0.3 * rn(dim)).to(torch.float32 if dtype != torch.float64 else dtype),
        initial_state=rn(batch, dim, n).to(torch.float32 if dtype != torch.float64 else dtype),
    )


def _call(fn, x, use, softplus, last=True, **kw):
    # without softplus, delta is used as dt directly: keep it positive (decays below 1)
    delta = x["delta"] if softplus else (x["delta"].abs() * 0.2 + 0.01).to(x["delta"].dtype)
    return fn(x["u"], delta, x["A"], x["B"], x["C"],
              D=x["D"] if "D" in use else None, z=x["z"] if "z" in use else None,
              delta_bias=x["delta_bias"] if "bias" in use else None, delta_softplus=softplus,
              return_last_state=last, initial_state=x["initial_state"] if "h0" in use else None, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [1, 7, 64, 129])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("use,softplus", [((), False), (("D", "z", "bias", "h0"), True), (("z",), True), (("D", "h0"), False)])
def test_chunked_matches_oracle(dtype, length, groups, use, softplus):
    x = _inputs(2, 4, length, 3, dtype, groups)
    ref, ref_last = _call(selective_scan_ref, x, use, softplus)
    for chunk in (None, 5):
        out, last = _call(selective_scan_chunked, x, use, softplus, chunk=chunk)
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, ref, **tol)
        torch.testing.assert_close(last, ref_last, **tol)
        assert out.dtype == x["u"].dtype and last.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_chunked_small_blocks_carry_state():
    """block_elements forces several sequential blocks: the state must carry between them."""
    x = _inputs(1, 3, 50, 2, torch.float64)
    ref, ref_last = _call(selective_scan_ref, x, ("D", "z", "h0"), True)
    out, last = _call(selective_scan_chunked, x, ("D", "z", "h0"), True, block_elements=3 * 2 * 7)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(last, ref_last)


def test_bf16_output_dtype():
    x = _inputs(1, 2, 9, 2, torch.bfloat16)
    out = _call(selective_scan_chunked, x, ("D", "z"), True, last=False)
    ref = _call(selective_scan_ref, x, ("D", "z"), True, last=False)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_gradcheck_oracle_float64():
    x = _inputs(1, 2, 5, 2, torch.float64, groups=None, seed=3)
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}

    def f(u, delta, A, B, C, D, z, bias, h0):
        out, last = selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                       return_last_state=True, initial_state=h0)
        return out, last

    args = tuple(leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def test_gradcheck_chunked_grouped_float64():
    x = _inputs(1, 4, 6, 2, torch.float64, groups=2, seed=4)
    args = tuple(x[k].clone().requires_grad_(True) for k in ("u", "delta", "A", "B", "C"))

    def f(u, delta, A, B, C):
        return selective_scan_chunked(u, delta, A, B, C, delta_softplus=True, chunk=4)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("groups", [None, 2])
def test_state_update_ref_matches_scan(groups):
    x = _inputs(2, 4, 11, 3, torch.float64, groups)
    ref, ref_last = _call(selective_scan_ref, x, ("D", "z", "bias", "h0"), True)
    state = x["initial_state"].clone()
    ys = []
    for t in range(11):
        ys.append(selective_state_update_ref(state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t],
                                             x["C"][..., t], x["D"], x["z"][..., t], x["delta_bias"], True))
    torch.testing.assert_close(torch.stack(ys, -1), ref)
    torch.testing.assert_close(state, ref_last)


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("act", [None, "silu"])
def test_conv_update_ref_matches_conv(width, act):
    g = torch.Generator().manual_seed(width)
    x = torch.randn(2, 3, 10, generator=g, dtype=torch.float64)
    w = torch.randn(3, width, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    full = causal_conv1d_ref(x, w, b, act)
    state = torch.zeros(2, 3, width, dtype=torch.float64)
    steps = [causal_conv1d_update_ref(x[..., t], state, w, b, act) for t in range(10)]
    torch.testing.assert_close(torch.stack(steps, -1), full)
    torch.testing.assert_close(state, x[..., -width:])


def test_conv_ref_formula():
    x = torch.arange(1.0, 6.0).view(1, 1, 5)
    w = torch.tensor([[1.0, 10.0, 100.0]])
    out = causal_conv1d_ref(x, w)
    # out_t = w0 x_{t-2} + w1 x_{t-1} + w2 x_t
    assert out.flatten().tolist() == [100.0, 210.0, 321.0, 432.0, 543.0]
