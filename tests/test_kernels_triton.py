"""The Triton kernels against the PyTorch references, on CPU tensors under TRITON_INTERPRET=1
(tests/conftest.py sets it when there is no CUDA). Small shapes: the interpreter is slow.

Tolerances are kernels/CONTRACT.md's: fp32 rtol 6e-4 / atol 2e-3, bf16 3e-2 / 5e-2; du twice that,
ddelta (and ddelta_bias) 5x rtol and 10x atol.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from seqbench.kernels import selective_scan
from seqbench.kernels.conv.reference import causal_conv1d_ref, causal_conv1d_update_ref
from seqbench.kernels.scan.reference import selective_scan_ref
from seqbench.kernels.decode.reference import selective_state_update_ref

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(DEVICE == "cpu" and not INTERPRET, reason="needs CUDA or TRITON_INTERPRET=1")

TOL = {torch.float32: (6e-4, 2e-3), torch.bfloat16: (3e-2, 5e-2)}
GRAD_SCALE = {"u": (2, 2), "delta": (5, 10), "delta_bias": (5, 10)}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _inputs(batch, dim, length, n, dtype, groups=None, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rn(*s, dt=dtype):
        return torch.randn(*s, generator=g).to(dt)

    bc = (batch, n, length) if groups is None else (batch, groups, n, length)
    return dict(
        u=rn(batch, dim, length),
        delta=(0.5 * rn(batch, dim, length, dt=torch.float32) - 1.5).to(dtype),
        A=-(torch.rand(dim, n, generator=g) * 3 + 0.2),
        B=rn(*bc), C=rn(*bc),
        D=rn(dim, dt=torch.float32), z=rn(batch, dim, length),
        delta_bias=0.3 * rn(dim, dt=torch.float32),
        initial_state=rn(batch, dim, n, dt=torch.float32),
    )


def _run(fn, x, use, softplus, **kw):
    leaves = {k: v.detach().clone().to(DEVICE).requires_grad_(True) for k, v in x.items()}
    out, last = fn(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
        D=leaves["D"] if "D" in use else None, z=leaves["z"] if "z" in use else None,
        delta_bias=leaves["delta_bias"] if "bias" in use else None, delta_softplus=softplus,
        return_last_state=True, initial_state=leaves["initial_state"] if "h0" in use else None, **kw,
    )
    return out, last, leaves


def _check(x, use, softplus, dtype, config=None):
    if config is None:  # through the public entry point
        out, last, leaves = _run(selective_scan, x, use, softplus, backend="triton")
    else:
        from seqbench.kernels.scan.triton import selective_scan_triton

        out, last, leaves = _run(selective_scan_triton, x, use, softplus, _config=config)
    xr = {k: v.double() for k, v in x.items()}
    rout, rlast, rleaves = _run(selective_scan_ref, xr, use, softplus)
    g = torch.Generator().manual_seed(7)
    dout = torch.randn(out.shape, generator=g).to(DEVICE)
    dlast = torch.randn(last.shape, generator=g).to(DEVICE)
    ((out.float() * dout).sum() + (last * dlast).sum()).backward()
    ((rout * dout.double()).sum() + (rlast * dlast.double()).sum()).backward()
    rtol, atol = TOL[dtype]
    assert out.dtype == dtype and last.dtype == torch.float32 and last.shape == rlast.shape
    torch.testing.assert_close(out.double().cpu(), rout.to(dtype).double().cpu(), rtol=rtol, atol=atol)
    torch.testing.assert_close(last.double().cpu(), rlast.cpu(), rtol=rtol, atol=atol)
    for name in NAMES:
        used = {"D": "D", "z": "z", "delta_bias": "bias", "initial_state": "h0"}.get(name)
        grad, rgrad = leaves[name].grad, rleaves[name].grad
        if used is not None and used not in use:
            assert grad is None
            continue
        assert grad is not None and grad.dtype == leaves[name].dtype and grad.shape == leaves[name].shape, name
        sr, sa = GRAD_SCALE.get(name, (1, 1))
        # reduced gradients (sums over batch, time, channels) scale with the number of terms
        torch.testing.assert_close(grad.double().cpu(), rgrad.to(grad.dtype).double().cpu(),
                                   rtol=rtol * sr, atol=atol * sa * (4 if dtype == torch.bfloat16 and name in ("A", "B", "C", "D", "delta_bias") else 1),
                                   msg=lambda m, n=name: f"d{n}: {m}")


ALL = ("D", "z", "bias", "h0")
# both forwards, each with its backward: SEQ_GRAD makes the single-launch `_fwd_seq` run under
# autograd too (by default only a forward without gradients uses it; see test_forward_path_dispatch),
# SEQ_MAX_TILES = 0 forces the three-kernel forward; SUMS_MAX_ROWS = 0 the backward's reductions
# in PyTorch instead of `_bwd_sums`; C_REV_LOAD reads C reversed in `_bwd_main`. These shapes are
# short calls: by default the single-launch forward tiled at T and C reversed by the tile-state
# kernel; SHORT_CALL_ELEMS = 0 gives them the long calls' paths (three kernels, `_reverse_tiles`)
PATHS = [pytest.param({}, id="default-short"), pytest.param({"SEQ_GRAD": True}, id="seq"),
         pytest.param({"SEQ_MAX_TILES": 0, "SHORT_CALL_ELEMS": 0}, id="tiles"),
         pytest.param({"SEQ_MAX_TILES": 0, "SUMS_MAX_ROWS": 0, "SHORT_CALL_ELEMS": 0}, id="tiles-torch-sums"),
         pytest.param({"C_REV_LOAD": True, "SHORT_CALL_ELEMS": 0}, id="c-reversed-in-main"),
         pytest.param({"SEQ_GRAD_ROWS": 1, "T_SEQ_ROWS": 32, "SHORT_CALL_ELEMS": 0}, id="seq-long-tiles")]


@needs_triton
@pytest.mark.parametrize(
    "batch,dim,length,n,groups,use,softplus",
    [
        (2, 4, 37, 4, None, ALL, True),       # length not a multiple of the tile
        (1, 3, 1, 1, None, ALL, True),        # length 1, N = 1, odd dim
        (1, 4, 20, 16, 2, ALL, True),         # N = 16, grouped B/C
        (1, 2, 18, 64, None, ("z",), False),  # N = 64, no D / bias / h0, no softplus
        (2, 4, 33, 3, 4, ("D", "h0"), True),  # one channel per group
        (1, 8, 70, 2, None, ("bias",), True),  # several tiles per carry step
    ],
)
@pytest.mark.parametrize("config", PATHS)
def test_scan_fp32(batch, dim, length, n, groups, use, softplus, config):
    x = _inputs(batch, dim, length, n, torch.float32, groups)
    if not softplus:
        x["delta"] = x["delta"].abs() * 0.1 + 0.01
    _check(x, use, softplus, torch.float32, config)


@needs_triton
@pytest.mark.parametrize("groups,use", [(None, ALL), (2, ("z", "bias"))])
@pytest.mark.parametrize("config", PATHS)
def test_scan_bf16(groups, use, config):
    x = _inputs(2, 4, 29, 8, torch.bfloat16, groups, seed=1)
    _check(x, use, True, torch.bfloat16, config)


def _channel_outer(t: torch.Tensor) -> torch.Tensor:
    """The same values, (dim, batch, L) in memory (kernels/layout.py)."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


@needs_triton
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("config", PATHS)
def test_scan_reads_channel_outer_rows_in_place(config, groups):
    """The Mamba block's channel-outer layout: u, delta, z as (dim, batch, L) rows and B, C row
    slices of one (rows, batch, L) x_proj output are read in place (the plan copies nothing),
    out, du, ddelta, dz come back in u's layout, and every value and gradient is the reference's."""
    from seqbench.kernels.scan.triton import plan_for, selective_scan_triton

    batch, dim, length, n, R = 2, 4, 37, 4, 3
    x = _inputs(batch, dim, length, n, torch.float32, groups)
    rows = n * (groups or 1)
    wide = torch.randn(R + 2 * rows, batch, length).transpose(0, 1)  # (batch, rows, L) channel-outer view
    shape = (batch, rows, length) if groups is None else (batch, groups, n, length)
    with torch.no_grad():
        wide[:, R:R + rows].copy_(x["B"].reshape(batch, rows, length))
        wide[:, R + rows:].copy_(x["C"].reshape(batch, rows, length))
    wide = wide.to(DEVICE).requires_grad_(True)
    B, C = wide[:, R:R + rows].view(shape), wide[:, R + rows:].view(shape)
    leaves = {k: _channel_outer(x[k]).to(DEVICE).requires_grad_(True) for k in ("u", "delta", "z")}
    leaves |= {k: x[k].to(DEVICE).requires_grad_(True) for k in ("A", "D", "delta_bias", "initial_state")}
    args = (leaves["u"], leaves["delta"], leaves["A"], B, C, leaves["D"], leaves["z"], leaves["delta_bias"],
            leaves["initial_state"])
    plan = plan_for(*args, True, True, config, needs_grad=True)
    assert not any(plan.copy.values()) and plan.bc_layout is None
    out, last = selective_scan_triton(*args[:7], delta_bias=args[7], delta_softplus=True, return_last_state=True,
                                      initial_state=args[8], _config=config)
    ref_leaves = {k: v.detach().double().cpu().contiguous().requires_grad_(True) for k, v in x.items()}
    rout, rlast = selective_scan_ref(*(ref_leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z")),
                                     delta_bias=ref_leaves["delta_bias"], delta_softplus=True, return_last_state=True,
                                     initial_state=ref_leaves["initial_state"])
    g = torch.Generator().manual_seed(3)
    dout, dlast = torch.randn(out.shape, generator=g), torch.randn(last.shape, generator=g)
    ((out * dout.to(DEVICE)).sum() + (last * dlast.to(DEVICE)).sum()).backward()
    ((rout * dout.double()).sum() + (rlast * dlast.double()).sum()).backward()
    rtol, atol = TOL[torch.float32]
    assert out.stride() == leaves["u"].stride()
    torch.testing.assert_close(out.double().cpu(), rout, rtol=rtol, atol=atol)
    torch.testing.assert_close(last.double().cpu(), rlast, rtol=rtol, atol=atol)
    for name in ("u", "delta", "z"):
        assert leaves[name].grad.stride() == leaves[name].stride(), name
    grads = {k: leaves[k].grad for k in leaves}
    grads["B"], grads["C"] = wide.grad[:, R:R + rows].reshape(shape), wide.grad[:, R + rows:].reshape(shape)
    assert wide.grad[:, :R].abs().max() == 0  # the rows that are not B or C get nothing
    for name, grad in grads.items():
        sr, sa = GRAD_SCALE.get(name, (1, 1))
        torch.testing.assert_close(grad.double().cpu(), ref_leaves[name].grad, rtol=rtol * sr, atol=atol * sa,
                                   msg=lambda m, n=name: f"d{n}: {m}")


@needs_triton
def test_scan_copies_operands_into_u_layout_where_theirs_differs():
    """u channel-outer with delta batch-major and z token-major (steps strided): delta and z are
    copied into u's layout (the kernels take one set of row strides), the result unchanged."""
    from seqbench.kernels.scan.triton import plan_for, selective_scan_triton

    x = _inputs(2, 4, 21, 4, torch.float32)
    u = _channel_outer(x["u"]).to(DEVICE)
    delta = x["delta"].to(DEVICE)
    z = x["z"].transpose(1, 2).contiguous().transpose(1, 2).to(DEVICE)
    plan = plan_for(u, delta, x["A"].to(DEVICE), x["B"].to(DEVICE), x["C"].to(DEVICE), None, z, None, None, True,
                    False)
    assert plan.copy == {"u": False, "delta": True, "z": True}
    out = selective_scan_triton(u, delta, x["A"].to(DEVICE), x["B"].to(DEVICE), x["C"].to(DEVICE), z=z,
                                delta_softplus=True)
    ref = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], z=x["z"], delta_softplus=True)
    assert out.stride() == u.stride()
    torch.testing.assert_close(out.cpu(), ref, rtol=6e-4, atol=2e-3)


@needs_triton
@pytest.mark.parametrize("config,length,groups,tiles", [
    ({"T_SEQ": 256, "BD_SEQ": 1, "SEQ_GRAD": True}, 260, 4, 2),  # one channel per program, last tile 4 steps
    ({"T_SEQ": 128, "BD_SEQ": 2, "SEQ_GRAD": True}, 140, 2, 2),
    ({"T_SEQ": 16, "BD_SEQ": 4, "SEQ_GRAD": True, "SEQ_MAX_TILES": 64}, 300, None, 19),  # many tiles
])
def test_seq_forward_tile_shapes(config, length, groups, tiles):
    """The sequential forward at other tile shapes than the default; the backward must tile by
    T_SEQ (hst / dtsum are per tile of the forward)."""
    from seqbench.kernels.scan.triton import scan_config

    cfg = scan_config(1, 4, length, groups or 1, config, needs_grad=True)
    assert cfg["SEQ"] and cfg["T"] == config["T_SEQ"] and -(-length // cfg["T"]) == tiles
    assert cfg["BD_SEQ"] == config["BD_SEQ"]
    x = _inputs(1, 4, length, 2, torch.float32, groups=groups, seed=4)
    _check(x, ALL, True, torch.float32, config)


class _LaunchSpy:
    """Stands in for a @triton.jit kernel and counts its launches."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


@needs_triton
def test_forward_path_dispatch(monkeypatch):
    """Which forward runs: `_fwd_seq` alone up to SEQ_MAX_TILES tiles of T_SEQ when no gradient
    is wanted (or with SEQ_GRAD), or under autograd for a short call (at most SHORT_CALL_ELEMS),
    else the three kernels, also above SEQ_MAX_TILES or with it 0; all give the same results."""
    from seqbench.kernels.scan import triton as triton_scan

    spies = {name: _LaunchSpy(getattr(triton_scan, name)) for name in ("_fwd_seq", "_fwd_tile_state", "_fwd_out")}
    for name, spy in spies.items():
        monkeypatch.setattr(triton_scan, name, spy)
    monkeypatch.setattr(triton_scan, "_PLANS", {})  # plans bind their kernels when built
    x = {k: v.to(DEVICE) for k, v in _inputs(1, 4, 70, 2, torch.float32, seed=5).items()}

    def run(config, grad):
        spies_before = {k: v.launches for k, v in spies.items()}
        with torch.set_grad_enabled(grad):
            u = x["u"].clone().requires_grad_(grad)
            out, last = triton_scan.selective_scan_triton(
                u, x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"], delta_bias=x["delta_bias"],
                delta_softplus=True, return_last_state=True, initial_state=x["initial_state"], _config=config)
        assert out.requires_grad == grad and last.requires_grad == grad
        launched = {k for k, v in spies.items() if v.launches > spies_before[k]}
        return out.detach(), last.detach(), launched

    seq = {"T_SEQ": 16, "SEQ_MAX_TILES": 5}  # 70 steps = 5 tiles of 16
    tiles = {"_fwd_tile_state", "_fwd_out"}
    results = [
        (run(None, False), {"_fwd_seq"}),
        (run(None, True), {"_fwd_seq"}),
        (run({"SHORT_CALL_ELEMS": 0}, True), tiles),
        (run({**seq, "SEQ_GRAD": True}, True), {"_fwd_seq"}),
        (run(seq, False), {"_fwd_seq"}),
        (run({"T_SEQ": 16, "SEQ_MAX_TILES": 4, "SEQ_GRAD": True}, True), tiles),
        (run({"SEQ_MAX_TILES": 0}, False), tiles),
    ]
    for (out, last, launched), want in results:
        assert launched == want
        torch.testing.assert_close(out, results[0][0][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(last, results[0][0][1], rtol=1e-5, atol=1e-5)


@needs_triton
def test_short_call_reverses_C_in_the_tile_state_kernel(monkeypatch):
    """A short call's backward has no `_reverse_tiles` launch (the tile-state kernel writes C
    reversed); with SHORT_CALL_ELEMS 0 it has one; the gradients agree."""
    from seqbench.kernels.scan import triton as triton_scan

    spy = _LaunchSpy(triton_scan._reverse_tiles)
    monkeypatch.setattr(triton_scan, "_reverse_tiles", spy)
    monkeypatch.setattr(triton_scan, "_PLANS", {})
    x = {k: v.to(DEVICE) for k, v in _inputs(2, 4, 37, 4, torch.float32, groups=2, seed=7).items()}
    grads = []
    for config, launches in (({}, 0), ({"SHORT_CALL_ELEMS": 0}, 1)):
        before = spy.launches
        leaves = {k: x[k].clone().requires_grad_(True) for k in ("u", "delta", "B", "C")}
        out = triton_scan.selective_scan_triton(
            leaves["u"], leaves["delta"], x["A"], leaves["B"], leaves["C"], D=x["D"], z=x["z"],
            delta_bias=x["delta_bias"], delta_softplus=True, _config=config)
        out.backward(torch.ones_like(out))
        assert spy.launches - before == launches
        grads.append({k: v.grad for k, v in leaves.items()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-5, atol=1e-5, msg=k)


@needs_triton
@pytest.mark.parametrize("length,t_seq", [(45, 64), (45, 32), (64, 32)])
def test_seq_forward_on_long_tiles_writes_the_backwards_tile_states(length, t_seq):
    """Under autograd with many rows (SEQ_GRAD_ROWS), `_fwd_seq` walks tiles of T_SEQ_ROWS steps
    (not the no-gradient forward's T_SEQ) and writes hst / dtsum at the backward's T, as the
    three-kernel forward at T does: also where the last long tile holds fewer backward tiles
    than the others."""
    from seqbench.kernels.scan.triton import _forward

    x = {k: v.to(DEVICE) for k, v in _inputs(2, 4, length, 3, torch.float32, groups=2, seed=8).items()}
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], x["initial_state"],
            True, True)
    split = {"T": 16, "T_SEQ": 128, "T_SEQ_ROWS": t_seq, "SEQ_GRAD_ROWS": 8, "SHORT_CALL_ELEMS": 0}
    out_s, last_s, saved_s, plan_s = _forward(*args, split, needs_grad=True)
    out_t, last_t, saved_t, plan_t = _forward(*args, {"T": 16, "SEQ_MAX_TILES": 0, "SHORT_CALL_ELEMS": 0},
                                              needs_grad=True)
    assert plan_s.cfg["SEQ"] and plan_s.cfg["SUB"] == t_seq // 16 and plan_s.cfg["T"] == 16
    assert not plan_t.cfg["SEQ"] and plan_t.cfg["T"] == 16
    for got, want in zip(saved_s[-2:], saved_t[-2:]):  # hst, dtsum
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_s, out_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last_s, last_t, rtol=1e-5, atol=1e-5)
    # below the row threshold the three kernels run
    _, _, _, plan_few = _forward(*args, dict(split, SEQ_GRAD_ROWS=9), needs_grad=True)
    assert not plan_few.cfg["SEQ"] and plan_few.cfg["SUB"] == 1


@needs_triton
@pytest.mark.parametrize("use_h0", [True, False])
def test_seq_forward_writes_the_same_tile_states(use_h0):
    """At equal tiling, `_fwd_seq` writes the hst (tile start states, hst[:, 0] = initial state)
    and dtsum (per-tile sums of dt) that the three-kernel forward writes: the backward reads them."""
    from seqbench.kernels.scan.triton import _forward

    x = {k: v.to(DEVICE) for k, v in _inputs(2, 4, 45, 3, torch.float32, groups=2, seed=6).items()}
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
            x["initial_state"] if use_h0 else None, True, True)
    out_s, last_s, saved_s, plan_s = _forward(*args, {"T": 16, "T_SEQ": 16, "SEQ_MAX_TILES": 64})
    out_t, last_t, saved_t, plan_t = _forward(*args, {"T": 16, "SEQ_MAX_TILES": 0})
    assert plan_s.cfg["SEQ"] and not plan_t.cfg["SEQ"] and plan_s.cfg["T"] == plan_t.cfg["T"] == 16
    hst_s, dtsum_s = saved_s[-2:]
    hst_t, dtsum_t = saved_t[-2:]
    assert hst_s.shape == hst_t.shape == (2, 4, 3, 4) and dtsum_s.shape == dtsum_t.shape == (2, 3, 4)
    h0 = x["initial_state"].transpose(1, 2) if use_h0 else torch.zeros_like(hst_s[:, 0])
    torch.testing.assert_close(hst_s[:, 0], h0, rtol=0, atol=0)
    torch.testing.assert_close(hst_s, hst_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dtsum_s, dtsum_t, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last_s, hst_s[:, -1].transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(out_s, out_t, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("config", [
    {"MAX_PARTIAL_BYTES": 1, "UNROLL": 2, "BC_F32": True},  # several channel blocks per program
    {"MIN_PROGRAMS": 1},                                     # one channel block per program
    {"SUMS_MAX_ROWS": 0},                                    # the reductions in PyTorch, not `_bwd_sums`
])
def test_scan_backward_without_last_state_and_partial_buffers(config):
    """Output-only loss (no last-state gradient) and both ways of writing partial dB/dC rows."""
    from seqbench.kernels.scan.triton import selective_scan_triton

    x = _inputs(1, 8, 40, 2, torch.float32, groups=None, seed=2)  # 2 channel blocks -> read-add-write
    leaves = {k: v.clone().to(DEVICE).requires_grad_(True) for k, v in x.items()}
    out = selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                D=leaves["D"], delta_softplus=True,
                                _config=config)
    out.sum().backward()
    xr = {k: v.double().requires_grad_(True) for k, v in x.items()}
    ref = selective_scan_ref(xr["u"], xr["delta"], xr["A"], xr["B"], xr["C"], D=xr["D"], delta_softplus=True)
    ref.sum().backward()
    torch.testing.assert_close(out.double().cpu(), ref, rtol=6e-4, atol=2e-3)
    for k in ("u", "delta", "A", "B", "C", "D"):
        torch.testing.assert_close(leaves[k].grad.double().cpu(), xr[k].grad, rtol=3e-3, atol=2e-2, msg=k)


@needs_triton
@pytest.mark.parametrize("groups", [None, 2])
def test_state_update_equals_scan_token_by_token(groups):
    from seqbench.kernels.decode import selective_state_update

    x = {k: v.to(DEVICE) for k, v in _inputs(2, 4, 9, 5, torch.float32, groups, seed=3).items()}
    with torch.no_grad():
        out, last = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                                   delta_bias=x["delta_bias"], delta_softplus=True, return_last_state=True,
                                   initial_state=x["initial_state"], backend="triton")
    state = x["initial_state"].clone()
    state_ref = x["initial_state"].clone()
    for t in range(9):
        args = (x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t])
        y = selective_state_update(state, *args, D=x["D"], z=x["z"][..., t], dt_bias=x["delta_bias"], dt_softplus=True,
                                   backend="triton")
        y_ref = selective_state_update_ref(state_ref, *args, x["D"], x["z"][..., t], x["delta_bias"], True)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y, out[..., t], rtol=6e-4, atol=2e-3)
    torch.testing.assert_close(state, last, rtol=6e-4, atol=2e-3)
    torch.testing.assert_close(state, state_ref, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("config", [None, {"SHORT_CALL_ELEMS": 0}], ids=["short", "long-paths"])
def test_scan_reads_D_and_delta_bias_in_their_own_dtype(config):
    """D and delta_bias in bf16 go to the kernels as they are (read as fp32, no host-side cast):
    the output and every gradient equal those of the same values given as fp32, and their
    gradients come back in bf16."""
    from seqbench.kernels.scan import triton as triton_scan

    x = {k: v.to(DEVICE) for k, v in _inputs(2, 4, 37, 4, torch.float32, seed=11).items()}
    low = {"D": x["D"].to(torch.bfloat16), "delta_bias": x["delta_bias"].to(torch.bfloat16)}
    results = []
    for D, bias in ((low["D"], low["delta_bias"]), (low["D"].float(), low["delta_bias"].float())):
        leaves = {"u": x["u"].clone().requires_grad_(True), "D": D.clone().requires_grad_(True),
                  "bias": bias.clone().requires_grad_(True)}
        out = triton_scan.selective_scan_triton(
            leaves["u"], x["delta"], x["A"], x["B"], x["C"], D=leaves["D"], z=x["z"], delta_bias=leaves["bias"],
            delta_softplus=True, _config=config)
        out.backward(torch.ones_like(out))
        results.append((out.detach(), {k: v.grad for k, v in leaves.items()}))
    (out_low, grads_low), (out_f32, grads_f32) = results
    assert grads_low["D"].dtype == torch.bfloat16 and grads_low["bias"].dtype == torch.bfloat16
    torch.testing.assert_close(out_low, out_f32, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads_low["u"], grads_f32["u"], rtol=1e-6, atol=1e-6)
    for k in ("D", "bias"):
        torch.testing.assert_close(grads_low[k], grads_f32[k].to(torch.bfloat16), rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("config", [None, {"SHORT_CALL_ELEMS": 0}], ids=["short", "long-paths"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_scan_takes_A_as_A_log(config, dtype):
    """A_is_log: the kernels make A = -exp(A_log) as they load it (A_log in its own dtype, no
    host-side launches): output, last state and every gradient, A_log's included, equal the scan
    given A; the reference backend takes the flag too."""
    from seqbench.kernels.scan import selective_scan

    x = {k: v.to(DEVICE) for k, v in _inputs(2, 4, 37, 4, torch.float32, seed=13).items()}
    A_log = torch.log(-x["A"]).to(dtype)
    results = []
    for backend, A, is_log in (("triton", A_log, True), ("triton", -torch.exp(A_log.float()), False),
                               ("reference", A_log, True)):
        leaves = {"u": x["u"].clone().requires_grad_(True), "A": A.detach().clone().requires_grad_(True),
                  "B": x["B"].clone().requires_grad_(True), "h0": x["initial_state"].clone().requires_grad_(True)}
        kw = {"_config": config} if backend == "triton" and config else {}
        if kw:
            from seqbench.kernels.scan.triton import selective_scan_triton as scan

            out, last = scan(leaves["u"], x["delta"], leaves["A"], leaves["B"], x["C"], D=x["D"], z=x["z"],
                             delta_bias=x["delta_bias"], delta_softplus=True, return_last_state=True,
                             initial_state=leaves["h0"], A_is_log=is_log, **kw)
        else:
            out, last = selective_scan(leaves["u"], x["delta"], leaves["A"], leaves["B"], x["C"], D=x["D"], z=x["z"],
                                       delta_bias=x["delta_bias"], delta_softplus=True, return_last_state=True,
                                       initial_state=leaves["h0"], backend=backend, A_is_log=is_log)
        (out.sum() + last.sum()).backward()
        results.append((out.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}))
    (out_log, last_log, g_log), (out_a, last_a, g_a), (out_ref, last_ref, g_ref) = results
    torch.testing.assert_close(out_log, out_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last_log, last_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_log, out_ref, rtol=1e-4, atol=1e-4)
    assert g_log["A"].dtype == dtype
    A = -torch.exp(A_log.float())
    torch.testing.assert_close(g_log["A"].float(), (g_a["A"] * A).to(dtype).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_log["A"].float(), g_ref["A"].float(), rtol=2e-3, atol=2e-3)
    for k in ("u", "B", "h0"):
        torch.testing.assert_close(g_log[k], g_a[k], rtol=1e-5, atol=1e-5, msg=k)


@needs_triton
def test_state_update_reads_row_slices_and_a_log_in_place():
    """The decode step's layout: x, z slices of one in_proj row, dt, B, C slices of one x_proj
    row, D and dt_bias in bf16, A given as A_log: the same as the reference on copies."""
    from seqbench.kernels.decode import selective_state_update

    g = torch.Generator().manual_seed(5)
    batch, dim, n = 3, 8, 4
    xz = torch.randn(batch, 2 * dim, generator=g).to(DEVICE)
    dbc = torch.randn(batch, dim + 2 * n, generator=g).to(DEVICE)
    A_log = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(dim, 1).to(DEVICE)
    D = torch.randn(dim, generator=g).to(DEVICE, torch.bfloat16)
    bias = torch.randn(dim, generator=g).to(DEVICE, torch.bfloat16)
    x, z = xz[:, :dim], xz[:, dim:]
    dt, B, C = dbc[:, :dim], dbc[:, dim:dim + n], dbc[:, dim + n:]
    state = torch.randn(batch, dim, n, generator=g).to(DEVICE)
    state_ref = state.clone()
    y = selective_state_update(state, x, dt, A_log, B, C, D=D, z=z, dt_bias=bias, dt_softplus=True,
                               backend="triton", A_is_log=True)
    y_ref = selective_state_update_ref(state_ref, x.contiguous(), dt.contiguous(), -torch.exp(A_log), B.contiguous(),
                                       C.contiguous(), D.float(), z.contiguous(), bias.float(), True)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, state_ref, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("width", [1, 3, 4])
@pytest.mark.parametrize("act", [None, "silu"])
def test_causal_conv_fwd_bwd_update(width, act):
    from seqbench.kernels.conv import causal_conv1d, causal_conv1d_update

    g = torch.Generator().manual_seed(width)
    x = torch.randn(2, 5, 45, generator=g).to(DEVICE).requires_grad_(True)
    w = torch.randn(5, width, generator=g).to(DEVICE).requires_grad_(True)
    b = torch.randn(5, generator=g).to(DEVICE).requires_grad_(True)
    out = causal_conv1d(x, w, b, act, backend="triton")
    dout = torch.randn(out.shape, generator=g).to(DEVICE)
    out.backward(dout)
    xr, wr, br = (t.detach().double().cpu().requires_grad_(True) for t in (x, w, b))
    ref = causal_conv1d_ref(xr, wr, br, act)
    ref.backward(dout.double().cpu())
    for got, want in ((out, ref), (x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-4)
    state = torch.randn(2, 5, width, generator=g).to(DEVICE)
    state_ref = state.clone()
    for t in range(3):
        xs = torch.randn(2, 5, generator=g).to(DEVICE)
        y = causal_conv1d_update(xs, state, w.detach(), b.detach(), act, backend="triton")
        y_ref = causal_conv1d_update_ref(xs, state_ref, w.detach(), b.detach(), act)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state, state_ref)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("act", [None, "silu"])
@pytest.mark.parametrize("has_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_causal_conv_grads(width, has_bias, act, dtype):
    """Output and dx, dweight, dbias against the float64 reference: lengths shorter than the width
    and than one 8-position chunk, and one over two interpreter tiles (32) that is not a multiple
    of 8; dim 6 spans two channel blocks; batch 2."""
    from seqbench.kernels.conv import causal_conv1d

    rtol, atol = (1e-4, 1e-4) if dtype == torch.float32 else TOL[dtype]
    g = torch.Generator().manual_seed(7 * width + has_bias)
    for length in (1, 6, 45):
        x = torch.randn(2, 6, length, generator=g).to(DEVICE, dtype).requires_grad_(True)
        w = torch.randn(6, width, generator=g).to(DEVICE, dtype).requires_grad_(True)
        b = torch.randn(6, generator=g).to(DEVICE, dtype).requires_grad_(True) if has_bias else None
        out = causal_conv1d(x, w, b, act, backend="triton")
        dout = torch.randn(out.shape, generator=g).to(DEVICE, dtype)
        out.backward(dout)
        leaves = [t for t in (x, w, b) if t is not None]
        refs = [t.detach().double().cpu().requires_grad_(True) for t in leaves]
        ref = causal_conv1d_ref(refs[0], refs[1], refs[2] if has_bias else None, act)
        ref.backward(dout.double().cpu())
        assert out.dtype == dtype and all(t.grad.dtype == dtype for t in leaves)
        for got, want in ((out, ref), *((t.grad, r.grad) for t, r in zip(leaves, refs))):
            # dweight and dbias sum over batch x length: scale the absolute tolerance by the sum's size
            scale = 1 if got.shape == out.shape else (2 * length) ** 0.5
            torch.testing.assert_close(got.double().cpu(), want, rtol=rtol, atol=atol * scale)


@needs_triton
def test_causal_conv_reads_channel_outer_rows_in_place():
    """x as (dim, batch, L) rows (the Mamba block's channel-outer layout): out and dx come back in
    x's layout, dout in another layout is read through a copy, the values are the reference's."""
    from seqbench.kernels.conv import causal_conv1d

    g = torch.Generator().manual_seed(11)
    x = _channel_outer(torch.randn(3, 6, 45, generator=g)).to(DEVICE).requires_grad_(True)
    w = torch.randn(6, 4, generator=g).to(DEVICE).requires_grad_(True)
    b = torch.randn(6, generator=g).to(DEVICE).requires_grad_(True)
    out = causal_conv1d(x, w, b, "silu", backend="triton")
    dout = torch.randn(out.shape, generator=g)  # batch-major: not x's layout
    out.backward(dout.to(DEVICE))
    assert out.stride() == x.stride() and x.grad.stride() == x.stride()
    xr, wr, br = (t.detach().double().cpu().requires_grad_(True) for t in (x, w, b))
    ref = causal_conv1d_ref(xr, wr, br, "silu")
    ref.backward(dout.double())
    for got, want in ((out, ref), (x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# validation through the public entry point
# ------------------------------------------------------------------------------------------------


def _good(dtype=torch.float32):
    return _inputs(1, 4, 6, 2, dtype)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x: x.update(u=x["u"][0]), "u must be"),
        (lambda x: x.update(delta=x["delta"][..., :-1]), "delta must have"),
        (lambda x: x.update(z=x["z"][:, :-1]), "z must have"),
        (lambda x: x.update(A=x["A"][:, :1].repeat(1, 3)), "B must be"),
        (lambda x: x.update(A=x["A"][:-1]), "A must be"),
        (lambda x: x.update(B=x["B"][..., :-1]), "B must be"),
        (lambda x: x.update(C=x["C"].unsqueeze(1).repeat(1, 3, 1, 1)), "C must be"),
        (lambda x: x.update(D=x["D"][:-1]), "D must be"),
        (lambda x: x.update(delta_bias=x["delta_bias"][None]), "delta_bias must be"),
        (lambda x: x.update(initial_state=x["initial_state"][..., :-1]), "initial_state must be"),
        (lambda x: x.update(u=x["u"].to(torch.int32)), "dtype"),
        (lambda x: x.update(B=x["B"].to(torch.int64)), "dtype"),
    ],
)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_inputs_raise_value_error(mutate, match, backend):
    if backend == "triton" and DEVICE == "cpu" and not INTERPRET:
        pytest.skip("triton backend needs CUDA or the interpreter")
    x = _good()
    mutate(x)
    x = {k: v.to(DEVICE) for k, v in x.items()}
    with pytest.raises(ValueError, match=match):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"], delta_bias=x["delta_bias"],
                       initial_state=x["initial_state"], backend=backend)


def test_float64_only_on_reference_and_unknown_backend():
    x = {k: v.double() for k, v in _good().items()}
    selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="reference")
    if DEVICE == "cpu" and not INTERPRET:
        return
    with pytest.raises(ValueError, match="dtype"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="triton")
    with pytest.raises(ValueError, match="unknown backend"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="cuda")


@pytest.mark.parametrize("name", ["delta", "A", "B", "D", "initial_state"])
def test_mixed_devices_raise(name):
    """An input on another device than u is rejected before any kernel runs (the 'meta' device
    stands in for a second device on machines without a GPU)."""
    x = _good()
    x[name] = x[name].to("meta")
    with pytest.raises(ValueError, match="device"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                       delta_bias=x["delta_bias"], initial_state=x["initial_state"], backend="reference")


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error():
    """In a fresh interpreter without TRITON_INTERPRET, backend='triton' on CPU tensors must raise
    a ValueError that says what to do (CI has no GPU)."""
    code = (
        "import torch\n"
        "from kernels import selective_scan\n"
        "u = torch.randn(1, 2, 3)\n"
        "try:\n"
        "    selective_scan(u, u, -torch.ones(2, 1), torch.randn(1, 1, 3), torch.randn(1, 1, 3), backend='triton')\n"
        "except ValueError as e:\n"
        "    print('VALUEERROR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "VALUEERROR" in res.stdout and "CUDA" in res.stdout, res.stdout + res.stderr


def test_scratch_buffers_are_aligned_disjoint_and_addressed_like_their_views():
    """The scan's backward scratch: one allocation, buffers 64-byte aligned and disjoint, each
    half of a paired buffer where its view says, and the addresses those of the views."""
    from seqbench.kernels.scan.triton import _Scratch

    sc = _Scratch([("a", (3, 5), torch.float32, None), ("pair", (2, 1, 7), torch.float32, ("p0", "p1")),
                   ("c", (2, 3), torch.bfloat16, None)])
    ws = torch.empty(sc.elems)
    views, addr = sc.views(ws), sc.addresses(ws.data_ptr())
    assert set(views) == set(addr) == {"a", "pair", "p0", "p1", "c"}
    assert views["pair"].shape == (2, 1, 7) and views["c"].dtype == torch.bfloat16
    for name, t in views.items():
        assert t.data_ptr() == addr[name], name
    spans = sorted((views[n].data_ptr(), views[n].data_ptr() + views[n].nbytes) for n in ("a", "pair", "c"))
    assert all(s % 64 == ws.data_ptr() % 64 for s, _ in spans)
    assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))
    assert spans[-1][1] <= ws.data_ptr() + ws.nbytes
    views["p1"].fill_(2.0)
    views["p0"].fill_(1.0)
    assert views["pair"][1].eq(2.0).all() and views["pair"][0].eq(1.0).all()
