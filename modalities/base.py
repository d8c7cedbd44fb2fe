"""The Modality protocol and the TokenStore it loads: how one kind of data becomes integer tokens.

A modality converts raw data to ids (`encode`) and back (`decode`), and `load(source)` turns a whole
source (a file, a folder, a dataset) into a `TokenStore`: one flat array of ids (usually a
memory-mapped cache file, see `seqbench.modalities.cache`) cut into records (documents, audio clips, FASTA
records), each optionally labelled for classification. Windows are views into that array, so a
window of a million tokens costs no copy until a task turns it into a tensor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from seqbench.core.errors import SeqbenchError

Generatorish = torch.Generator | np.random.Generator | int | None
Weighting = Literal["tokens", "record", "label"]


@runtime_checkable
class Modality(Protocol):
    """A kind of data (text bytes, mu-law audio, DNA bases, or plain synthetic tokens).

    `vocab_size` counts every id the embedding must hold, specials included; `specials` names
    the special ids (e.g. {"pad": 0}). `encode` maps raw data to ids, `decode` maps ids back.
    Modalities backed by real data also have `load(source, **options) -> TokenStore`.
    """

    name: str
    vocab_size: int
    specials: dict[str, int]

    def encode(self, data) -> list[int]: ...

    def decode(self, ids) -> object: ...


@runtime_checkable
class LoadableModality(Modality, Protocol):
    """A modality that reads real sources (text, audio, dna, or a plugin's). `byte_level` says
    whether one id is one byte of the data (losses are then reported in bits per byte);
    `sample_source()` gives the source and load options of its small sample data, which tasks
    use when no --data is given."""

    byte_level: bool

    def load(self, source: str | Path, **options) -> "TokenStore": ...

    def sample_source(self) -> tuple[str | Path, dict]: ...


@dataclass(frozen=True)
class Window:
    """One window: `tokens` (a view into the store when it lies in one record), the record it
    starts in, its start inside that record, and the record's label id (None when unlabelled)."""

    tokens: np.ndarray
    record: int
    start: int
    label: int | None


@dataclass
class TokenStore:
    """Token ids of a source: a flat array cut into records [starts[i], ends[i]).

    `labels[i]` is the class id of record i (an index into `label_names`), or `labels` is None.
    `meta` carries what the adapter reports (source, settings, counts such as N bases, cache entry).
    A store made by `select` or `portion` shares the array and keeps a subset of records/positions.
    """

    tokens: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    names: list[str]
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    meta: dict = field(default_factory=dict)
    _valid: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.ends = np.asarray(self.ends, dtype=np.int64)
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.starts) == len(self.ends) == len(self.names)):
            raise ValueError("starts, ends and names must have one entry per record")
        if self.labels is not None and len(self.labels) != len(self.names):
            raise ValueError("labels must have one entry per record")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_records(
        cls,
        records: Sequence[np.ndarray | Sequence[int]],
        names: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        label_names: Sequence[str] | None = None,
        dtype: np.dtype | type = np.uint8,
        meta: dict | None = None,
    ) -> "TokenStore":
        """An in-memory store from a list of id sequences (tests, small generated data)."""
        arrays = [np.asarray(r, dtype=dtype) for r in records]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        ends = np.cumsum(lengths)
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
        return cls(
            tokens=tokens,
            starts=ends - lengths,
            ends=ends,
            names=list(names) if names is not None else [str(i) for i in range(len(arrays))],
            labels=None if labels is None else np.asarray(labels),
            label_names=None if label_names is None else list(label_names),
            meta=dict(meta or {}),
        )

    # ---- sizes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of tokens in the store's records."""
        return int((self.ends - self.starts).sum())

    @property
    def n_records(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per record."""
        return self.ends - self.starts

    @property
    def n_labels(self) -> int:
        return len(self.label_names) if self.label_names else 0

    def record(self, index: int) -> np.ndarray:
        """All tokens of record `index` (a view)."""
        return self.tokens[self.starts[index] : self.ends[index]]

    def label_name(self, record: int) -> str | None:
        if self.labels is None or self.label_names is None:
            return None
        return self.label_names[int(self.labels[record])]

    def describe(self) -> str:
        """One line for logs: tokens, records, labels and what the adapter counted."""
        parts = [f"{len(self):,} tokens", f"{self.n_records:,} records"]
        if self.label_names:
            parts.append(f"{len(self.label_names)} labels")
        for key, value in self.meta.get("stats", {}).items():
            parts.append(f"{key}={value:,}" if isinstance(value, int) else f"{key}={value}")
        return f"{self.meta.get('source', 'store')}: " + ", ".join(parts)

    # ---- windows -------------------------------------------------------------------------
    def window(self, start: int, length: int, record: int | None = None) -> np.ndarray:
        """`length` tokens from `start`: inside record `record` when given, else at `start` of
        the flat array (which may cross records). Always a zero-copy view."""
        if length < 0 or start < 0:
            raise SeqbenchError(f"window start and length must be >= 0, got start={start}, length={length}")
        if record is None:
            lo, hi = 0, len(self.tokens)
        else:
            lo, hi = int(self.starts[record]), int(self.ends[record])
        if lo + start + length > hi:
            where = "the store" if record is None else f"record {self.names[record]!r}"
            raise SeqbenchError(f"window [{start}, {start + length}) runs past the end of {where} ({hi - lo:,} tokens)")
        return self.tokens[lo + start : lo + start + length]

    def eligible(self, length: int) -> np.ndarray:
        """Indices of the records that hold a whole window of `length` tokens."""
        return np.flatnonzero(self.lengths >= length)

    def random_window(
        self,
        length: int,
        generator: Generatorish = None,
        *,
        straddle: bool = False,
        by: Weighting = "tokens",
    ) -> Window:
        """A random window of `length` tokens.

        By default a window lies inside one record and every such window is equally likely
        (`by="tokens"`); `by="record"` draws the record uniformly first, `by="label"` the label,
        then a record of that label, then the position (balanced classes). `straddle=True`
        treats the records as one concatenated sequence (windows may cross boundaries; a copy
        only when the records touched are not adjacent in the array).
        """
        if length < 1:
            raise SeqbenchError(f"window length must be >= 1, got {length}")
        draw = _drawer(generator)
        if straddle:
            return self._straddling_window(length, draw)
        record = self._pick_record(length, draw, by)
        start = draw(int(self.lengths[record]) - length + 1)
        lo = int(self.starts[record]) + start
        return Window(self.tokens[lo : lo + length], record, start, self._label(record))

    def batch(
        self,
        batch_size: int,
        length: int,
        generator: Generatorish = None,
        *,
        straddle: bool = False,
        by: Weighting = "tokens",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`batch_size` random windows as an int64 tensor (batch, length), and their labels
        (batch,) int64 or None when the store is unlabelled."""
        if not isinstance(generator, (torch.Generator, np.random.Generator)):
            generator = _as_generator(generator)
        windows = [self.random_window(length, generator, straddle=straddle, by=by) for _ in range(batch_size)]
        out = np.empty((batch_size, length), dtype=np.int64)
        for i, w in enumerate(windows):
            out[i] = w.tokens  # the one copy: uint8 view -> int64 row
        inputs = torch.from_numpy(out)
        if self.labels is None:
            return inputs, None
        return inputs, torch.tensor([w.label for w in windows], dtype=torch.int64)

    # ---- subsets -------------------------------------------------------------------------
    def select(self, records: Sequence[int] | np.ndarray) -> "TokenStore":
        """A store with only `records` (e.g. a split by file name); shares the token array."""
        idx = np.asarray(records, dtype=np.int64)
        return TokenStore(
            tokens=self.tokens,
            starts=self.starts[idx],
            ends=self.ends[idx],
            names=[self.names[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            label_names=self.label_names,
            meta=dict(self.meta),
        )

    def where(self, pattern: str) -> "TokenStore":
        """The records whose name matches the regular expression `pattern` (re.search)."""
        rx = re.compile(pattern)
        return self.select([i for i, n in enumerate(self.names) if rx.search(n)])

    def portion(self, begin: float, end: float) -> "TokenStore":
        """Keep the fraction [begin, end) of every record (e.g. 0.9-1.0 as a held-out split of
        long single-record sources such as genomes); shares the token array."""
        if not 0.0 <= begin <= end <= 1.0:
            raise SeqbenchError(f"portion needs 0 <= begin <= end <= 1, got {begin}, {end}")
        lengths = self.lengths
        lo = self.starts + np.floor(lengths * begin).astype(np.int64)
        hi = self.starts + np.floor(lengths * end).astype(np.int64)
        return TokenStore(self.tokens, lo, hi, list(self.names), self.labels, self.label_names, dict(self.meta))

    # ---- internals -----------------------------------------------------------------------
    def _label(self, record: int) -> int | None:
        return None if self.labels is None else int(self.labels[record])

    def _too_long(self, length: int) -> SeqbenchError:
        longest = int(self.lengths.max()) if self.n_records else 0
        return SeqbenchError(
            f"window length {length:,} exceeds the longest record ({longest:,} tokens) of "
            f"{self.meta.get('source', 'this store')}; use a shorter length or allow windows across records (straddle)"
        )

    def _pick_record(self, length: int, draw, by: Weighting) -> int:
        ok = self.eligible(length)
        if len(ok) == 0:
            raise self._too_long(length)
        if by == "tokens":
            if length not in self._valid:  # cumulative count of valid starts, per length asked
                self._valid[length] = np.cumsum(self.lengths[ok] - length + 1)
            cum = self._valid[length]
            return int(ok[np.searchsorted(cum, draw(int(cum[-1])), side="right")])
        if by == "record":
            return int(ok[draw(len(ok))])
        if by == "label":
            if self.labels is None:
                raise SeqbenchError("by='label' needs a labelled store (e.g. one file per class)")
            present = np.unique(self.labels)
            have = np.unique(self.labels[ok])
            missing = sorted(set(present.tolist()) - set(have.tolist()))
            if missing:
                names = [self.label_names[m] if self.label_names else str(m) for m in missing]
                raise SeqbenchError(
                    f"no record of label(s) {', '.join(names)} holds a window of {length:,} tokens; "
                    "use a shorter length"
                )
            label = have[draw(len(have))]
            members = ok[self.labels[ok] == label]
            return int(members[draw(len(members))])
        raise SeqbenchError(f"unknown window weighting {by!r}; accepted: tokens, record, label")

    def _straddling_window(self, length: int, draw) -> Window:
        total = len(self)
        if length > total:
            where = self.meta.get("source", "this store")
            raise SeqbenchError(f"window length {length:,} exceeds the {total:,} tokens of {where}")
        pos = draw(total - length + 1)
        cum = np.cumsum(self.lengths)
        record = int(np.searchsorted(cum, pos, side="right"))
        start = pos - (int(cum[record - 1]) if record else 0)
        pieces, r, s, need = [], record, start, length
        while need:
            lo = int(self.starts[r]) + s
            take = min(need, int(self.ends[r]) - lo)
            pieces.append((lo, lo + take))
            need -= take
            r, s = r + 1, 0
        if all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1)):
            tokens = self.tokens[pieces[0][0] : pieces[-1][1]]
        else:
            tokens = np.concatenate([self.tokens[a:b] for a, b in pieces])
        return Window(tokens, record, start, self._label(record))


def _as_generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def _drawer(generator: Generatorish):
    """A function high -> uniform int in [0, high) from a torch or numpy generator (or a seed)."""
    if isinstance(generator, np.random.Generator):
        return lambda high: int(generator.integers(high))
    g = generator if isinstance(generator, torch.Generator) else _as_generator(generator)
    return lambda high: int(torch.randint(high, (1,), generator=g).item())


# ---- helpers the adapters share ------------------------------------------------------------
HUB_PREFIX = "hf:"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def source_kind(source: str | Path) -> Literal["file", "dir", "saved-dataset", "hub"]:
    """Classify a source: a local file, a local folder, a folder written by `datasets`'
    save_to_disk, or a Hugging Face hub dataset name (`hf:owner/name`, or `owner/name` when no
    such local path exists). Raises SeqbenchError for a missing local path."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return "hub"
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "saved-dataset"
        return "dir"
    if path.is_file():
        return "file"
    if _HUB_NAME.match(text) and "." not in text.rsplit("/", 1)[1]:
        return "hub"
    raise SeqbenchError(f"no such file or folder: {text}; pass a local path (or a hub dataset as hf:owner/name)")


def hub_name(source: str | Path) -> str:
    text = str(source)
    return text[len(HUB_PREFIX) :] if text.startswith(HUB_PREFIX) else text


def label_rule(rule: str | None) -> "LabelRule | None":
    """Parse a label rule: None (no labels), "folder" (the parent folder's name), "file" (the
    file's stem) or a regular expression applied to the file name whose first group (or the
    group named `label`) is the label, e.g. r"^(\\d)_" for `<digit>_<speaker>_<n>.wav`."""
    return None if rule is None else LabelRule(rule)


class LabelRule:
    """Label of a file from its path (see `label_rule`)."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.regex = None
        if rule not in ("folder", "file"):
            try:
                self.regex = re.compile(rule)
            except re.error as e:
                raise SeqbenchError(
                    f"bad label pattern {rule!r} ({e}); accepted: 'folder', 'file' or a regex with one group"
                ) from e
            if self.regex.groups < 1:
                raise SeqbenchError(
                    f"label pattern {rule!r} has no group; put the label in parentheses, e.g. r'^(\\d)_'"
                )

    def __call__(self, path: Path) -> str:
        if self.rule == "folder":
            return path.parent.name
        if self.rule == "file":
            return path.name.split(".")[0]
        m = self.regex.search(path.name)
        if not m:
            raise SeqbenchError(f"file name {path.name!r} does not match the label pattern {self.rule!r}")
        return m.group("label") if "label" in self.regex.groupindex else m.group(1)


def label_ids(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Map label strings to ids 0..k-1 in natural sort order (so "2" < "10")."""
    names = sorted(set(labels), key=_natural_key)
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[x] for x in labels], dtype=np.int64), names


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files under `folder` (recursively, hidden ones skipped) whose name ends with one of
    `suffixes` (case-insensitive), sorted by relative path."""
    want = tuple(s.lower() for s in suffixes)
    found: list[tuple[str, str]] = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(top, folder)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(want):
                found.append((name if rel == "." else f"{rel}/{name}", os.path.join(top, name)))
    found.sort()
    return [Path(full) for _, full in found]
