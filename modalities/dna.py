"""DNA: single bases as tokens. A C G T -> 0 1 2 3, every other symbol (IUPAC codes, gaps, N) -> N
(4), any case; specials pad, bos, eos (vocab 8). Complement is 3 - id for A/C/G/T, so reverse
complement (the standard augmentation) is a table lookup and a flip.

Sources: FASTA or gzipped FASTA (detected by content, not name) read with Biopython's SeqIO; a
multi-record file (chromosomes) keeps one record per FASTA record so windows do not straddle
records unless asked; a folder of FASTA files labels each file's records with the file's name
(one FASTA per species gives species labels). Non-ACGT symbols are counted in `store.meta["stats"]`.

Windows longer than every record (e.g. > 16.5 kb on a circular mitochondrial genome) are refused
with a clear error rather than wrapped; `straddle=True` concatenates records instead.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from Bio import SeqIO

from seqbench.core.errors import SeqbenchError
from seqbench.modalities.base import TokenStore, label_rule, list_files, source_kind
from seqbench.modalities.cache import StoreWriter, file_fingerprint, load_or_build

BASES = "ACGTN"
N_ID = 4
SPECIALS = {"pad": 5, "bos": 6, "eos": 7}
FASTA_SUFFIXES = tuple(s + gz for s in (".fa", ".fasta", ".fna", ".fas", ".ffn", ".fsa") for gz in ("", ".gz"))
_BAD = 255

# byte -> id: A/C/G/T either case, N for any other letter and the gap/stop symbols - . *
_LUT = np.full(256, _BAD, dtype=np.uint8)
for _c in range(256):
    if chr(_c).isascii() and chr(_c).isalpha() or chr(_c) in "-.*":
        _LUT[_c] = N_ID
for _i, _b in enumerate("ACGT"):
    _LUT[ord(_b)] = _LUT[ord(_b.lower())] = _i
_COMPLEMENT = np.array([3, 2, 1, 0, 4, 5, 6, 7], dtype=np.int64)


class DNAModality:
    """Bases A C G T N (ids 0-4) plus pad/bos/eos (5-7)."""

    def __init__(self, name: str = "dna") -> None:
        self.name = name
        self.vocab_size = len(BASES) + len(SPECIALS)
        self.specials = dict(SPECIALS)

    byte_level = False  # one id per base

    def sample_source(self) -> tuple[Path, dict]:
        """The generated FASTA species (modalities.samples)."""
        from seqbench.modalities.samples import sample_source

        return sample_source("dna"), {}

    # ---- sequence <-> ids --------------------------------------------------------------
    def encode(self, data: str | bytes) -> list[int]:
        """A sequence string to ids; SeqbenchError on a symbol that is no letter nor - . *"""
        return self.encode_array(data).tolist()

    def encode_array(self, data: str | bytes, where: str = "sequence") -> np.ndarray:
        raw = data.encode("latin-1", errors="replace") if isinstance(data, str) else bytes(data)
        ids = _LUT[np.frombuffer(raw, dtype=np.uint8)]
        bad = np.flatnonzero(ids == _BAD)
        if len(bad):
            pos = int(bad[0])
            raise SeqbenchError(
                f"{where}: unexpected symbol {chr(raw[pos])!r} at position {pos:,}; "
                "accepted: letters (A/C/G/T, others read as N) and - . *"
            )
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        """Ids to an upper-case ACGTN string (special ids dropped)."""
        a = np.asarray(ids, dtype=np.int64).ravel()
        return "".join(BASES[i] for i in a[a < len(BASES)])

    def reverse_complement(self, ids):
        """Reverse complement of ids (list, numpy or torch; along the last axis for batches)."""
        return reverse_complement(ids)

    # ---- sources -----------------------------------------------------------------------
    def load(
        self,
        source: str | Path,
        *,
        labels: str | None = "auto",
        cache: str | Path | None = None,
    ) -> TokenStore:
        """Token store of a FASTA file or a folder of FASTA files. `labels`: "auto" (the file
        name for a folder, none for one file), "file", "folder", a regex on the file name, or None."""
        kind = source_kind(source)
        if kind not in ("file", "dir"):
            raise SeqbenchError(
                f"dna reads local FASTA files or folders of them ({', '.join(FASTA_SUFFIXES)}); got {source}"
            )
        path = Path(str(source)).expanduser()
        files = [path] if kind == "file" else list_files(path, FASTA_SUFFIXES)
        if not files:
            raise SeqbenchError(f"no FASTA files ({', '.join(FASTA_SUFFIXES)}) under {path}")
        if labels == "auto":
            labels = "file" if kind == "dir" else None
        rule = label_rule(labels)

        def build(w: StoreWriter) -> None:
            symbols: dict[str, int] = {}
            empty = 0
            for f in files:
                prefix = "" if kind == "file" else f.relative_to(path).as_posix() + ":"
                label = None if rule is None else rule(f)
                for rec_id, ids, raw in self._records(f):
                    w.add(prefix + rec_id, ids, label)
                    empty += len(ids) == 0
                    other = raw[ids == N_ID]
                    if len(other):
                        for sym, count in zip(*np.unique(other, return_counts=True)):
                            key = chr(sym).upper()
                            symbols[key] = symbols.get(key, 0) + int(count)
            if not w.names:
                raise SeqbenchError(f"no FASTA records in {path}; a record starts with a '>name' line")
            w.stats.update(non_acgt=sum(symbols.values()), empty_records=empty)
            if symbols:
                w.stats["non_acgt_symbols"] = dict(sorted(symbols.items()))

        return load_or_build(
            "dna", {"labels": labels}, file_fingerprint(files), build, source=str(path), cache=cache,
            vocab_size=self.vocab_size,
        )

    def _records(self, path: Path):
        """(record id, ids, raw bytes) per record; SeqbenchError naming the file and record."""
        current = None
        try:
            with _open_text(path) as handle:
                for rec in SeqIO.parse(handle, "fasta"):
                    current = rec.id
                    seq = str(rec.seq)
                    raw = np.frombuffer(seq.encode("latin-1", errors="replace"), dtype=np.uint8)
                    ids = self.encode_array(seq, where=f"malformed FASTA {path}, record {rec.id!r}")
                    yield rec.id, ids, raw
        except SeqbenchError:
            raise
        except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:
            at = f", after record {current!r}" if current else ""
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SeqbenchError(f"malformed or truncated FASTA {path}{at} ({detail})") from e


def _open_text(path: Path) -> io.TextIOBase:
    """Text handle on a plain or gzipped file (by magic bytes); universal newlines handle CRLF."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="latin-1", newline=None)


def reverse_complement(ids):
    """Reverse complement of DNA ids: A<->T, C<->G, N and specials unchanged, order reversed."""
    if isinstance(ids, torch.Tensor):
        return torch.as_tensor(_COMPLEMENT, device=ids.device)[ids.long()].flip(-1).to(ids.dtype)
    a = np.asarray(ids)
    out = _COMPLEMENT[a.astype(np.int64)][..., ::-1].astype(a.dtype)
    return out.tolist() if isinstance(ids, list) else out
