"""Text: UTF-8 bytes as tokens by default (works offline, no vocabulary file), or the ids of a
Hugging Face `tokenizers` JSON file when one is given.

Sources: a text file (plain or .gz), a folder of text files (one record per file; labels from
folder names on request), a folder saved by `datasets`' save_to_disk, or a hub dataset
(`Salesforce/wikitext` with config `wikitext-103-raw-v1`, split and column) through `datasets`.
"""

from __future__ import annotations

import gzip
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from seqbench.core.errors import SeqbenchError
from seqbench.modalities.base import TokenStore, hub_name, label_rule, list_files, source_kind
from seqbench.modalities.cache import StoreWriter, file_fingerprint, load_or_build

TEXT_SUFFIXES = (".txt", ".txt.gz", ".md", ".text", ".raw", ".tokens")
CHUNK_BYTES = 1 << 24
BYTE_SPECIALS = {"pad": 256, "bos": 257, "eos": 258}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


class TextModality:
    """Bytes 0..255 plus pad/bos/eos (vocab 259), or a `tokenizers` JSON file's vocabulary."""

    def __init__(self, tokenizer: str | Path | None = None, name: str = "text") -> None:
        self.name = name
        self.tokenizer_path = None if tokenizer is None else Path(tokenizer).expanduser()
        self._tok = None
        if self.tokenizer_path is None:
            self.vocab_size = 256 + len(BYTE_SPECIALS)
            self.specials = dict(BYTE_SPECIALS)
            self.dtype = np.dtype(np.uint8)
        else:
            self._tok = _open_tokenizer(self.tokenizer_path)
            self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
            self.specials = {
                t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special
            }
            self.dtype = np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

    @property
    def byte_level(self) -> bool:
        """One id per byte unless a tokenizer file is used."""
        return self._tok is None

    def sample_source(self) -> tuple[Path, dict]:
        """The generated sample text (modalities.samples)."""
        from seqbench.modalities.samples import sample_source

        return sample_source("text"), {}

    # ---- ids <-> text ------------------------------------------------------------------
    def encode(self, data: str | bytes) -> list[int]:
        """Text (str or UTF-8 bytes) to ids."""
        return self.encode_array(data).tolist()

    def encode_array(self, data: str | bytes) -> np.ndarray:
        """Text to a compact numpy id array (uint8 for bytes)."""
        if self._tok is None:
            raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            return np.frombuffer(raw, dtype=np.uint8).copy()
        text = data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=self.dtype)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Ids back to text; special ids are dropped, invalid UTF-8 becomes U+FFFD."""
        ids = np.asarray(ids).astype(np.int64).ravel()
        if self._tok is None:
            return ids[ids < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        return self._tok.decode(ids.tolist(), skip_special_tokens=True)

    # ---- sources -----------------------------------------------------------------------
    def settings(self) -> dict:
        tok = None
        if self.tokenizer_path is not None:
            tok = file_fingerprint([self.tokenizer_path])[0]
        return {"tokenizer": tok}

    def load(
        self,
        source: str | Path,
        *,
        config: str | None = None,
        split: str = "train",
        column: str = "text",
        labels: str | None = None,
        cache: str | Path | None = None,
    ) -> TokenStore:
        """Token store of a text source (see the module doc). For `datasets` sources the rows
        of `column` are joined with newlines into one record; `labels="folder"` labels the
        files of a folder by their parent folder's name."""
        kind = source_kind(source)
        settings = {**self.settings(), "labels": labels}
        if kind in ("hub", "saved-dataset"):
            ds, key = open_dataset(source, kind, config, split, [column])
            return load_or_build(
                "text", settings, key, lambda w: self._build_dataset(w, ds, column, str(source)),
                dtype=self.dtype, source=f"{source}[{split}].{column}", cache=cache, vocab_size=self.vocab_size,
            )
        path = Path(str(source)).expanduser()
        files = [path] if kind == "file" else list_files(path, TEXT_SUFFIXES)
        if not files:
            raise SeqbenchError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {path}")
        rule = label_rule(labels)
        if rule is not None and kind == "file":
            raise SeqbenchError("text labels need a folder of files (one label per file or subfolder)")

        def build(w: StoreWriter) -> None:
            for f in files:
                name = f.name if kind == "file" else f.relative_to(path).as_posix()
                w.begin(name, None if rule is None else rule(f))
                for chunk in _read_chunks(f):
                    w.write(self.encode_array(chunk) if self._tok is not None else np.frombuffer(chunk, np.uint8))
                w.end()

        return load_or_build(
            "text", settings, file_fingerprint(files), build, dtype=self.dtype, source=str(path), cache=cache,
            vocab_size=self.vocab_size,
        )

    def _build_dataset(self, w: StoreWriter, ds, column: str, source: str) -> None:
        w.begin(source)
        first = True
        for batch in ds.iter(batch_size=1000):
            for row in batch[column]:
                if row is None:
                    continue
                text = row if first else "\n" + row
                first = False
                w.write(self.encode_array(text))
        w.end()


def _read_chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes in chunks of ~16 MiB, cut after a newline so a tokenizer never sees a
    word split in two (bytes mode does not care)."""
    opener = gzip.open if _is_gzip(path) else open
    carry = b""
    try:
        with opener(path, "rb") as f:
            while True:
                block = f.read(CHUNK_BYTES)
                if not block:
                    break
                block = carry + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    carry = block
                    continue
                carry = block[cut:]
                yield block[:cut]
    except (OSError, EOFError) as e:
        raise SeqbenchError(f"text file {path} is unreadable or a truncated .gz ({e})") from e
    if carry:
        yield carry


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_tokenizer(path: Path):
    if not path.is_file():
        raise SeqbenchError(
            f"tokenizer file not found: {path}; pass a Hugging Face tokenizers JSON file (tokenizer.json)"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise SeqbenchError(
            "a tokenizer file needs the 'tokenizers' package (pip install tokenizers); bytes need nothing"
        ) from e
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception on bad JSON
        raise SeqbenchError(f"tokenizer file {path} is not a tokenizers JSON file ({str(e).splitlines()[0]})") from e


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection (checked before `datasets`,
    which otherwise retries for ~25 s without network)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def open_dataset(
    source: str | Path, kind: str, config: str | None, split: str, columns: list[str | None]
) -> tuple[object, dict]:
    """A `datasets.Dataset` (hub or saved folder) checked to have `columns`, and its cache key."""
    ds = _open_dataset(source, kind, config, split)
    for col in columns:
        if col is not None and col not in ds.column_names:
            raise SeqbenchError(f"dataset {source} has no column {col!r}; columns: {', '.join(ds.column_names)}")
    key = {"dataset": str(source), "config": config, "split": split, "columns": columns, "fingerprint": ds._fingerprint}
    return ds, key


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0]


def _open_dataset(source: str | Path, kind: str, config: str | None, split: str):
    """A `datasets.Dataset` from a hub name or a save_to_disk folder; SeqbenchError when the hub
    cannot be reached (telling the user to pass a local path instead)."""
    import datasets

    if kind == "saved-dataset":
        try:
            ds = datasets.load_from_disk(str(source))
        except Exception as e:
            raise SeqbenchError(f"cannot read the saved dataset {source} ({type(e).__name__}: {_first_line(e)})") from e
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise SeqbenchError(f"saved dataset {source} has no split {split!r}; splits: {', '.join(ds)}")
            ds = ds[split]
        return ds
    name = hub_name(source)
    offline = any(os.environ.get(v, "0").lower() not in ("0", "", "false") for v in _OFFLINE_VARS)
    if not offline and not hub_reachable():
        raise SeqbenchError(
            f"cannot reach the Hugging Face hub to load dataset {name!r} (no network?); "
            "pass a local file or folder instead (or set HF_HUB_OFFLINE=1 to use a copy already in the HF cache)"
        )
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:
        raise SeqbenchError(
            f"could not load hub dataset {name!r} (config {config!r}, split {split!r}): "
            f"{type(e).__name__}: {_first_line(e)}; "
            "check the name/config/split, or pass a local file or folder instead"
        ) from e
