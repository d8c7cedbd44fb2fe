"""`lm`: next-token pretraining on text, audio or DNA through the modality adapters.

Windows of L+1 tokens are drawn from the train split (inputs = the first L, targets = the last L);
a window stays inside one record (document, clip, chromosome) unless no record is long enough,
then windows run across records. Metrics: loss, perplexity and bits per token — bits per byte
for byte-level text and 8-bit mu-law audio, where a token is one byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from seqbench.core.errors import SeqbenchError
from seqbench.modalities import get_modality, load_source
from seqbench.tasks.base import EVAL_STREAM, TRAIN_STREAM, Batch, HeadSpec, Task, TaskDefaults, generator
from seqbench.tasks.data_split import split_store


class LanguageModeling(Task):
    """Autoregressive modelling of a real source (`--data`), or of the generated sample data.

    Defaults follow the paper's recipe (§4.2): AdamW (0.9, 0.95), wd 0.1, grad clip 1.0, warmup
    then cosine; the length is the task's default unless given. For DNA and audio the paper's
    sequence-length warmup is available through the runner (`--seq-warmup-start`). `held_out`
    (0.2) is the fraction of each record held out where there are few records (a genome, one
    text): one held-out E. coli sequence of 2^22 bases needs `--task-set held_out=0.91`.
    """

    name = "lm"
    modalities = None  # any modality that loads data: text, audio, dna, or a plugin's
    main_metric = "loss"
    defaults = TaskDefaults(
        modality="text", seq_len=1024, steps=2000, batch_size=16, lr=1e-3, weight_decay=0.1, schedule="cosine",
        warmup_steps=100, grad_clip=1.0, eval_every=500,
        model_kwargs={"default": {"d_model": 128, "n_layers": 4}},
    )

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0,
                 held_out: float = 0.2) -> None:
        super().__init__(modality, data, seed)
        if not 0 < held_out < 1:
            raise SeqbenchError(f"lm: held_out is the fraction of each record held out, in (0, 1); got {held_out}")
        self.adapter = get_modality(self.modality)
        self.store = load_source(self.modality, data)
        self.train_store, self.eval_store = split_store(self.store, held_out)

    @property
    def vocab_size(self) -> int:
        return self.adapter.vocab_size

    @property
    def head(self) -> HeadSpec:
        return HeadSpec(kind="token", n_outputs=self.adapter.vocab_size)

    @property
    def bits_name(self) -> str:
        """'bits_per_byte' where a token is a byte (byte-level text, mu-law audio), else per token."""
        return "bits_per_byte" if getattr(self.adapter, "byte_level", False) else "bits_per_token"

    def check_seq_len(self, seq_len: int) -> None:
        self._check_splits(seq_len, (("train", self.train_store), ("held-out", self.eval_store)))

    def check_eval_len(self, seq_len: int) -> None:
        """An evaluation length needs only the held-out split (a long one may exceed the training split)."""
        self._check_splits(seq_len, (("held-out", self.eval_store),))

    def _check_splits(self, seq_len: int, splits) -> None:
        super().check_seq_len(seq_len)
        for split, store in splits:
            if len(store) < seq_len + 1:
                raise SeqbenchError(
                    f"lm at length {seq_len:,} needs {seq_len + 1:,} tokens but the {split} split of "
                    f"{self.data or 'the sample data'} has {len(store):,}; use a shorter --seq-len or more data")

    def _straddle(self, store, length: int) -> bool:
        return len(store.eligible(length)) == 0

    def _make(self, store, g: torch.Generator, batch_size: int, seq_len: int) -> Batch:
        windows, _ = store.batch(batch_size, seq_len + 1, g, straddle=self._straddle(store, seq_len + 1))
        return Batch(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())

    def train_batch(self, step: int, batch_size: int, seq_len: int, device: torch.device | None = None) -> Batch:
        return self._make(self.train_store, generator(self.seed, TRAIN_STREAM, step), batch_size, seq_len)

    def eval_batches(self, seq_len: int, n_samples: int, batch_size: int,
                     device: torch.device | None = None) -> Iterator[Batch]:
        g = generator(self.seed, EVAL_STREAM, seq_len)
        for start in range(0, n_samples, batch_size):
            yield self._make(self.eval_store, g, min(batch_size, n_samples - start), seq_len)

    def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        loss = metrics["loss"]
        return {"perplexity": math.exp(min(loss, 50.0)), self.bits_name: loss / math.log(2)}
