"""Sequence classification: DNA species (`species`) and spoken digits (`spoken-digits`).

Both pool the backbone's output over the sequence into a linear head over the classes; the
metric is accuracy, and the runner logs a confusion matrix per evaluation length. The pooling is
the task setting `pool`: `mean` (the default: every family sees every position's features) or
`last` (the last token only, which favours a model that carries the whole clip in its state:
a causal Mamba then has to, attention can look back; `--task-set pool=last`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from seqbench.core.errors import SeqbenchError
from seqbench.modalities import get_modality, load_source
from seqbench.modalities.audio import SPOKEN_DIGIT
from seqbench.modalities.dna import reverse_complement
from seqbench.tasks.base import EVAL_STREAM, TRAIN_STREAM, Batch, HeadSpec, Task, TaskDefaults, generator
from seqbench.tasks.data_split import split_store


class ClassificationTask(Task):
    """A task over a modality adapter's ids with one label per sequence: subclasses set
    `adapter`, `label_names` and `pool` (mean or last token; `check_pool`) in their constructor."""

    adapter: object
    label_names: list[str]
    pool: str = "mean"
    POOLS = ("mean", "last")

    def check_pool(self, pool: str) -> str:
        if pool not in self.POOLS:
            raise SeqbenchError(f"{self.name} pool must be one of {', '.join(self.POOLS)}, got {pool!r}")
        return pool

    @property
    def vocab_size(self) -> int:
        return self.adapter.vocab_size

    @property
    def head(self) -> HeadSpec:
        return HeadSpec(kind="class", n_outputs=len(self.label_names), pool=self.pool)


class Species(ClassificationTask):
    """Which FASTA file (species) a random DNA window comes from (paper §4.3, Great Apes).

    `--data` is a folder with one FASTA per species (e.g. ../shared/data/dna/great-ape-mtdna);
    without it, the generated sample species. Each genome is split by position: windows for
    training come from its first 80%, held-out windows from its last 20%, so the longest length is
    the shortest held-out segment (about 3.3 kb for the ~16.5 kb ape mitochondrial genomes) and
    longer lengths are refused. Training windows are reverse-complemented with probability 1/2.
    Classes are drawn uniformly (balanced), then a record of that class, then a position.
    """

    name = "species"
    modalities = ("dna",)
    defaults = TaskDefaults(
        modality="dna", seq_len=512, steps=1000, batch_size=32, lr=1e-3, weight_decay=0.1, schedule="cosine",
        warmup_steps=50, eval_every=250,
        model_kwargs={"default": {"d_model": 128, "n_layers": 6}},
    )

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0, pool: str = "mean") -> None:
        super().__init__(modality, data, seed)
        self.adapter = get_modality("dna")
        store = load_source("dna", data)
        if store.labels is None or store.n_labels < 2:
            raise SeqbenchError(f"species needs a folder with one FASTA file per species (2 or more); "
                                f"got {data or 'the sample data'} with {store.n_labels or 0} labels")
        self.store = store
        self.train_store, self.eval_store = split_store(store)
        self.label_names = list(store.label_names)
        self.pool = self.check_pool(pool)

    def max_length(self) -> int:
        """The longest window every class can give in both splits."""
        per_label = []
        for store in (self.train_store, self.eval_store):
            for label in range(len(self.label_names)):
                per_label.append(int(store.lengths[store.labels == label].max()))
        return min(per_label)

    def check_seq_len(self, seq_len: int) -> None:
        super().check_seq_len(seq_len)
        longest = self.max_length()
        if seq_len > longest:
            raise SeqbenchError(
                f"species windows can be at most {longest:,} bases with {self.data or 'the sample data'} "
                f"(the shortest held-out genome segment); got {seq_len:,}")

    def train_batch(self, step: int, batch_size: int, seq_len: int, device: torch.device | None = None) -> Batch:
        g = generator(self.seed, TRAIN_STREAM, step)
        windows, labels = self.train_store.batch(batch_size, seq_len, g, by="label")
        flip = torch.rand(batch_size, generator=g) < 0.5
        if flip.any():
            windows[flip] = torch.from_numpy(np.ascontiguousarray(reverse_complement(windows[flip].numpy())))
        return Batch(windows, labels)

    def eval_batches(self, seq_len: int, n_samples: int, batch_size: int,
                     device: torch.device | None = None) -> Iterator[Batch]:
        g = generator(self.seed, EVAL_STREAM, seq_len)
        for start in range(0, n_samples, batch_size):
            windows, labels = self.eval_store.batch(min(batch_size, n_samples - start), seq_len, g, by="label")
            yield Batch(windows, labels)


class SpokenDigits(ClassificationTask):
    """Which digit a clip says: raw 16 kHz mu-law audio, one clip per sequence.

    Clips are brought to the length L (default 16,000 = 1 s): longer clips are cropped around
    their centre, shorter ones are left-padded with silence (mu-law 128), so the pooled last token
    is always the clip's own last sample. `--data` is a folder of `<digit>_<speaker>_<index>.wav`
    files (e.g. ../shared/data/audio/spoken-digits); without it, the generated sample clips. The
    held-out split is the dataset's usual one, recording indices 0-4 (`split="index"`), or one
    whole speaker (`split="speaker:<name>"`).
    """

    name = "spoken-digits"
    modalities = ("audio",)
    defaults = TaskDefaults(
        modality="audio", seq_len=16000, steps=1000, batch_size=16, lr=1e-3, weight_decay=0.1, schedule="cosine",
        warmup_steps=50, eval_every=250,
        model_kwargs={"default": {"d_model": 64, "n_layers": 4}},
    )
    SILENCE = 128

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0,
                 split: str = "index", pool: str = "mean") -> None:
        super().__init__(modality, data, seed)
        self.adapter = get_modality("audio")
        store = load_source("audio", data, labels=SPOKEN_DIGIT)
        if split == "index":
            held = [i for i, n in enumerate(store.names) if _recording_index(n) < 5]
        elif split.startswith("speaker:"):
            who = split.split(":", 1)[1]
            held = [i for i, n in enumerate(store.names) if f"_{who}_" in n]
        else:
            raise SeqbenchError(f"spoken-digits split must be 'index' or 'speaker:<name>', got {split!r}")
        if not held or len(held) == store.n_records:
            raise SeqbenchError(f"spoken-digits split {split!r} leaves no train or no held-out clips in "
                                f"{data or 'the sample data'}")
        keep = sorted(set(range(store.n_records)) - set(held))
        self.train_store, self.eval_store = store.select(keep), store.select(held)
        self.label_names = list(store.label_names)
        self.pool = self.check_pool(pool)

    def _clip(self, store, record: int, seq_len: int) -> np.ndarray:
        clip = store.record(record)
        if len(clip) >= seq_len:
            start = (len(clip) - seq_len) // 2
            return clip[start:start + seq_len]
        return np.concatenate([np.full(seq_len - len(clip), self.SILENCE, dtype=clip.dtype), clip])

    def _batch(self, store, records, seq_len: int) -> Batch:
        inputs = torch.from_numpy(np.stack([self._clip(store, r, seq_len) for r in records]).astype(np.int64))
        return Batch(inputs, torch.from_numpy(store.labels[np.asarray(records)].astype(np.int64)))

    def train_batch(self, step: int, batch_size: int, seq_len: int, device: torch.device | None = None) -> Batch:
        g = generator(self.seed, TRAIN_STREAM, step)
        records = torch.randint(0, self.train_store.n_records, (batch_size,), generator=g).tolist()
        return self._batch(self.train_store, records, seq_len)

    def eval_batches(self, seq_len: int, n_samples: int, batch_size: int,
                     device: torch.device | None = None) -> Iterator[Batch]:
        """The held-out clips in order (each once), at most `n_samples` of them."""
        total = min(n_samples, self.eval_store.n_records)
        for start in range(0, total, batch_size):
            yield self._batch(self.eval_store, list(range(start, min(total, start + batch_size))), seq_len)


def _recording_index(name: str) -> int:
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    try:
        return int(stem.rsplit("_", 1)[-1])
    except ValueError:
        return 1 << 30
