"""The Task protocol: data for a (modality, length, split, seed), the head, and defaults.

A task owns everything that is specific to one benchmark; the runner trains and evaluates any
task the same way. Tasks draw every batch from a generator seeded by (seed, split, step or
length), so the same seed gives the same data on every machine and after a resume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from seqbench.core.errors import SeqbenchError
from seqbench.core.types import IGNORE_INDEX, Batch, HeadSpec  # noqa: F401  (re-exported: the task interface)
from seqbench.tasks.counter_random import CounterRandom, stream_key

@dataclass(frozen=True)
class TaskDefaults:
    """The paper's settings for a task; every field can be overridden from the CLI."""

    modality: str
    seq_len: int
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.1
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 1.0
    eval_every: int = 0
    eval_lengths: tuple[int, ...] = ()  # empty: evaluate at the training length
    model_kwargs: dict[str, dict] = field(default_factory=dict)

    def model_defaults(self, model: str) -> dict:
        """Model size for this task: the entry for `model`, else the "default" entry."""
        return dict(self.model_kwargs.get(model, self.model_kwargs.get("default", {})))


class Task(ABC):
    """A benchmark task. Subclasses set `name`, `modalities`, `defaults` and implement the data."""

    name: ClassVar[str]
    #: the modalities the task takes by name; None: any registered modality that loads data
    modalities: ClassVar[tuple[str, ...] | None]
    defaults: ClassVar[TaskDefaults]
    main_metric: ClassVar[str] = "accuracy"
    #: True when only the last position carries a target: the model then computes the head there only.
    scores_last_position_only: ClassVar[bool] = False

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0) -> None:
        self.modality = modality or self.defaults.modality
        if self.modalities is None:  # any registered modality that loads data (plugins too)
            from seqbench.modalities import LoadableModality, get_modality

            if not isinstance(get_modality(self.modality), LoadableModality):
                raise SeqbenchError(f"task {self.name!r} needs a modality that loads data; {self.modality!r} does not")
        elif self.modality not in self.modalities:
            raise SeqbenchError(
                f"task {self.name!r} does not take modality {self.modality!r}; accepted: {', '.join(self.modalities)}"
            )
        self.data = data
        self.seed = seed

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of input ids the embedding must hold."""

    @property
    @abstractmethod
    def head(self) -> HeadSpec:
        """The head the model needs for this task."""

    def check_seq_len(self, seq_len: int) -> None:
        """Raise SeqbenchError when the task cannot be posed at `seq_len`."""
        if seq_len < 1:
            raise SeqbenchError(f"sequence length must be >= 1, got {seq_len}")

    def check_eval_len(self, seq_len: int) -> None:
        """Raise SeqbenchError when the task cannot be evaluated at `seq_len` (by default: when it
        cannot be posed there; a task whose evaluation data differ from its training data narrows it)."""
        self.check_seq_len(seq_len)

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seq_len: int, device: torch.device | None = None) -> Batch:
        """The training batch of `step` (deterministic in seed and step), made on `device` where
        the task can (generated tasks do) and otherwise on the CPU (the runner moves it)."""

    @abstractmethod
    def eval_batches(self, seq_len: int, n_samples: int, batch_size: int,
                     device: torch.device | None = None) -> Iterator[Batch]:
        """Held-out batches at `seq_len`, `n_samples` sequences in all (deterministic in seed),
        made on `device` where the task can."""

    def eval_variants(self, seq_len: int) -> dict[str, "Task"]:
        """Extra slices evaluated at `seq_len`, by metric-name suffix (e.g. MQAR's "/kv8"); the
        main evaluation (suffix "") is the task itself."""
        return {}

    def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics computed from the evaluation's loss and accuracy (e.g. perplexity, bits)."""
        return {}

    @property
    def class_names(self) -> list[str] | None:
        """Names of the classes of a class head (rows of the confusion matrix)."""
        return getattr(self, "label_names", None)


TRAIN_STREAM, EVAL_STREAM = 1, 2


class SeededTask(Task):
    """A task whose sequences are made from the seed, not read from files (it takes no --data):
    ids 0 .. `vocab` - 1, predicted by a token head."""

    vocab: int

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0) -> None:
        if data is not None:
            raise SeqbenchError(f"task {self.name!r} generates its data from the seed; it takes no --data")
        super().__init__(modality, data, seed)

    @property
    def vocab_size(self) -> int:
        return self.vocab

    @property
    def head(self) -> HeadSpec:
        return HeadSpec(kind="token", n_outputs=self.vocab)


class GeneratedTask(SeededTask):
    """A task whose sequences are generated afresh from a seed: subclasses set `vocab` and
    implement `make`. Training batch `step` and the held-out samples at each length come from
    their own counter-based streams (tasks.counter_random), so they never overlap, are the same on
    every machine and device (a GPU run makes its batches on the GPU, with no host work), and a
    held-out sample does not depend on the evaluation batch size."""

    @abstractmethod
    def make(self, rng: CounterRandom, seq_len: int) -> Batch:
        """`rng.batch_size` sequences of length `seq_len` drawn from `rng`, on `rng.device`."""

    def train_batch(self, step: int, batch_size: int, seq_len: int, device: torch.device | None = None) -> Batch:
        self.check_seq_len(seq_len)
        _reserve(batch_size, seq_len, device)
        key = stream_key(self.seed, TRAIN_STREAM, step)
        return self.make(CounterRandom.for_samples(key, 0, batch_size, device), seq_len)

    def eval_batches(self, seq_len: int, n_samples: int, batch_size: int,
                     device: torch.device | None = None) -> Iterator[Batch]:
        self.check_seq_len(seq_len)
        _reserve(min(batch_size, n_samples), seq_len, device)
        key = stream_key(self.seed, EVAL_STREAM, seq_len)
        for start in range(0, n_samples, batch_size):
            yield self.make(CounterRandom.for_samples(key, start, min(batch_size, n_samples - start), device), seq_len)


def _reserve(batch_size: int, seq_len: int, device: torch.device | None) -> None:
    """Allocate (and free) a whole batch of ids first: a batch that cannot fit fails at once as
    out of memory, before the generator's per-row temporaries (the size of one column) have taken
    gigabytes and the host's OOM killer ends the process without a record."""
    torch.empty((batch_size, seq_len), dtype=torch.long, device=device)


def generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one data stream of a data-backed task: (seed, split id, step) ->
    independent draws (generated tasks use tasks.counter_random instead)."""
    g = torch.Generator()
    mixed = seed
    for part in stream:
        mixed = (mixed * 6364136223846793005 + part * 1442695040888963407 + 1) % (1 << 63)
    g.manual_seed(mixed)
    return g


class MeasuringTask(GeneratedTask):
    """A task that measures a model instead of training it (the runner calls `measure` in place
    of the training loop): subclasses implement `measure(model, config, device, record)`, where
    `record(metrics, tags)` stores results as they come."""

    @abstractmethod
    def measure(self, model, config, device: torch.device, record) -> None:
        """Measure `model` under the resolved run `config` on `device`."""
