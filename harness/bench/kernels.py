"""Kernel benchmark: our Triton selective scan against the CUDA reference's published H200 times.

    seqbench bench kernels --out results/h200/kernels.csv
    seqbench bench kernels --variants            # compare tile configurations side by side
    seqbench bench kernels --host [--variants]   # short shapes: host vs device time per call
    seqbench bench kernels --host --alternate    # short calls' paths vs the long ones, alternating rounds

For every shape of kernels/CONTRACT.md's table (plus batch 1, dim 1536, length 2^21): forward and
forward+backward median times of `selective_scan_triton` (bf16, N = 16, with z, D, delta_bias,
softplus), the reference kernel's times from kernels/CONTRACT.md and the speed ratio, PyTorch SDPA flash
attention forward at the matching Transformer shape (d_model = dim / 2, head dim 64, causal,
bf16), the achieved bandwidth on the minimum bytes, and the fraction of the exp-throughput bound.
Needs a CUDA device. The table is printed last; the CSV is written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import math
import os
import pathlib
import statistics
import time

import torch
from torch import Tensor

from seqbench.core.measure import alternating_rounds

# kernels/CONTRACT.md, measured on an H200: (batch, dim, length) -> (fwd ms, fwd+bwd ms, flash fwd ms)
REFERENCE_MS: dict[tuple[int, int, int], tuple[float, float, float]] = {
    (8, 1536, 2048): (0.449, 2.188, 0.220),
    (1, 1536, 2048): (0.069, 0.344, 0.064),
    (1, 1536, 8192): (0.273, 1.305, 0.450),
    (1, 1536, 32768): (1.111, 5.004, 5.529),
    (1, 1536, 131072): (4.489, 19.781, 82.99),
    (1, 1536, 524288): (18.02, 80.72, 1425.6),
    (1, 1536, 1048576): (34.77, 160.68, 5803.4),
    (1, 5120, 2048): (0.199, 0.997, 0.113),
    (1, 5120, 32768): (3.686, 15.72, 17.53),
    (1, 5120, 131072): (15.20, 65.66, 280.6),
    (1, 5120, 524288): (61.01, 263.98, 4749.6),
}
EXTRA_SHAPES = [(1, 1536, 2097152)]
N_STATE = 16
SHORT_ELEMENTS = 1 << 25  # batch * dim * length up to this is timed SHORT_REPEATS times
SHORT_REPEATS = 5
HBM_GBPS = 4250.0  # measured device-to-device copy on the H200 (kernels/CONTRACT.md)
EXP_PER_S = 4.0e12  # exp-unit throughput of an H200 (kernels/CONTRACT.md's estimate)


def table_shapes(which: str = "table") -> list[tuple[int, int, int]]:
    shapes = list(REFERENCE_MS) + EXTRA_SHAPES
    if which == "small":
        shapes = [s for s in shapes if s[2] <= 32768]
    return shapes


def make_inputs(batch: int, dim: int, length: int, n: int = N_STATE, dtype=torch.bfloat16,
                device="cuda", seed: int = 0, requires_grad: bool = False) -> dict:
    """Realistic random inputs (Mamba-style initialisation), never zeros."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rn(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dt)

    u = rn(batch, dim, length)
    delta = (0.5 * rn(batch, dim, length, dt=torch.float32)).to(dtype)
    # delta_bias = softplus^-1(dt0), dt0 log-uniform in [1e-3, 1e-1]: dt mostly in ~[1e-3, 0.2]
    dt0 = torch.exp(torch.rand(dim, generator=g, device=device) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt0 + torch.log(-torch.expm1(-dt0))
    A = -torch.arange(1, n + 1, device=device, dtype=torch.float32).repeat(dim, 1)  # -exp(log(1..N))
    B = rn(batch, n, length)
    C = rn(batch, n, length)
    D = rn(dim, dt=torch.float32)
    z = rn(batch, dim, length)
    out = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    if requires_grad:
        for v in out.values():
            v.requires_grad_(True)
    return out


def min_bytes(batch: int, dim: int, length: int, n: int, elem: int = 2) -> tuple[float, float]:
    """Fewest bytes a forward / forward+backward must move (each input read once, each output
    written once): fwd reads u, delta, z, B, C and writes out; backward also reads dout and
    writes du, ddelta, dz, dB, dC."""
    bdl = batch * dim * length * elem
    bnl = batch * n * length * elem
    fwd = 4 * bdl + 2 * bnl
    bwd = 7 * bdl + 4 * bnl
    return float(fwd), float(fwd + bwd)


def _median_ms(fn, warmup_ms: float = 25, rep_ms: float = 100, grad_to_none=None) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                                         return_mode="median"))


def _single_ms(fn) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    stop.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(stop))


def time_scan(batch: int, dim: int, length: int, config: dict | None = None, backward: bool = True) -> tuple[float, float]:
    from seqbench.kernels.scan.triton import selective_scan_triton

    x = make_inputs(batch, dim, length, requires_grad=backward)
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True, _config=config)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    long = batch * dim * length >= (1 << 29)
    rep = 60 if long else 150

    def fwd():
        with torch.no_grad():
            return selective_scan_triton(*args, **kw)

    t_fwd = _median_ms(fwd, rep_ms=rep)
    t_bwd = float("nan")
    if backward:
        dout = torch.randn_like(x["u"])
        leaves = list(x.values())

        def fwd_bwd():
            out = selective_scan_triton(*args, **kw)
            out.backward(dout)

        t_bwd = _median_ms(fwd_bwd, rep_ms=rep, grad_to_none=leaves)
    del x
    torch.cuda.empty_cache()
    return t_fwd, t_bwd


def time_flash(batch: int, dim: int, length: int) -> float:
    """SDPA flash forward for a Transformer of d_model = dim / 2, head dim 64, causal, bf16."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads = max(1, (dim // 2) // 64)
    q, k, v = (torch.randn(batch, heads, length, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        if length >= (1 << 17):  # seconds per call: one warm call at a small size, one timed call
            small = [t[:, :, :4096] for t in (q, k, v)]
            torch.nn.functional.scaled_dot_product_attention(*small, is_causal=True)
            ms = _single_ms(f)
        else:
            ms = _median_ms(f)
    return ms


def run_kernel_bench(out_csv: pathlib.Path | None, shapes="table", flash: bool = True,
                     config: dict | None = None) -> list[dict]:
    """Benchmark every shape; write `out_csv` (if given) atomically; return the rows."""
    if not torch.cuda.is_available():
        raise RuntimeError("the kernel benchmark needs a CUDA device")
    shape_list = table_shapes(shapes) if isinstance(shapes, str) else list(shapes)
    rows = []
    for batch, dim, length in shape_list:
        t0 = time.time()
        # short shapes are bound by host time, which drifts between windows of a run: the median
        # of several do_bench medians
        repeats = SHORT_REPEATS if batch * dim * length <= SHORT_ELEMENTS else 1
        times = [time_scan(batch, dim, length, config=config) for _ in range(repeats)]
        t_fwd = statistics.median(t[0] for t in times)
        t_fb = statistics.median(t[1] for t in times)
        ref = REFERENCE_MS.get((batch, dim, length), (float("nan"),) * 3)
        fl = time_flash(batch, dim, length) if flash else float("nan")
        torch.cuda.empty_cache()
        fb, fbb = min_bytes(batch, dim, length, N_STATE)
        exps = batch * dim * length * N_STATE / EXP_PER_S * 1e3  # ms for one exp per element
        rows.append(dict(
            batch=batch, dim=dim, length=length, N=N_STATE, dtype="bf16",
            triton_fwd_ms=round(t_fwd, 4), triton_fwdbwd_ms=round(t_fb, 4),
            cuda_ref_fwd_ms=ref[0], cuda_ref_fwdbwd_ms=ref[1],
            speedup_fwd=round(ref[0] / t_fwd, 3), speedup_fwdbwd=round(ref[1] / t_fb, 3),
            flash_fwd_ms=round(fl, 4), flash_fwd_ms_kernelmd=ref[2],
            fwd_GBps=round(fb / t_fwd / 1e6, 1), fwdbwd_GBps=round(fbb / t_fb / 1e6, 1),
            fwd_frac_hbm=round(fb / t_fwd / 1e6 / HBM_GBPS, 3),
            fwd_frac_exp_bound=round(exps / t_fwd, 3), fwdbwd_frac_exp_bound=round(2 * exps / t_fb, 3),
            repeats=repeats,
        ))
        print(f"# {batch}x{dim}x{length}: fwd {t_fwd:.3f} ms, fwd+bwd {t_fb:.3f} ms, flash {fl:.3f} ms "
              f"({time.time() - t0:.1f} s)", flush=True)
        if out_csv is not None:  # after every shape: a run cut short keeps what it measured
            write_rows(pathlib.Path(out_csv), rows)
    print_table(rows)
    return rows


def write_rows(path: pathlib.Path, rows: list[dict]) -> None:
    """The rows as CSV (columns from the first row), written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def print_table(rows: list[dict]) -> None:
    hdr = (f"{'batch':>5} {'dim':>5} {'length':>8} | {'fwd ms':>8} {'ref':>7} {'x':>5} | "
           f"{'f+b ms':>8} {'ref':>7} {'x':>5} | {'flash ms':>9} | {'GB/s':>6} {'exp%':>5}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['batch']:>5} {r['dim']:>5} {r['length']:>8} | {r['triton_fwd_ms']:>8.3f} "
              f"{r['cuda_ref_fwd_ms']:>7.3f} {r['speedup_fwd']:>5.2f} | {r['triton_fwdbwd_ms']:>8.3f} "
              f"{r['cuda_ref_fwdbwd_ms']:>7.3f} {r['speedup_fwdbwd']:>5.2f} | {r['flash_fwd_ms']:>9.2f} | "
              f"{r['fwd_GBps']:>6.0f} {100 * r['fwd_frac_exp_bound']:>5.1f}")


def run_variant_sweep(variants: dict[str, dict], shapes: list[tuple[int, int, int]]) -> list[dict]:
    """Time several tile configurations on the same shapes in one process (same machine state)."""
    rows = []
    for name, cfg in variants.items():
        for batch, dim, length in shapes:
            try:
                f, fb = time_scan(batch, dim, length, config=cfg)
            except Exception as exc:  # a config that does not compile must not end the sweep
                print(f"# {name} {batch}x{dim}x{length}: failed: {type(exc).__name__}: {exc}"[:300], flush=True)
                f = fb = float("nan")
            ref = REFERENCE_MS.get((batch, dim, length), (float("nan"),) * 3)
            rows.append(dict(variant=name, batch=batch, dim=dim, length=length, fwd_ms=f, fwdbwd_ms=fb,
                             x_fwd=ref[0] / f, x_fwdbwd=ref[1] / fb))
            print(f"# {name:>12} {batch}x{dim}x{length}: fwd {f:.3f} ({ref[0] / f:.2f}x) "
                  f"fwd+bwd {fb:.3f} ({ref[1] / fb:.2f}x)", flush=True)
    return rows


def time_conv_and_steps() -> list[dict]:
    """Triton causal conv (fwd, fwd+bwd) and decode-step kernels against their PyTorch references."""
    from seqbench.kernels.conv import causal_conv1d, causal_conv1d_update
    from seqbench.kernels.conv.reference import causal_conv1d_ref, causal_conv1d_update_ref
    from seqbench.kernels.decode.reference import selective_state_update_ref
    from seqbench.kernels.decode import selective_state_update

    rows = []
    for batch, dim, length in ((1, 3072, 131072), (8, 3072, 2048), (1, 10240, 32768)):
        x = torch.randn(batch, dim, length, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        w = torch.randn(dim, 4, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        b = torch.randn(dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn_like(x)
        res = {}
        for name, fn in (("triton", causal_conv1d), ("torch", causal_conv1d_ref)):
            with torch.no_grad():
                res[name + "_fwd"] = _median_ms(lambda: fn(x, w, b, "silu"))
            res[name + "_fwdbwd"] = _median_ms(lambda: fn(x, w, b, "silu").backward(g), grad_to_none=[x, w, b])
        rows.append(dict(kernel="causal_conv1d", shape=f"{batch}x{dim}x{length}", **{k: round(v, 4) for k, v in res.items()}))
    for batch, dim in ((1, 3072), (64, 3072)):
        st = torch.randn(batch, dim, 16, device="cuda")
        xs, dts, zs = (torch.randn(batch, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        A = -torch.arange(1, 17, device="cuda", dtype=torch.float32).repeat(dim, 1)
        Bs, Cs = (torch.randn(batch, 16, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        D = torch.randn(dim, device="cuda")
        bias = torch.randn(dim, device="cuda")
        cs = torch.randn(batch, dim, 4, device="cuda", dtype=torch.bfloat16)
        wc = torch.randn(dim, 4, device="cuda", dtype=torch.bfloat16)
        res = dict(
            triton_fwd=_median_ms(lambda: selective_state_update(st, xs, dts, A, Bs, Cs, D, zs, bias, True)),
            torch_fwd=_median_ms(lambda: selective_state_update_ref(st, xs, dts, A, Bs, Cs, D, zs, bias, True)),
        )
        rows.append(dict(kernel="selective_state_update", shape=f"{batch}x{dim}x16", **{k: round(v, 4) for k, v in res.items()}))
        res = dict(
            triton_fwd=_median_ms(lambda: causal_conv1d_update(xs, cs, wc, None, "silu")),
            torch_fwd=_median_ms(lambda: causal_conv1d_update_ref(xs, cs, wc, None, "silu")),
        )
        rows.append(dict(kernel="causal_conv1d_update", shape=f"{batch}x{dim}x4", **{k: round(v, 4) for k, v in res.items()}))
    for r in rows:
        print("# conv/step:", r, flush=True)
    return rows


def profile_kernels(batch: int = 1, dim: int = 1536, length: int = 131072, config: dict | None = None) -> None:
    """Per-kernel CUDA time of forward+backward at one shape."""
    from torch.profiler import ProfilerActivity, profile

    from seqbench.kernels.scan.triton import selective_scan_triton

    x = make_inputs(batch, dim, length, requires_grad=True)
    dout = torch.randn_like(x["u"])
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True, _config=config)
    for _ in range(2):
        selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], **kw).backward(dout)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], **kw).backward(dout)
        torch.cuda.synchronize()
    print(f"# per-kernel CUDA time, 5 x fwd+bwd at {batch}x{dim}x{length}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=40))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
    # host time of one fwd+bwd call (no sync inside) against its device time
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], **kw).backward(dout)
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    print(f"# host enqueue time per fwd+bwd {1e3 * (t1 - t0) / 20:.3f} ms; wall incl. device {1e3 * (t2 - t0) / 20:.3f} ms")


def host_times(batch: int, dim: int, length: int, config: dict | None = None, calls: int = 200) -> dict:
    """Forward and forward+backward: device-time median (do_bench) and host time per call (wall
    clock of `calls` back-to-back calls without synchronising, after warm-up; it equals the device
    time once the device is the slower side and the launch queue fills)."""
    from seqbench.kernels.scan.triton import selective_scan_triton

    x = make_inputs(batch, dim, length, requires_grad=True)
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True, _config=config)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    leaves, dout = list(x.values()), torch.randn_like(x["u"])

    def fwd():
        with torch.no_grad():
            return selective_scan_triton(*args, **kw)

    def fwd_bwd():  # grads returned, not accumulated: the same kernels as .backward() on fresh leaves
        return torch.autograd.grad(selective_scan_triton(*args, **kw), leaves, dout)

    res = {}
    for name, fn in (("fwd", fwd), ("fwdbwd", fwd_bwd)):
        res[name + "_ms"] = round(_median_ms(fn), 4)
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        res[name + "_host_ms"] = round((time.perf_counter() - t0) * 1e3 / calls, 4)
        torch.cuda.synchronize()
    return res


def run_host_bench(variants: dict[str, dict | None], shapes: list[tuple[int, int, int]] | None = None) -> list[dict]:
    """host_times for every variant at the short shapes of REFERENCE_MS (length <= 8192)."""
    if not torch.cuda.is_available():
        raise RuntimeError("the kernel benchmark needs a CUDA device")
    rows = []
    for batch, dim, length in shapes or [s for s in REFERENCE_MS if s[2] <= 8192]:
        ref = REFERENCE_MS.get((batch, dim, length), (float("nan"),) * 3)
        for name, cfg in variants.items():
            r = dict(variant=name, batch=batch, dim=dim, length=length, **host_times(batch, dim, length, cfg),
                     cuda_ref_fwd_ms=ref[0], cuda_ref_fwdbwd_ms=ref[1])
            rows.append(r)
            torch.cuda.empty_cache()
            print(f"# {name:>14} {batch}x{dim}x{length}: fwd {r['fwd_ms']:.3f} ms (host {r['fwd_host_ms']:.3f}, "
                  f"ref {ref[0]:.3f}), fwd+bwd {r['fwdbwd_ms']:.3f} ms (host {r['fwdbwd_host_ms']:.3f}, "
                  f"ref {ref[1]:.3f})", flush=True)
    return rows


def _fwd_bwd_wall_us(fn, calls: int = 60) -> float:
    """Wall time per call of `calls` back-to-back calls, synchronised at both ends (us)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def _fwd_bwd_device_us(fn, calls: int = 30) -> float:
    """Device time per call (us): the calls queued behind a ~0.1 s sleep kernel, so that the host
    has enqueued them all before the first runs and the events time the GPU alone."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e8))
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls * 1e3


def fwd_bwd_call(scan, x: dict, dout: Tensor, **kw):
    """One `.backward()` of `scan` (ours or the authors', the reference's signature) on
    make_inputs' `x`, the leaves' gradients dropped after it: the call the host-bound timings make."""
    def call():
        out = scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"], delta_bias=x["delta_bias"],
                   delta_softplus=True, **kw)
        out.backward(dout)
        for t in x.values():
            t.grad = None
    return call


def run_alternating(variants: dict[str, dict | None], shapes: list[tuple[int, int, int]],
                    rounds: int = 5) -> list[dict]:
    """Forward+backward (`.backward()` of the Triton path) of each variant at each shape: wall
    and device time per call, in alternating rounds (`core.measure.alternating_rounds`), medians."""
    from seqbench.kernels.scan.triton import selective_scan_triton

    rows = []
    for shape in shapes:
        x = make_inputs(*shape, requires_grad=True)
        dout = torch.randn_like(x["u"])
        calls = {name: fwd_bwd_call(selective_scan_triton, x, dout, _config=cfg) for name, cfg in variants.items()}
        for call in calls.values():  # compile and warm every variant first
            for _ in range(5):
                call()
        times = alternating_rounds(list(variants), rounds, lambda name: {
            "wall": _fwd_bwd_wall_us(calls[name]), "device": _fwd_bwd_device_us(calls[name])})
        for name in variants:
            wall = times[name]["wall"]
            row = dict(variant=name, batch=shape[0], dim=shape[1], length=shape[2],
                       fwdbwd_wall_us=round(statistics.median(wall), 1),
                       fwdbwd_device_us=round(statistics.median(times[name]["device"]), 1),
                       wall_min_us=round(min(wall), 1), wall_max_us=round(max(wall), 1))
            rows.append(row)
            print(f"# {name:>11} {'x'.join(map(str, shape)):>12}: wall {row['fwdbwd_wall_us']:7.1f} us, device "
                  f"{row['fwdbwd_device_us']:7.1f} us (wall rounds {row['wall_min_us']:.0f}-{row['wall_max_us']:.0f})",
                  flush=True)
    return rows


# --host --alternate: short calls' launch-saving paths (the default) against the long calls' paths
# at short shapes, the last two the paper's synthetic-task sizes (kernels/NOTES.md, variant 14)
ALTERNATE_VARIANTS: dict[str, dict | None] = {"default": None, "long-paths": {"SHORT_CALL_ELEMS": 0}}
ALTERNATE_SHAPES = [(1, 1536, 2048), (8, 128, 256), (16, 128, 256), (2, 1536, 1024)]

# --host: the default (single-launch forward at these lengths) against the three-kernel forward,
# the single-launch forward under autograd too, the backward's sums in PyTorch, and C read
# reversed inside `_bwd_main` (kernels/NOTES.md, variants 11 and 12); with --variants also the
# sequential forward's tile shapes
HOST_VARIANTS: dict[str, dict | None] = {
    "default": None, "three_kernel": {"SEQ_MAX_TILES": 0, "SHORT_CALL_ELEMS": 0}, "seq_grad": {"SEQ_GRAD": True},
    "torch_sums": {"SUMS_MAX_ROWS": 0}, "c_rev_load": {"C_REV_LOAD": True},
    "seq_grad_c_rev_load": {"SEQ_GRAD": True, "C_REV_LOAD": True},
}
SEQ_VARIANTS: dict[str, dict] = {
    "seq_T64_BD1": {"T_SEQ": 64, "BD_SEQ": 1},
    "seq_T64_BD2": {"T_SEQ": 64, "BD_SEQ": 2},
    "seq_T128_BD2": {"T_SEQ": 128, "BD_SEQ": 2},
    "seq_T256_BD1": {"T_SEQ": 256, "BD_SEQ": 1},
    "seq_T512_BD1": {"T_SEQ": 512, "BD_SEQ": 1},
    "seq_T1024_BD1_w2": {"T_SEQ": 1024, "BD_SEQ": 1, "WARPS_SEQ": 2},
    "seq_T64_BD4_w2": {"T_SEQ": 64, "BD_SEQ": 4, "WARPS_SEQ": 2},
    "seq_to_8k": {"SEQ_MAX_TILES": 128},
}

DEFAULT_VARIANTS = {
    "u1": dict(UNROLL=1),
    "u2": dict(UNROLL=2),
    "bcf32_u2": dict(BC_F32=True, UNROLL=2),
    "T128_BD2_u2": dict(T=128, BD_FWD=2, BD_BWD=2, UNROLL=2),
    # under autograd at many rows: `_fwd_seq` on long tiles writing the backward's T-tiled states
    # (kernels/NOTES.md, variant 16); applies at 8 x 1536 x 2048 of these shapes
    "three_kernel_fwd": dict(SEQ_GRAD_ROWS=0),
    "seq_rows_T512": dict(SEQ_GRAD_ROWS=1, T_SEQ_ROWS=512),
}
VARIANT_SHAPES = [(1, 1536, 8192), (1, 1536, 131072), (8, 1536, 2048), (1, 1536, 524288), (1, 5120, 32768)]


def run_kernels_command(out: pathlib.Path | None, shapes: str = "table", flash: bool = True, variants: bool = False,
                        profile: str | None = None, conv: bool = False, host: bool = False,
                        alternate: bool = False) -> None:
    """What `seqbench bench kernels` runs: the table (default), or one of the special measurements."""
    if host and alternate:
        rows = run_alternating(ALTERNATE_VARIANTS, ALTERNATE_SHAPES)
        if out is not None:
            write_rows(out, rows)
    elif host:
        rows = run_host_bench({**HOST_VARIANTS, **(SEQ_VARIANTS if variants else {})})
        if out is not None:
            write_rows(out, rows)
    elif conv:
        time_conv_and_steps()
    elif profile:
        profile_kernels(*(int(v) for v in profile.split(",")))
    elif variants:
        run_variant_sweep(DEFAULT_VARIANTS, VARIANT_SHAPES)
    else:
        run_kernel_bench(out, shapes=shapes, flash=flash)
