"""Fused add + RMSNorm (kernels/norm/): the Triton path against the PyTorch reference, on CPU
tensors under TRITON_INTERPRET=1 (tests/conftest.py sets it without CUDA), and on CUDA in the
`gpu` test. Both paths run on the same inputs; bf16 results are compared in fp32."""

from __future__ import annotations

import os

import pytest
import torch

from seqbench.kernels.norm import triton as rmsnorm
from seqbench.kernels.norm import add_rms_norm, add_rms_norm_ref

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_triton = pytest.mark.skipif(not torch.cuda.is_available() and not INTERPRET,
                                  reason="needs CUDA or TRITON_INTERPRET=1")

TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


def _inputs(shape, dtype, residual_dtype, weight_dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    d = shape[-1]
    hidden = torch.randn(*shape, generator=g).to(dtype)
    residual = None if residual_dtype is None else (2 * torch.randn(*shape, generator=g)).to(residual_dtype)
    weight = (1 + 0.3 * torch.randn(d, generator=g)).to(weight_dtype)
    return [t if t is None else t.to(device) for t in (hidden, residual, weight)]


def _run(hidden, residual, weight, use_residual_out, backend, seed=1, **kw):
    """Forward, then backward of sum(normed * gy) (+ sum(new_residual * gr)); returns outputs and grads."""
    leaves = [t if t is None else t.detach().clone().requires_grad_(True) for t in (hidden, residual, weight)]
    fn = add_rms_norm_ref if backend == "reference" else add_rms_norm
    kwargs = kw if backend == "reference" else dict(kw, backend=backend)
    normed, new_res = fn(*leaves, **kwargs)
    g = torch.Generator().manual_seed(seed)
    loss = (normed.float() * torch.randn(normed.shape, generator=g).to(normed.device)).sum()
    if use_residual_out:
        loss = loss + (new_res.float() * torch.randn(new_res.shape, generator=g).to(new_res.device)).sum()
    loss.backward()
    return normed, new_res, [t if t is None else t.grad for t in leaves]


def _assert_close(got, want, tol_dtype):
    assert got.dtype == want.dtype and got.shape == want.shape
    rtol, atol = TOL[tol_dtype]
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=atol)


def _compare(shape, dtype, residual_dtype, residual_in_fp32, use_residual_out, out_dtype=None,
             device="cpu", weight_dtype=torch.float32):
    inputs = _inputs(shape, dtype, residual_dtype, weight_dtype, device)
    kw = dict(residual_in_fp32=residual_in_fp32, out_dtype=out_dtype)
    got = _run(*inputs, use_residual_out, "triton", **kw)
    want = _run(*inputs, use_residual_out, "reference", **kw)
    tol = torch.bfloat16 if torch.bfloat16 in (dtype, residual_dtype, weight_dtype) else dtype
    expected_res = torch.float32 if residual_in_fp32 else dtype
    assert got[1].dtype == expected_res and got[0].dtype == (out_dtype or weight_dtype)
    _assert_close(got[0], want[0], tol)
    _assert_close(got[1], want[1], tol)
    for name, g, w in zip(("hidden", "residual", "weight"), got[2], want[2]):
        if w is None:
            assert g is None, name
            continue
        # d_weight sums over rows of bf16-rounded products: scale its tolerance by the row count
        scale = 1 if name != "weight" else (10 if tol == torch.float32 else 4)  # fp32: summation order
        rtol, atol = TOL[tol]
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g.float(), w.float(), rtol=rtol * scale, atol=atol * scale, msg=name)
    return got


@needs_triton
@pytest.mark.parametrize("d", [64, 48, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("residual_in_fp32", [True, False])
@pytest.mark.parametrize("use_residual_out", [True, False])
def test_matches_reference(d, dtype, residual_in_fp32, use_residual_out):
    # residual as the previous block leaves it: fp32 or hidden's dtype
    residual_dtype = torch.float32 if residual_in_fp32 else dtype
    _compare((2, 5, d), dtype, residual_dtype, residual_in_fp32, use_residual_out)


@needs_triton
@pytest.mark.parametrize("d", [64, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("residual_in_fp32", [True, False])
def test_first_block_without_residual(d, dtype, residual_in_fp32):
    _, _, grads = _compare((2, 5, d), dtype, None, residual_in_fp32, use_residual_out=True)
    assert grads[1] is None


@needs_triton
@pytest.mark.parametrize("dtype, residual_dtype, out_dtype, weight_dtype", [
    (torch.bfloat16, torch.float32, torch.bfloat16, torch.float32),
    (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16),  # two gradient dtypes
    (torch.bfloat16, torch.bfloat16, None, torch.bfloat16),
    (torch.float16, torch.float32, torch.float16, torch.float32),
])
def test_dtypes_and_explicit_out_dtype(dtype, residual_dtype, out_dtype, weight_dtype):
    _compare((3, 7, 48), dtype, residual_dtype, True, True, out_dtype=out_dtype, weight_dtype=weight_dtype)


@needs_triton
def test_more_rows_than_programs():
    # several row tiles per backward program, with a ragged last tile
    _compare((67, 64), torch.float32, torch.float32, True, True)
    _compare((1, 3, 1, 100), torch.float32, torch.float32, True, False)


@needs_triton
def test_non_contiguous_inputs():
    hidden, residual, weight = _inputs((2, 10, 48), torch.float32, torch.float32)
    cases = [
        (hidden[:, :5], residual[:, 3:8]),                                  # rows not evenly strided
        (hidden.transpose(0, 1), residual.transpose(0, 1)),                  # permuted leading dims
        (hidden.transpose(1, 2).contiguous().transpose(1, 2), residual),     # d not unit-stride
    ]
    for h, r in cases:
        got = _run(h, r, weight, True, "triton")
        want = _run(h, r, weight, True, "reference")
        for a, b in zip((got[0], got[1], *got[2]), (want[0], want[1], *want[2])):
            _assert_close(a, b, torch.float32)


@needs_triton
def test_gradient_of_chained_blocks():
    # block 2 takes block 1's new_residual: its gradient reaches block 1 through d_new_residual
    hidden, residual, weight = _inputs((2, 5, 64), torch.bfloat16, torch.float32)
    h2 = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    results = []
    for backend in ("triton", "reference"):
        leaves = [t.detach().clone().requires_grad_(True) for t in (hidden, residual, weight, h2)]
        kw = {} if backend == "reference" else {"backend": backend}
        fn = add_rms_norm_ref if backend == "reference" else add_rms_norm
        n1, r1 = fn(leaves[0], leaves[1], leaves[2], **kw)
        n2, _ = fn(leaves[3] + n1.to(torch.bfloat16), r1, leaves[2], **kw)
        n2.float().square().sum().backward()
        results.append([t.grad for t in leaves])
    for got, want in zip(*results):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


@needs_triton
def test_no_grad_and_partial_requires_grad():
    hidden, residual, weight = _inputs((2, 5, 64), torch.float32, torch.float32)
    with torch.no_grad():
        normed, new_res = add_rms_norm(hidden, residual, weight, backend="triton")
    want = add_rms_norm_ref(hidden, residual, weight)
    _assert_close(normed, want[0], torch.float32)
    _assert_close(new_res, want[1], torch.float32)
    # weight alone requires grad (frozen activations)
    w = weight.clone().requires_grad_(True)
    add_rms_norm(hidden, residual, w, backend="triton")[0].sum().backward()
    w_ref = weight.clone().requires_grad_(True)
    add_rms_norm_ref(hidden, residual, w_ref)[0].sum().backward()
    _assert_close(w.grad, w_ref.grad, torch.float32)
    # only new_residual used: no norm backward, no weight gradient
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    add_rms_norm(h, residual, w, backend="triton")[1].sum().backward()
    assert w.grad is None
    torch.testing.assert_close(h.grad, torch.ones_like(h))


def test_reference_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, r, w: add_rms_norm_ref(h, r, w), (hidden, residual, weight))


def test_float64_and_cpu_auto_take_reference(monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("the Triton kernel should not run")

    monkeypatch.setattr(rmsnorm, "launch", no_launch)
    hidden, residual, weight = _inputs((2, 5, 48), torch.float64, torch.float64, torch.float64)
    normed, new_res = add_rms_norm(hidden, residual, weight, backend="triton")
    assert normed.dtype == new_res.dtype == torch.float64
    want = add_rms_norm_ref(hidden, residual, weight)
    torch.testing.assert_close(normed, want[0])
    hidden, residual, weight = _inputs((2, 5, 48), torch.bfloat16, torch.float32)
    normed, new_res = add_rms_norm(hidden, residual, weight)  # auto on CPU tensors
    assert normed.dtype == new_res.dtype == torch.float32


def test_bad_inputs_raise():
    hidden, residual, weight = _inputs((2, 5, 48), torch.float32, torch.float32)
    with pytest.raises(ValueError, match="residual must have"):
        add_rms_norm(hidden, residual[:, :4], weight)
    with pytest.raises(ValueError, match="weight must be"):
        add_rms_norm(hidden, residual, weight[:40])
    with pytest.raises(ValueError, match="weight must be"):
        add_rms_norm(hidden, residual, weight.expand(2, 48))
    with pytest.raises(ValueError, match="unknown backend"):
        add_rms_norm(hidden, residual, weight, backend="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only check")
def test_forced_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden, residual, weight = _inputs((2, 5, 48), torch.float32, torch.float32)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        add_rms_norm(hidden, residual, weight, backend="triton")


@pytest.mark.gpu
class TestGPU:
    SHAPE = (8, 2048, 768)

    @pytest.mark.parametrize("residual_in_fp32", [True, False])
    @pytest.mark.parametrize("use_residual_out", [True, False])
    def test_bf16_matches_reference(self, residual_in_fp32, use_residual_out):
        residual_dtype = torch.float32 if residual_in_fp32 else torch.bfloat16
        _compare(self.SHAPE, torch.bfloat16, residual_dtype, residual_in_fp32, use_residual_out, device="cuda")

    def test_fp32_and_wide_rows(self):
        _compare((4, 512, 768), torch.float32, torch.float32, True, True, device="cuda")
        _compare((2, 64, 8192), torch.bfloat16, torch.float32, True, True, out_dtype=torch.bfloat16, device="cuda")
        _compare((2, 64, 1000), torch.bfloat16, None, True, True, device="cuda")
