"""Timing and memory measurements of a model, shared by the speed task and the benchmarks: CUDA
events (medians after warm-up) on a GPU, perf_counter on the CPU; they use only the model's own
interface (call, zero_grad, generate)."""

from __future__ import annotations

import statistics

import torch

from seqbench.core.devices import autocast, peak_memory_mb


def time_ms(fn, device: torch.device, repeats: int = 10, warmup: int = 3) -> float:
    """Median wall time of `fn` in ms: CUDA events on a GPU, perf_counter on the CPU."""
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def alternating_rounds(names: list[str], rounds: int, measure) -> dict[str, dict[str, list[float]]]:
    """`measure(name)` -> {metric: value} for every name, in `rounds` rounds that each take the
    names in a shuffled (seeded) order: side-by-side timings of host-bound calls, whose host
    drifts in speed between windows of one run, keep the drift out of their ratio. Returns
    {name: {metric: [one value per round]}}."""
    import random

    out: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    order = list(names)
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for name in order:
            for metric, value in measure(name).items():
                out[name].setdefault(metric, []).append(value)
    return out


def cuda_kernel_times(prof, calls: int) -> list[tuple[str, float, float]]:
    """(name, launches per call, device ms per call) of every kernel, memcpy and memset a
    torch.profiler run over `calls` calls recorded, the longest first."""
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    rows = [(e.key, e.count / calls, e.device_time_total / calls / 1e3) for e in events]
    return sorted(rows, key=lambda row: -row[2])


def peak_gb(device: torch.device) -> float:
    return peak_memory_mb(device) / 1024


def measure_model(model, vocab: int, seq_len: int, batch: int, device: torch.device,
                  repeats: int = 10, warmup: int = 3) -> dict:
    """Forward and forward+backward median ms, training tokens/s and peak memory (GB) of `model`
    on random ids (bf16 autocast on CUDA). Raises torch.OutOfMemoryError when it does not fit."""
    ids = torch.randint(0, vocab, (batch, seq_len), device=device)

    def forward():
        with torch.no_grad(), autocast(device):
            model(ids)

    def forward_backward():
        with autocast(device):
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
        loss.backward()
        model.zero_grad(set_to_none=True)

    fwd = time_ms(forward, device, repeats, warmup)
    fwd_bwd = time_ms(forward_backward, device, repeats, warmup)
    return {"fwd_ms": fwd, "fwd_bwd_ms": fwd_bwd, "train_tokens_per_s": batch * seq_len / (fwd_bwd / 1000)}


def measure_generation(model, vocab: int, prompt_len: int, new_tokens: int, batch: int, device: torch.device,
                       repeats: int = 3, cuda_graph: bool = True) -> dict:
    """Generation throughput: batch × new_tokens / time of prefill + `new_tokens` decode steps
    (the decode step replayed as a CUDA graph where the family allows it and `cuda_graph`; it is
    captured in the warm-up call and kept for the timed ones, as a serving loop would keep it)."""
    prompt = torch.randint(0, vocab, (batch, prompt_len), device=device)

    def generate():
        with autocast(device):
            model.generate(prompt, new_tokens, temperature=0, cuda_graph=cuda_graph)

    try:
        ms = time_ms(generate, device, repeats, warmup=1)
    finally:  # the held step's decoding state (a KV cache) is not kept past the measurement
        model.release_decoding()
    graphed = cuda_graph and device.type == "cuda" and model.graph_decodable
    return {"gen_ms": ms, "gen_tokens_per_s": batch * new_tokens / (ms / 1000), "cuda_graph": float(graphed)}
