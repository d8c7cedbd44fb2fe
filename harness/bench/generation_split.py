"""Where one `generate` call's time goes, per model and batch (CUDA only).

`seqbench bench generation` times whole calls: decode-state allocation, the capture of the decode
step as a CUDA graph (two eager warm-up steps, then the capture), the prompt's prefill and the
decode replays. This script times those parts apart, so that the per-token decode speed -- what
the paper's Figure 8 (right) compares between Mamba and Transformers -- can be read on its own.

    seqbench bench generation-split --out results/h200/generation-split.csv
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from seqbench.core.devices import autocast
from seqbench.models.backbone import sample
from seqbench.harness.bench.models import language_model, write_csv
from seqbench.models.decoding import GraphedStep
from seqbench.models.presets import LM_VOCAB

MODELS = (("mamba", "130m"), ("transformer", "125m"), ("mamba", "1.4b"), ("transformer", "1.3b"))
BATCHES = (1, 8, 32, 128)
PROMPT, NEW_TOKENS = 2048, 128


def _now() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def split_one(model, batch: int, device: torch.device) -> dict:
    """Milliseconds of each part of one greedy generate call (the second of two: the first compiles)."""
    prompt = torch.randint(0, LM_VOCAB, (batch, PROMPT), device=device)
    for _ in range(2):
        with torch.no_grad(), autocast(device):
            t0 = _now()
            state = model.init_state(batch, max_len=PROMPT + NEW_TOKENS, device=device, dtype=torch.bfloat16)
            t1 = _now()
            step = GraphedStep(model, state, batch, device)
            t2 = _now()
            logits = model.prefill(prompt, state)
            step.after_prefill()
            t3 = _now()
            for i in range(NEW_TOKENS):
                token = sample(logits, 0)
                if i + 1 < NEW_TOKENS:
                    logits = step(token)
            t4 = _now()
    del state, step, logits
    torch.cuda.empty_cache()
    return {"init_ms": (t1 - t0) * 1e3, "capture_ms": (t2 - t1) * 1e3, "prefill_ms": (t3 - t2) * 1e3,
            "decode_ms": (t4 - t3) * 1e3, "decode_ms_per_token": (t4 - t3) * 1e3 / (NEW_TOKENS - 1),
            "decode_tokens_per_s": batch * (NEW_TOKENS - 1) / (t4 - t3), "total_ms": (t4 - t0) * 1e3}


def run_generation_split(out: Path) -> list[dict]:
    """Every model of MODELS at every batch of BATCHES, printed as measured; the CSV at the end."""
    device = torch.device("cuda")
    rows = []
    for family, size in MODELS:
        model = language_model(family, size).eval()
        for batch in BATCHES:
            row = {"model": family, "size": size, "batch": batch, **split_one(model, batch, device)}
            rows.append(row)
            print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        del model
        torch.cuda.empty_cache()
    write_csv(rows, out, fields=list(rows[0]))
    return rows
