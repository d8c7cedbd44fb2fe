"""seqbench's Mamba against the authors' `mamba_ssm`, side by side in one process on one GPU.

    seqbench bench mamba-ssm --out results/h200/mamba-vs-mamba_ssm.csv

Every cell of the comparison: training forward+backward (130m, bf16 autocast on fp32 weights,
cross-entropy on fp32 logits: tokens/s and peak memory), prefill (1.4b, one forward of the
prompt, last logits only), generation (130m and 1.4b, prompt 2048 + 128 greedy tokens, the decode
step as a CUDA graph) and the selective scan alone (forward+backward, 1 x 1536 x 2048). Prefill
is timed at every generation batch of 1.4b, so that a generation call's time splits into its
prefill and its 128 decode steps. Inference runs on bf16 weights for both, as the authors'
benchmark does. The same timing code measures both (CUDA events, medians after warm-up); each
model is built with seed 0 and random weights. The scan alone and the batch-1 prefill, bound by
the host's speed, which drifts within a run, alternate the two implementations over six rounds
(prefill at larger batches over two).

`mamba_ssm` is never a dependency: when it cannot be imported, its column stays empty and only
seqbench is measured. Built from the authors' source for the measurement, it compiles in a
third of the time after `anchor_trim` (only the instantiations measured here are compiled).
CSV columns: what, size, batch, seq_len, seqbench, mamba_ssm, unit, ratio (ratio > 1: seqbench
is better -- tokens/s ours / theirs, ms and GB theirs / ours).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from seqbench.core.devices import autocast
from seqbench.core.measure import alternating_rounds, cuda_kernel_times, time_ms
from seqbench.harness.bench.models import language_model, save_png, write_csv
from seqbench.models.presets import LM_VOCAB

FIELDS = ["what", "size", "batch", "seq_len", "seqbench", "mamba_ssm", "unit", "ratio"]
# the authors' released configurations: (d_model, n_layer)
THEIR_SIZES = {"130m": (768, 24), "1.4b": (2048, 48)}
TRAIN_SHAPES = [(8, 2048), (1, 16384)]
PREFILL_BATCHES = [1, 8, 32, 128]  # every generation batch too: a generation call is its prefill plus the decode steps
PREFILL_ROUNDS = {1: 6}  # alternating rounds per batch (default 2): the host-bound call gets more
GEN_BATCHES = [1, 8, 32, 128]
PROMPT, NEW = 2048, 128


def _theirs(size: str):
    """The authors' MambaLMHeadModel of `size` on the GPU (fp32 weights), or None without mamba_ssm."""
    try:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except ImportError:
        return None
    d_model, n_layer = THEIR_SIZES[size]
    torch.manual_seed(0)
    config = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=50277, ssm_cfg={"layer": "Mamba1"},
                         rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
    return MambaLMHeadModel(config, device="cuda", dtype=torch.float32)


def _ours(size: str):
    torch.manual_seed(0)
    return language_model("mamba", size)


def _logits(model, ids, theirs: bool, last_only: bool = False):
    if theirs:
        return model(ids, num_last_tokens=1 if last_only else 0).logits
    return model(ids, last_only=last_only)


def _call(model, theirs: bool, what: str, batch: int, seq_len: int = PROMPT):
    """One call of `what` on random ids, the same for the timings and the profile: a training
    step (forward + backward + cross-entropy on fp32 logits under bf16 autocast), a prefill
    (one forward of the prompt, last logits only) or a generation call (prompt + NEW greedy
    tokens, the decode step as a CUDA graph)."""
    ids = torch.randint(0, LM_VOCAB - 3, (batch, seq_len), device="cuda")
    if what == "training":
        def call():
            with autocast(torch.device("cuda")):
                logits = _logits(model, ids, theirs)
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
            loss.backward()
            model.zero_grad(set_to_none=True)
    elif what == "prefill":
        def call():
            with torch.no_grad():
                _logits(model, ids, theirs, last_only=True)
    elif theirs:
        def call():
            model.generate(input_ids=ids, max_length=seq_len + NEW, cg=True, temperature=1.0, top_k=1)
    else:
        def call():
            model.generate(ids, NEW, temperature=0, cuda_graph=True)
    return call


def _train(model, theirs: bool, batch: int, seq_len: int) -> tuple[float, float]:
    """(tokens/s, peak GB) of a training step."""
    step = _call(model, theirs, "training", batch, seq_len)
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ms = time_ms(step, torch.device("cuda"), repeats=10, warmup=3)
    return batch * seq_len / (ms / 1000), torch.cuda.max_memory_allocated() / 2**30


def _prefill_ms(ours, theirs, batch: int) -> tuple[float, float | None]:
    """Prefill ms of both models (theirs None without mamba_ssm), medians over alternating
    rounds: batch 1 is bound by the host, whose speed drifts between windows of one run, so one
    side timed after the other would compare two host speeds."""
    calls = {"ours": _call(ours, False, "prefill", batch)}
    if theirs is not None:
        calls["theirs"] = _call(theirs, True, "prefill", batch)
    rounds = PREFILL_ROUNDS.get(batch, 2)
    times = alternating_rounds(list(calls), rounds, lambda name: {
        "ms": time_ms(calls[name], torch.device("cuda"), repeats=5 if batch == 1 else 3, warmup=1)})
    median = {name: statistics.median(t["ms"]) for name, t in times.items()}
    return median["ours"], median.get("theirs")


def _generate_tokens_per_s(model, theirs: bool, batch: int) -> float:
    ms = time_ms(_call(model, theirs, "generation", batch), torch.device("cuda"), repeats=3, warmup=1)
    return batch * NEW / (ms / 1000)


def _scan_fwd_bwd_ms(rounds: int = 6) -> tuple[float, float | None]:
    """The scan's forward+backward at 1 x 1536 x 2048 (ms), ours and theirs (None without
    mamba_ssm): the median of each side over alternating rounds (`alternating_rounds`: the call
    is bound by the host, whose speed drifts between windows of one run)."""
    from seqbench.harness.bench.kernels import fwd_bwd_call, make_inputs
    from seqbench.kernels import selective_scan as ours

    x = make_inputs(1, 1536, 2048, requires_grad=True)
    dout = torch.randn_like(x["u"])
    scans = {"ours": ours}
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        scans["theirs"] = selective_scan_fn
    except ImportError:
        pass
    calls = {name: fwd_bwd_call(scan, x, dout) for name, scan in scans.items()}
    times = alternating_rounds(list(scans), rounds, lambda name: {
        "ms": time_ms(calls[name], torch.device("cuda"), repeats=50, warmup=10)})
    median = {name: statistics.median(t["ms"]) for name, t in times.items()}
    return median["ours"], median.get("theirs")


PROFILE_FIELDS = ["side", "what", "size", "batch", "kernel", "launches", "device_ms"]
# the rows still below or near 1.0: one training step (130m, B8 x 2048), the 1.4b batch-1 prefill
# and the 1.4b batch-32 generation call (its prefill plus 128 decode steps; the prefill at the same
# batch is profiled too, and their difference / 128 is written as one decode step, "decode-step")
PROFILE_CALLS = (("training", "130m", 8), ("prefill", "1.4b", 1), ("generation", "1.4b", 32))
PROFILE_TOP = 40  # enough to name every kernel family of a training step (its tail held 8 ms of 99 at 12)

Kernels = dict[str, tuple[float, float]]  # kernel name -> (launches, device ms), per call


def _kernel_profile(fn, calls: int = 3) -> tuple[Kernels, float]:
    """Per kernel name, launches and device ms of one call (torch profiler, CUDA activity, after
    a warm-up call), and the call's wall ms (CUDA events, outside the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    wall = time_ms(fn, torch.device("cuda"), repeats=calls, warmup=0)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return {name: (n, ms) for name, n, ms in cuda_kernel_times(prof, calls)}, wall


def per_step(whole: Kernels, part: Kernels, steps: int) -> Kernels:
    """(whole - part) / steps per kernel name: one decode step from a generation call's profile
    and a stateless prefill's at the same batch. Only kernels launched at least once a step
    stay: what the call's own prefill runs beside the stateless one (writing the decoding
    state) is launched once a call, not once a step."""
    out = {}
    for name, (n, ms) in whole.items():
        n0, ms0 = part.get(name, (0.0, 0.0))
        if (n - n0) / steps >= 0.99 and ms > ms0:
            out[name] = ((n - n0) / steps, (ms - ms0) / steps)
    return out


def profile_rows(kernels: Kernels, wall: float, side: str, what: str, size: str, batch: int) -> list[dict]:
    """The top PROFILE_TOP kernels by device time, the rest as one row, then "(all kernels)" and
    "(wall)", whose difference is time the GPU waited on the host."""
    ranked = sorted(kernels.items(), key=lambda item: -item[1][1])
    row = lambda name, n, ms: dict(side=side, what=what, size=size, batch=batch, kernel=name,  # noqa: E731
                                   launches=round(n, 1), device_ms=round(ms, 4))
    rows = [row(name[:120], n, ms) for name, (n, ms) in ranked[:PROFILE_TOP]]
    rest = [v for _, v in ranked[PROFILE_TOP:]]
    if rest:
        rows.append(row(f"({len(rest)} other kernels)", sum(n for n, _ in rest), sum(ms for _, ms in rest)))
    rows.append(row("(all kernels)", sum(n for n, _ in kernels.values()), sum(ms for _, ms in kernels.values())))
    rows.append(dict(side=side, what=what, size=size, batch=batch, kernel="(wall)", launches="",
                     device_ms=round(wall, 4)))
    for r in rows:
        print(f"# profile {side:9s} {what:11s} {size:5s} B{batch:<3d} {r['launches']!s:>7s} launches "
              f"{r['device_ms']:9.3f} ms  {r['kernel'][:90]}", flush=True)
    return rows


def run_profile(out_csv: Path | None) -> list[dict]:
    """`--parts profile`: each of PROFILE_CALLS profiled on both sides (inference on bf16
    weights, training on fp32 weights under autocast), one model at a time, to
    `<out>-profile.csv` beside the table when --out is given."""
    rows: list[dict] = []
    for what, size, batch in PROFILE_CALLS:
        for side, build in (("seqbench", _ours), ("mamba_ssm", _theirs)):
            model = build(size)
            if model is None:
                continue
            if what != "training":
                model = model.to(torch.bfloat16)
            theirs = side == "mamba_ssm"
            kernels, wall = _kernel_profile(_call(model, theirs, what, batch))
            rows += profile_rows(kernels, wall, side, what, size, batch)
            if what == "generation":  # one decode step: the call less its prefill, per token
                prefill, prefill_wall = _kernel_profile(_call(model, theirs, "prefill", batch))
                rows += profile_rows(per_step(kernels, prefill, NEW), (wall - prefill_wall) / NEW,
                                     side, "decode-step", size, batch)
            if hasattr(model, "release_decoding"):
                model.release_decoding()
            del model
            torch.cuda.empty_cache()
    if out_csv is not None:
        write_csv(rows, out_csv.with_name(out_csv.stem + "-profile.csv"), PROFILE_FIELDS)
    return rows


LAYOUT_FIELDS = ["layout", "batch", "seq_len", "ms", "tokens_per_s", "peak_gb", "mamba_ssm_ms"]
LAYOUT_ROUNDS = 4


# `--parts layouts`: the row layouts of the channel-major projections (models/NOTES.md, variant
# 12) crossed with the scan's forward under autograd at many rows (kernels/NOTES.md, variant 16)
_THREE_KERNEL_FWD = {"SEQ_GRAD_ROWS": 0}
LAYOUTS: dict[str, tuple[bool, dict]] = {
    "batch-major": (False, _THREE_KERNEL_FWD), "channel-outer": (True, _THREE_KERNEL_FWD),
    "batch-major+seq-rows-T256": (False, {"SEQ_GRAD_ROWS": 1, "T_SEQ_ROWS": 256}),
    "channel-outer+seq-rows-T256": (True, {"SEQ_GRAD_ROWS": 1, "T_SEQ_ROWS": 256}),
    "channel-outer+seq-rows-T512": (True, {"SEQ_GRAD_ROWS": 1, "T_SEQ_ROWS": 512})}


def _set_layout(outer: bool, scan_config: dict) -> None:
    """Our model's row layout and the scan's CONFIG entries; the scan's cached plans are
    dropped, as they fix the tile configuration."""
    from seqbench.kernels.scan import triton as scan_triton
    from seqbench.models import channel_major

    channel_major.CHANNEL_OUTER = outer
    scan_triton.CONFIG.update(scan_config)
    scan_triton._PLANS.clear()


def run_layouts(out_csv: Path | None) -> list[dict]:
    """`--parts layouts`: our 130m training step at TRAIN_SHAPES in each of LAYOUTS, in
    alternating rounds of one process, the authors' step once beside them; to
    `<out>-layouts.csv` when --out is given."""
    from seqbench.kernels.scan import triton as scan_triton
    from seqbench.models import channel_major

    chosen = (channel_major.CHANNEL_OUTER, dict(scan_triton.CONFIG))
    rows: list[dict] = []
    try:
        for batch, seq_len in TRAIN_SHAPES:
            model = _ours("130m")
            step = _call(model, False, "training", batch, seq_len)
            peak: dict[str, float] = {}

            def measure(layout: str) -> dict[str, float]:
                _set_layout(chosen[0], chosen[1])
                _set_layout(*LAYOUTS[layout])
                step()  # a new layout's first step (plans, allocator) stays out of the timing
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                ms = time_ms(step, torch.device("cuda"), repeats=5, warmup=1)
                peak.setdefault(layout, torch.cuda.max_memory_allocated() / 2**30)
                return {"ms": ms}

            times = alternating_rounds(list(LAYOUTS), LAYOUT_ROUNDS, measure)
            del model, step
            torch.cuda.empty_cache()
            theirs = _theirs("130m")
            their_ms = None
            if theirs is not None:
                their_ms = time_ms(_call(theirs, True, "training", batch, seq_len), torch.device("cuda"), repeats=5,
                                   warmup=2)
                del theirs
                torch.cuda.empty_cache()
            for layout in LAYOUTS:
                ms = statistics.median(times[layout]["ms"])
                rows.append({"layout": layout, "batch": batch, "seq_len": seq_len, "ms": ms,
                             "tokens_per_s": batch * seq_len / (ms / 1000), "peak_gb": peak[layout],
                             "mamba_ssm_ms": their_ms})
                print(f"# layouts {layout:28s} B{batch:<3d} L{seq_len:<6d} {ms:8.2f} ms  peak {peak[layout]:.2f} GB"
                      f"  mamba_ssm {their_ms if their_ms is None else f'{their_ms:.2f}'} ms", flush=True)
    finally:
        _set_layout(*chosen)
    if out_csv is not None:
        write_csv(rows, out_csv.with_name(out_csv.stem + "-layouts.csv"), LAYOUT_FIELDS)
    return rows


def _row(what, size, batch, seq_len, ours, theirs, unit, higher_is_better) -> dict:
    ratio = None
    if ours is not None and theirs is not None:
        ratio = ours / theirs if higher_is_better else theirs / ours
    row = {"what": what, "size": size, "batch": batch, "seq_len": seq_len, "seqbench": ours, "mamba_ssm": theirs,
           "unit": unit, "ratio": ratio}
    print(f"# {what:10s} {size:5s} B{batch:<4d} L{seq_len:<6d} seqbench {ours if ours is None else f'{ours:,.4g}'}"
          f"  mamba_ssm {theirs if theirs is None else f'{theirs:,.4g}'} {unit}"
          f"  ratio {ratio if ratio is None else f'{ratio:.3f}'}", flush=True)
    return row


def run_mamba_ssm_bench(out_csv: Path | None, parts: tuple[str, ...] = ("train", "prefill", "generation", "scan")) -> list[dict]:
    """Measure every cell (both implementations where mamba_ssm imports); write the CSV and its
    plot; with "profile" among the parts, also the per-kernel profiles (`run_profile`), with
    "layouts" the training step in both layouts of the projections (`run_layouts`)."""
    rows: list[dict] = []

    def emit(row):
        rows.append(row)
        if out_csv is not None:  # after every row: a cut-short run keeps what it measured
            write_csv(rows, out_csv, FIELDS)

    def both(build_ours, build_theirs, measure):
        """measure(model, theirs) for ours, then theirs (None without mamba_ssm); one model at a time."""
        results = []
        for build, theirs in ((build_ours, False), (build_theirs, True)):
            model = build()
            results.append(None if model is None else measure(model, theirs))
            del model
            torch.cuda.empty_cache()
        return results

    if "train" in parts:
        for batch, seq_len in TRAIN_SHAPES:
            (ours_tps, ours_gb), theirs = both(lambda: _ours("130m"), lambda: _theirs("130m"),
                                               lambda m, t: _train(m, t, batch, seq_len))
            theirs_tps, theirs_gb = theirs if theirs is not None else (None, None)
            emit(_row("training", "130m", batch, seq_len, ours_tps, theirs_tps, "tokens/s", True))
            emit(_row("train-mem", "130m", batch, seq_len, ours_gb, theirs_gb, "GB", False))
    if "prefill" in parts or "generation" in parts:
        for size in ("1.4b", "130m"):
            ours_model = _ours(size).to(torch.bfloat16)
            their_model = _theirs(size)
            their_model = their_model.to(torch.bfloat16) if their_model is not None else None
            if "prefill" in parts and size == "1.4b":
                for batch in PREFILL_BATCHES:
                    emit(_row("prefill", size, batch, PROMPT, *_prefill_ms(ours_model, their_model, batch), "ms", False))
            if "generation" in parts:
                for batch in GEN_BATCHES:
                    ours = _generate_tokens_per_s(ours_model, False, batch)
                    ours_model.release_decoding()
                    theirs = None if their_model is None else _generate_tokens_per_s(their_model, True, batch)
                    if their_model is not None and hasattr(their_model, "_decoding_cache"):
                        del their_model._decoding_cache  # its graphs and cache hold the batch's memory
                    torch.cuda.empty_cache()
                    emit(_row("generation", size, batch, PROMPT + NEW, ours, theirs, "tokens/s", True))
            del ours_model, their_model
            torch.cuda.empty_cache()
    if "scan" in parts:
        emit(_row("scan", "1536", 1, 2048, *_scan_fwd_bwd_ms(), "ms", False))
    if out_csv is not None and rows:
        plot_ratios(rows, out_csv.with_suffix(".png"))
    if "profile" in parts:
        run_profile(out_csv)
    if "layouts" in parts:
        run_layouts(out_csv)
    return rows


def plot_ratios(rows: list[dict], path: Path, device: str | None = None) -> None:
    """One bar per cell: seqbench / mamba_ssm (1 = level; > 1 seqbench is better); `device`
    names the GPU in the title (default: this machine's, for a plot made where it was measured)."""
    from matplotlib.figure import Figure

    done = [r for r in rows if r["ratio"] is not None]
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    axis = figure.subplots()
    labels = [f"{r['what']} {r['size']}\nB{r['batch']}" + (f"×{r['seq_len']}" if r["what"] != "generation" else "")
              for r in done]
    colors = ["tab:green" if r["ratio"] >= 1 else "tab:red" for r in done]
    axis.bar(range(len(done)), [r["ratio"] for r in done], color=colors)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(done)), labels, rotation=60, ha="right", fontsize=7)
    axis.set(ylabel="seqbench ÷ mamba_ssm (higher: seqbench better)",
             title=f"seqbench Mamba vs the authors' mamba_ssm · {device or torch.cuda.get_device_name()}")
    axis.grid(True, axis="y", alpha=0.3)
    save_png(figure, path)
