"""The paper's Figure 8 (left): the sequence-mixing operators alone, time vs length.

    seqbench bench operators --out results/h200/operators.csv

Batch 1, width 1024, N = 16, bf16, lengths 2^9 … 2^20; forward and forward+backward medians of
- `scan-triton`: our fused selective scan (with z, D, delta_bias, softplus, as Mamba calls it);
- `attention-flash`: torch SDPA flash attention, causal, 16 heads of 64 (d_model 1024);
- `conv-fft`: Hyena's long convolution by FFT (`seqbench.models.hyena.fft_causal_conv`), 1024 channels;
- `scan-pytorch`: the same scan in plain PyTorch, chunked (our CPU path, `selective_scan_chunked`);
- `scan-pytorch-loop`: the textbook sequential PyTorch loop (`selective_scan_ref`), only while one
  call stays under `loop_budget_s` (it grows linearly; longer lengths are left out, not guessed).
Writes the CSV (temp name, then rename) and a log-log PNG beside it. Needs a CUDA device.
"""

from __future__ import annotations

import math
import pathlib
import time

import torch

from seqbench.harness.bench.kernels import _median_ms, _single_ms, make_inputs, write_rows
from seqbench.harness.bench.models import save_png

WIDTH, HEADS, HEAD_DIM = 1024, 16, 64
LENGTHS = tuple(2**k for k in range(9, 21))
OPERATORS = ("scan-triton", "attention-flash", "conv-fft", "scan-pytorch", "scan-pytorch-loop")


def _scan_calls(length: int, backend: str):
    from seqbench.kernels.scan.reference import selective_scan_chunked, selective_scan_ref
    from seqbench.kernels.scan.triton import selective_scan_triton

    scan = {"scan-triton": selective_scan_triton, "scan-pytorch": selective_scan_chunked,
            "scan-pytorch-loop": selective_scan_ref}[backend]
    x = make_inputs(1, WIDTH, length, requires_grad=True)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True)
    return lambda: scan(*args, **kw), list(x.values())


def _attention_calls(length: int):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, HEADS, length, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))

    def call():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    return call, [q, k, v]


def _conv_calls(length: int):
    from seqbench.models.hyena import fft_causal_conv

    v = torch.randn(1, WIDTH, length, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    h = (torch.randn(WIDTH, length, device="cuda") * torch.exp(-torch.arange(length, device="cuda") / length)).requires_grad_()
    return lambda: fft_causal_conv(v, h), [v, h]


def time_operator(name: str, length: int) -> tuple[float, float]:
    """(forward ms, forward+backward ms): medians, or one timed call when a call takes seconds."""
    if name.startswith("scan"):
        call, leaves = _scan_calls(length, name)
    elif name == "attention-flash":
        call, leaves = _attention_calls(length)
    else:
        call, leaves = _conv_calls(length)
    grad = torch.randn_like(call())

    def fwd():
        with torch.no_grad():
            call()

    def fwd_bwd():
        call().backward(grad)

    fwd()  # compiles (Triton) and warms up; lengths run shortest first, so later ones are warm
    once = _single_ms(fwd)
    if once > 200:  # calls of a fifth of a second or more: one timed call each
        times = (_single_ms(fwd), _single_ms(fwd_bwd))
    else:
        times = (_median_ms(fwd), _median_ms(fwd_bwd, grad_to_none=leaves))
    del call, leaves, grad
    torch.cuda.empty_cache()
    return times


def run_operator_bench(out_csv: pathlib.Path | None, lengths=LENGTHS, loop_budget_s: float = 3.0) -> list[dict]:
    """Time every operator at every length; an out-of-memory is recorded as such."""
    rows = []
    loop_ms = 0.0
    for length in lengths:
        for name in OPERATORS:
            if name == "scan-pytorch-loop" and loop_ms * 2 / 1e3 > loop_budget_s:
                rows.append(dict(operator=name, length=length, fwd_ms="", fwd_bwd_ms="", status="beyond budget"))
                continue
            t0 = time.time()
            try:
                fwd, fwd_bwd = time_operator(name, length)
                status = "ok"
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                fwd = fwd_bwd = float("nan")
                status = "oom"
            if name == "scan-pytorch-loop":
                loop_ms = fwd_bwd
            rows.append(dict(operator=name, length=length, fwd_ms=_round(fwd), fwd_bwd_ms=_round(fwd_bwd), status=status))
            print(f"# {name:18s} {length:>8}: fwd {fwd:10.3f} ms  fwd+bwd {fwd_bwd:10.3f} ms  "
                  f"({time.time() - t0:.1f} s)", flush=True)
    if out_csv is not None:
        write_rows(pathlib.Path(out_csv), rows)
        plot_rows(pathlib.Path(out_csv).with_suffix(".png"), rows)
    print_rows(rows)
    return rows


def _round(ms: float) -> float | str:
    return "" if math.isnan(ms) else round(ms, 4)


def plot_rows(path: pathlib.Path, rows: list[dict]) -> None:
    """Two log-log panels (forward, forward+backward): time vs length per operator."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    for axis, column, title in zip(figure.subplots(1, 2), ("fwd_ms", "fwd_bwd_ms"), ("forward", "forward + backward")):
        for name in OPERATORS:
            points = [(r["length"], r[column]) for r in rows if r["operator"] == name and r[column] != ""]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=name)
        axis.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="ms", title=f"{title} · batch 1, width 1024, N 16, bf16")
        axis.set_xscale("log", base=2)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    save_png(figure, path)


def print_rows(rows: list[dict]) -> None:
    lengths = sorted({r["length"] for r in rows})
    cell = {(r["operator"], r["length"]): r for r in rows}
    for column in ("fwd_ms", "fwd_bwd_ms"):
        print(f"\n{column} (batch 1, width 1024, N 16, bf16)")
        print(f"{'operator':>18} " + " ".join(f"{n:>9}" for n in lengths))
        for name in OPERATORS:
            values = [cell.get((name, n), {}).get(column, "") for n in lengths]
            print(f"{name:>18} " + " ".join(f"{v:>9.3f}" if v != "" else f"{'-':>9}" for v in values))
