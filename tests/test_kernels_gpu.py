"""GPU checks of the Triton kernels against the PyTorch references (run on the H200; skipped on CPU).

Reference values: the sequential oracle in float64 for short sequences, the chunked scan in
float64 (checked against the oracle by tests/test_kernels_reference.py) for long ones.
"""

from __future__ import annotations

import math

import pytest
import torch

from seqbench.kernels import selective_scan
from seqbench.kernels.conv.reference import causal_conv1d_ref, causal_conv1d_update_ref
from seqbench.kernels.scan.reference import selective_scan_chunked, selective_scan_ref
from seqbench.kernels.decode.reference import selective_state_update_ref

pytestmark = pytest.mark.gpu

TOL = {torch.float32: (6e-4, 2e-3), torch.bfloat16: (3e-2, 5e-2), torch.float16: (3e-2, 5e-2)}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _inputs(batch, dim, length, n, dtype, groups=None, seed=0, device="cuda"):
    g = torch.Generator(device=device).manual_seed(seed)

    def rn(*s, dt=dtype):
        return torch.randn(*s, generator=g, device=device).to(dt)

    bc = (batch, n, length) if groups is None else (batch, groups, n, length)
    dt0 = torch.exp(torch.rand(dim, generator=g, device=device) * math.log(100.0) + math.log(1e-3))
    return dict(
        u=rn(batch, dim, length), delta=(0.5 * rn(batch, dim, length, dt=torch.float32)).to(dtype),
        A=-torch.arange(1, n + 1, device=device, dtype=torch.float32).repeat(dim, 1) * (0.5 + torch.rand(dim, 1, generator=g, device=device)),
        B=rn(*bc), C=rn(*bc), D=rn(dim, dt=torch.float32), z=rn(batch, dim, length),
        delta_bias=(dt0 + torch.log(-torch.expm1(-dt0))), initial_state=rn(batch, dim, n, dt=torch.float32),
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _run(fn, x, grads: bool):
    leaves = {k: v.detach().clone().requires_grad_(grads) for k, v in x.items()}
    out, last = fn(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"], z=leaves["z"],
        delta_bias=leaves["delta_bias"], delta_softplus=True, return_last_state=True,
        initial_state=leaves["initial_state"],
    )
    return out, last, leaves


@pytest.mark.parametrize(
    "batch,dim,length,n,dtype,groups",
    [
        (2, 8, 257, 16, torch.float32, None),
        (1, 16, 2048, 16, torch.float32, 2),
        (2, 8, 1000, 16, torch.bfloat16, None),
        (1, 4, 4096, 64, torch.float32, None),
        (1, 8, 65536, 16, torch.float32, None),
        (1, 8, 65536, 16, torch.bfloat16, None),
    ],
)
def test_scan_fwd_bwd_vs_reference(batch, dim, length, n, dtype, groups):
    x = _inputs(batch, dim, length, n, dtype, groups)
    out, last, leaves = _run(lambda *a, **k: selective_scan(*a, backend="triton", **k), x, True)
    torch.manual_seed(1)
    dout = torch.randn_like(out)
    dlast = torch.randn_like(last)
    ((out.float() * dout.float()).sum() + (last * dlast).sum()).backward()

    ref_fn = selective_scan_ref if length <= 2048 else selective_scan_chunked
    xr = {k: v.double() for k, v in x.items()}
    rout, rlast, rleaves = _run(ref_fn, xr, True)
    ((rout * dout.double()).sum() + (rlast * dlast.double()).sum()).backward()

    rtol, atol = TOL[dtype]
    # bf16 inputs round the reference's inputs identically (xr is made from the bf16 tensors);
    # the output is compared after rounding the reference to the output dtype.
    torch.testing.assert_close(out.double(), rout.to(dtype).double(), rtol=rtol, atol=atol)
    torch.testing.assert_close(last.double(), rlast, rtol=rtol, atol=atol)
    report = {}
    for name in NAMES:
        g, rg = leaves[name].grad, rleaves[name].grad
        assert g is not None and torch.isfinite(g).all(), name
        report[name] = _rel(g, rg)
    print(f"\n{batch}x{dim}x{length} N={n} {dtype} groups={groups}: out rel {_rel(out, rout):.2e}, "
          + ", ".join(f"d{k} {v:.1e}" for k, v in report.items()))
    # relative-norm bounds: fp32 far under 1e-3, bf16 under ~2e-2 (inputs rounded identically)
    bound = 2e-3 if dtype == torch.float32 else 3e-2
    for name, r in report.items():
        assert r < bound * (5 if name in ("delta", "delta_bias") else 2), (name, r)


@pytest.mark.parametrize("dtype,groups", [(torch.float32, None), (torch.bfloat16, 2)])
def test_scan_backward_repeats_through_scratch_addresses(dtype, groups):
    """A signature's first backward hands its scratch buffers to the kernels as tensors (it
    compiles them); later ones as raw addresses into one allocation. Every call's gradients
    match the reference, and the calls after the first match the first."""
    x = _inputs(2, 64, 1000, 16, dtype, groups)
    x.pop("initial_state")  # an initial state keeps the tensor path (dh0 is a view of the scratch)
    names = [k for k in NAMES if k in x]
    torch.manual_seed(1)
    dout = torch.randn(2, 64, 1000, device="cuda").to(dtype)
    grads = []
    for _ in range(3):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
        out = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"],
                             z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True, backend="triton")
        out.backward(dout)
        grads.append({k: leaves[k].grad.clone() for k in names})
    xr = {k: v.double().requires_grad_(True) for k, v in x.items()}
    ref = selective_scan_ref(xr["u"], xr["delta"], xr["A"], xr["B"], xr["C"], D=xr["D"], z=xr["z"],
                             delta_bias=xr["delta_bias"], delta_softplus=True)
    ref.backward(dout.double())
    bound = 2e-3 if dtype == torch.float32 else 3e-2
    for g in grads:
        for k in names:
            assert _rel(g[k], xr[k].grad) < bound * (5 if k in ("delta", "delta_bias") else 2), k
    for g in grads[1:]:
        for k in names:
            torch.testing.assert_close(g[k], grads[0][k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("config", [
    {"SEQ_MAX_TILES": 0, "SHORT_CALL_ELEMS": 0},     # three-kernel forward, `_reverse_tiles`
    {},                                              # a short call: single launch at T 64, C reversed by the tile states
    {"SEQ_GRAD": True},                              # the default single-launch forward, with its backward
    {"T_SEQ": 64, "BD_SEQ": 4, "SEQ_GRAD": True, "SEQ_MAX_TILES": 64},
    {"T_SEQ": 128, "BD_SEQ": 2, "SEQ_GRAD": True, "SEQ_MAX_TILES": 64},
    {"T_SEQ": 64, "BD_SEQ": 4, "WARPS_SEQ": 2, "SEQ_GRAD": True, "SEQ_MAX_TILES": 64},  # across warps: the barrier matters
    {"T_SEQ": 32, "BD_SEQ": 8, "WARPS_SEQ": 4, "UNROLL": 2, "SEQ_GRAD": True, "SEQ_MAX_TILES": 64},
    {"SEQ_GRAD_ROWS": 1, "T_SEQ_ROWS": 256, "SHORT_CALL_ELEMS": 0},  # long tiles, the backward's states at T
])
def test_scan_forward_paths_gpu(config):
    """Both forwards and the sequential forward's tile shapes (the backward then tiles by T_SEQ)."""
    from seqbench.kernels.scan.triton import selective_scan_triton

    x = _inputs(2, 64, 2000, 16, torch.float32, groups=2, seed=3)
    out, last, leaves = _run(lambda *a, **k: selective_scan_triton(*a, _config=config, **k), x, True)
    torch.manual_seed(1)
    dout, dlast = torch.randn_like(out), torch.randn_like(last)
    ((out * dout).sum() + (last * dlast).sum()).backward()
    rout, rlast, rleaves = _run(selective_scan_ref, {k: v.double() for k, v in x.items()}, True)
    ((rout * dout.double()).sum() + (rlast * dlast.double()).sum()).backward()
    torch.testing.assert_close(out.double(), rout, rtol=6e-4, atol=2e-3)
    torch.testing.assert_close(last.double(), rlast, rtol=6e-4, atol=2e-3)
    for name in NAMES:
        assert _rel(leaves[name].grad, rleaves[name].grad) < 4e-3 * (5 if name in ("delta", "delta_bias") else 1), name


def test_scan_64bit_offsets():
    """batch*dim*length > 2^31: the last channels (offsets past 2^31) must equal the same
    channels computed as a small problem, forward and backward."""
    batch, dim, length, n = 1, 1040, 1 << 21, 16
    assert batch * dim * length > 2**31
    x = _inputs(batch, dim, length, n, torch.bfloat16)
    x["initial_state"] = None
    sl = slice(dim - 8, dim)
    small = {k: (v[:, sl] if k in ("u", "delta", "z") else v[sl] if k in ("A", "D", "delta_bias") else v)
             for k, v in x.items() if v is not None}
    big_leaves = {k: v.requires_grad_(True) for k, v in x.items() if v is not None and k in ("u", "delta", "z")}
    out = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                         delta_bias=x["delta_bias"], delta_softplus=True, backend="triton")
    dout = torch.randn_like(out)
    out.backward(dout)
    sm = {k: v.detach().clone().requires_grad_(k in ("u", "delta", "z")) for k, v in small.items()}
    out_s = selective_scan(sm["u"], sm["delta"], sm["A"], sm["B"], sm["C"], D=sm["D"], z=sm["z"],
                           delta_bias=sm["delta_bias"], delta_softplus=True, backend="triton")
    out_s.backward(dout[:, sl].contiguous())
    assert torch.isfinite(out).all()
    # same per-channel math; tile shapes differ with dim, so allow bf16 rounding differences
    torch.testing.assert_close(out[:, sl].float(), out_s.float(), rtol=3e-2, atol=5e-2)
    for k in ("u", "delta", "z"):
        torch.testing.assert_close(big_leaves[k].grad[:, sl], sm[k].grad, rtol=1e-2, atol=1e-2)
    # spot-check against the fp32 chunked reference on the tail of the sequence
    with torch.no_grad():
        ref = selective_scan_chunked(*(small[k].float() if small[k].dtype != torch.float32 else small[k]
                                       for k in ("u", "delta", "A", "B", "C")),
                                     D=small["D"], z=small["z"].float(), delta_bias=small["delta_bias"],
                                     delta_softplus=True)
    assert _rel(out[:, sl, -4096:], ref[..., -4096:]) < 2e-2


def test_scan_dim5120_length_2pow20_fwd_bwd():
    """The largest shape of the contract: batch 1, dim 5120, length 2^20, bf16, forward and
    backward (5.4e9 elements per tensor). Checks that it runs, stays finite and that a few
    channels equal the same channels computed as a small problem."""
    batch, dim, length, n = 1, 5120, 1 << 20, 16
    x = _inputs(batch, dim, length, n, torch.bfloat16)
    leaves = {k: x[k].requires_grad_(True) for k in ("u", "delta", "z", "B", "C")}
    out = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                         delta_bias=x["delta_bias"], delta_softplus=True, backend="triton")
    dout = torch.randn_like(out)
    out.backward(dout)
    assert torch.isfinite(out).all()
    for k, v in leaves.items():
        assert torch.isfinite(v.grad).all(), k
    sl = slice(dim - 4, dim)
    sm = {k: x[k][:, sl].detach().clone().requires_grad_(True) for k in ("u", "delta", "z")}
    out_s = selective_scan(sm["u"], sm["delta"], x["A"][sl], x["B"].detach(), x["C"].detach(), D=x["D"][sl],
                           z=sm["z"], delta_bias=x["delta_bias"][sl], delta_softplus=True, backend="triton")
    out_s.backward(dout[:, sl].contiguous())
    torch.testing.assert_close(out[:, sl].float(), out_s.float(), rtol=3e-2, atol=5e-2)
    for k in ("u", "delta", "z"):
        torch.testing.assert_close(leaves[k].grad[:, sl].float(), sm[k].grad.float(), rtol=3e-2, atol=5e-2)
    del x, leaves, out, dout
    torch.cuda.empty_cache()


def test_state_update_matches_scan_steps():
    from seqbench.kernels.decode import selective_state_update

    batch, dim, length, n = 2, 64, 40, 16
    for groups in (None, 4):
        x = _inputs(batch, dim, length, n, torch.float32, groups)
        out, last = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                                   delta_bias=x["delta_bias"], delta_softplus=True, return_last_state=True,
                                   initial_state=x["initial_state"], backend="triton")
        state = x["initial_state"].clone()
        ys = []
        for t in range(length):
            ys.append(selective_state_update(state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t],
                                             x["C"][..., t], D=x["D"], z=x["z"][..., t], dt_bias=x["delta_bias"],
                                             dt_softplus=True))
        torch.testing.assert_close(torch.stack(ys, -1), out, rtol=6e-4, atol=2e-3)
        torch.testing.assert_close(state, last, rtol=6e-4, atol=2e-3)
        st2 = x["initial_state"].clone()
        y_ref = selective_state_update_ref(st2, x["u"][..., 0], x["delta"][..., 0], x["A"], x["B"][..., 0],
                                           x["C"][..., 0], x["D"], x["z"][..., 0], x["delta_bias"], True)
        torch.testing.assert_close(ys[0], y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_conv_gpu(width, dtype):
    from seqbench.kernels.conv import causal_conv1d, causal_conv1d_update

    x = torch.randn(2, 96, 3000, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(96, width, device="cuda", requires_grad=True)
    b = torch.randn(96, device="cuda", requires_grad=True)
    out = causal_conv1d(x, w, b, "silu")
    g = torch.randn_like(out)
    out.backward(g)
    xr, wr, br = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = causal_conv1d_ref(xr, wr, br, "silu")
    ref.backward(g.double())
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref.to(dtype).double(), rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.double(), xr.grad.to(dtype).double(), rtol=rtol, atol=atol)
    assert _rel(w.grad, wr.grad) < 1e-2 and _rel(b.grad, br.grad) < 1e-2
    st = torch.randn(2, 96, width, device="cuda", dtype=dtype)
    st2 = st.clone()
    xs = torch.randn(2, 96, device="cuda", dtype=dtype)
    y1 = causal_conv1d_update(xs, st, w.detach(), b.detach(), "silu")
    y2 = causal_conv1d_update_ref(xs, st2, w.detach(), b.detach(), "silu")
    torch.testing.assert_close(st, st2)
    torch.testing.assert_close(y1.float(), y2.float(), rtol=rtol, atol=atol)


def test_launch_cache_respects_specialisation():
    """seqbench.kernels.launch reuses a compiled kernel only for arguments Triton would compile the same:
    after aligned calls, views that are not 16-byte aligned and lengths of 1, 16 or 17 must still
    give exact results (a wrong cache hit would run vectorised loads on them)."""
    import triton
    import triton.language as tl

    from seqbench.kernels.launch import _compiled, launch

    @triton.jit
    def _axpy(x_ptr, y_ptr, out_ptr, n, a, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        tl.store(out_ptr + offs, a * tl.load(x_ptr + offs, mask=m) + tl.load(y_ptr + offs, mask=m), mask=m)

    base = torch.randn(4096 + 3, device="cuda")
    for offset, n in ((0, 4096), (0, 4096), (1, 4095), (0, 17), (3, 16), (0, 1), (2, 1), (0, 4096)):
        x, y = base[offset:offset + n], base.flip(0)[offset:offset + n].contiguous()
        out = torch.empty(n, device="cuda")
        launch(_axpy, (triton.cdiv(n, 256),), x, y, out, n, 0.5, BLOCK=256, num_warps=4)
        torch.testing.assert_close(out, 0.5 * x + y, rtol=0, atol=0)
    keys = [k for k in _compiled if k[0] is _axpy]
    assert len(keys) >= 4  # aligned, unaligned, n == 1, n not divisible by 16 each compile apart
