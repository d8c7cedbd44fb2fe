"""`speed`: how time and memory grow with length, per model (paper §4.5), as a tracked run.

Nothing is trained: at each evaluation length the model runs forward and forward+backward on
random ids (bf16 autocast on CUDA, median of repeats), and generation is timed for a prompt of
`prompt_len` tokens and `new_tokens` new ones at each batch size (the paper: prompt 2048, 128 new
tokens, batch 1…128). Metrics per length: fwd_ms, fwd_bwd_ms, train_tokens_per_s, peak_memory_gb;
per batch: gen_tokens_per_s/b<B> (`--task-set gen_batches=1,8` chooses the batches; empty for
none). An out-of-memory is recorded (tag status/<L> = oom) and longer lengths are skipped; when
not even the first length fits, the run's status is oom. The same measuring code is behind
`seqbench bench models`.
"""

from __future__ import annotations

import torch

from seqbench.tasks.base import Batch, MeasuringTask, TaskDefaults
from seqbench.tasks.counter_random import CounterRandom


class Speed(MeasuringTask):
    """Forward / backward / generation speed and memory on random tokens (vocab 256)."""

    name = "speed"
    modalities = ("tokens",)
    main_metric = "train_tokens_per_s"
    defaults = TaskDefaults(
        modality="tokens", seq_len=2048, steps=1, batch_size=1, lr=1e-3,
        eval_lengths=tuple(2**k for k in range(9, 21)),
        model_kwargs={"default": {"d_model": 256, "n_layers": 4}},
    )
    vocab = 256

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0,
                 prompt_len: int = 2048, new_tokens: int = 128, gen_batches: tuple[int, ...] | str | int = (1, 8, 32)) -> None:
        super().__init__(modality, data, seed)
        if isinstance(gen_batches, (str, int)):  # from --task-set gen_batches=1,8,32 (empty: no generation)
            gen_batches = tuple(int(b) for b in str(gen_batches).split(",") if b.strip())
        self.prompt_len, self.new_tokens, self.gen_batches = prompt_len, new_tokens, gen_batches

    def make(self, rng: CounterRandom, seq_len: int) -> Batch:
        ids = rng.integers(0, self.vocab, seq_len)
        return Batch(ids, ids)

    def measure(self, model, config, device: torch.device, record) -> None:
        """Time the model at each length and generation at each batch; `record(metrics, tags)`
        stores results as they come, so an interruption keeps what was measured."""
        from seqbench.core.measure import measure_generation, measure_model, peak_gb

        repeats = 10 if device.type == "cuda" else 3
        measured = 0
        for seq_len in config.eval_lengths:
            if model.max_seq_len is not None and seq_len > model.max_seq_len:
                record({}, {f"status/{seq_len}": "skipped: beyond the model's positions"})
                continue
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                metrics = measure_model(model, self.vocab, seq_len, config.batch_size, device, repeats, warmup=1)
            except torch.OutOfMemoryError:
                model.zero_grad(set_to_none=True)
                record({}, {f"status/{seq_len}": "oom"})
                if not measured:  # nothing fits: the run itself is an out-of-memory (a sweep child's status)
                    raise
                break
            measured += 1
            metrics["peak_memory_gb"] = peak_gb(device)
            record({f"{k}/{seq_len}": v for k, v in metrics.items()}, {f"status/{seq_len}": "ok"})
        for batch in self.gen_batches:
            try:
                metrics = measure_generation(model, self.vocab, self.prompt_len, self.new_tokens, batch, device)
            except torch.OutOfMemoryError:
                record({}, {f"gen_status/b{batch}": "oom"})
                break
            record({f"{k}/b{batch}": v for k, v in metrics.items()}, {f"gen_status/b{batch}": "ok"})
