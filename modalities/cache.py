"""The token cache: a source is converted once into a memory-mapped array, later loads map it.

An entry is a folder `<cache>/<adapter>-<key>/` holding `tokens.bin` (the raw ids, uint8 for
bytes, mu-law audio and bases) and `meta.json` (records, labels, counts). The key hashes the
adapter, its settings and every input file's path, size and mtime, so editing a file or changing
a setting makes a new entry. A conversion writes into a temporary folder that is renamed into
place only when complete: an interrupted or failed conversion leaves no entry behind. The meta
records a checksum of `tokens.bin`; the first time a process maps an entry it checks it (the whole
file up to 1 GiB, 64 spread-out blocks beyond), and a damaged entry is removed and rebuilt. The meta
also records the largest id; an entry holding ids beyond the modality's vocabulary (written by
another version of a modality, say) is rebuilt too, and a conversion that itself produces such ids
is one line, so no model ever indexes its embedding out of range.

The cache lives in `$SEQBENCH_CACHE`, else `~/.cache/seqbench`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from seqbench.core.errors import SeqbenchError
from seqbench.modalities.base import TokenStore

FORMAT_VERSION = 2  # 2: meta holds the checksum of tokens.bin
FULL_CHECK_BYTES = 1 << 30  # files up to this size are checked whole, larger ones by sampled blocks
_SAMPLE_BLOCKS, _BLOCK = 64, 1 << 20
_verified: set[str] = set()  # entries this process has checked
STALE_TMP_SECONDS = 24 * 3600


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache folder: `override`, else $SEQBENCH_CACHE, else ~/.cache/seqbench."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("SEQBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seqbench"


def file_fingerprint(paths: Iterable[Path]) -> list[list]:
    """[resolved path, size, mtime in ns] of each file: what the cache key depends on."""
    out = []
    resolved: dict[str, str] = {}
    for p in paths:
        head, name = os.path.split(os.fspath(p))
        if head not in resolved:
            resolved[head] = os.path.realpath(head or ".")
        full = os.path.join(resolved[head], name)
        st = os.stat(full)
        out.append([full, st.st_size, st.st_mtime_ns])
    return out


def cache_key(adapter: str, settings: dict, sources: object) -> str:
    """A stable hash of what determines an entry's content."""
    blob = json.dumps(
        {"format": FORMAT_VERSION, "adapter": adapter, "settings": settings, "sources": sources},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class StoreWriter:
    """Streams records into `tokens.bin` of an entry under construction."""

    def __init__(self, folder: Path, dtype: np.dtype | type) -> None:
        self.dtype = np.dtype(dtype)
        self._file = open(folder / "tokens.bin", "wb")
        self.n_tokens = 0
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.names: list[str] = []
        self.labels: list[str | None] = []
        self.stats: dict = {}
        self.max_id = -1  # the largest id written (-1: none yet)
        self._open: int | None = None

    def begin(self, name: str, label: str | None = None) -> None:
        """Start a record; its tokens follow through `write`."""
        if self._open is not None:
            self.end()
        self._open = self.n_tokens
        self.names.append(name)
        self.labels.append(label)

    def write(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        self._file.write(ids.tobytes())
        self.n_tokens += len(ids)
        if len(ids):
            self.max_id = max(self.max_id, int(ids.max()))

    def end(self) -> None:
        if self._open is not None:
            self.starts.append(self._open)
            self.ends.append(self.n_tokens)
            self._open = None

    def add(self, name: str, ids: np.ndarray, label: str | None = None) -> None:
        """A whole record at once."""
        self.begin(name, label)
        self.write(ids)
        self.end()

    def close(self) -> None:
        self.end()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def load_or_build(
    adapter: str,
    settings: dict,
    sources: object,
    build: Callable[[StoreWriter], None],
    *,
    dtype: np.dtype | type = np.uint8,
    source: str = "",
    cache: str | Path | None = None,
    vocab_size: int | None = None,
) -> TokenStore:
    """The store for (adapter, settings, sources): mapped from the cache when present, else
    built by `build(writer)` into a temporary folder that is renamed into place when complete.

    `sources` is anything JSON-able that changes when the input changes (use `file_fingerprint`).
    `build` raises SeqbenchError for a bad input; nothing is then left in the cache. With
    `vocab_size` (the modality's), a cached entry holding a larger id is rebuilt, and a build
    that writes one raises SeqbenchError (nothing cached).
    """
    root = cache_dir(cache)
    key = cache_key(adapter, settings, sources)
    entry = root / f"{adapter}-{key}"
    store = _open_entry(entry, vocab_size)
    if store is not None:
        return store
    root.mkdir(parents=True, exist_ok=True)
    _sweep_stale(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{adapter}-{key}-", dir=root))
    try:
        writer = StoreWriter(tmp, dtype)
        started = time.perf_counter()
        try:
            build(writer)
        finally:
            writer.close()
        if vocab_size is not None and writer.max_id >= vocab_size:
            raise SeqbenchError(f"{source or adapter}: the {adapter} conversion wrote token id {writer.max_id}, "
                                f"outside the modality's ids 0..{vocab_size - 1}; nothing was cached")
        labels, label_names = _label_ids(writer.labels)
        meta = {
            "format": FORMAT_VERSION,
            "adapter": adapter,
            "settings": settings,
            "source": source,
            "dtype": writer.dtype.str,
            "n_tokens": writer.n_tokens,
            "starts": writer.starts,
            "ends": writer.ends,
            "names": writer.names,
            "labels": labels,
            "label_names": label_names,
            "stats": writer.stats,
            "max_id": writer.max_id,
            "checksum": file_checksum(tmp / "tokens.bin"),  # just written: read back from the page cache
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f)
        try:
            os.replace(tmp, entry)
            _verified.add(str(entry))  # its checksum was just computed
        except OSError:
            # Another process finished the same entry first: use theirs.
            if _open_entry(entry, vocab_size) is None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    store = _open_entry(entry, vocab_size)
    if store is None:
        raise RuntimeError(f"cache entry {entry} unreadable right after it was written")
    store.meta["first_load"] = True
    return store


def _label_ids(labels: Sequence[str | None]) -> tuple[list[int] | None, list[str] | None]:
    if not labels or all(x is None for x in labels):
        return None, None
    from seqbench.modalities.base import label_ids

    ids, names = label_ids([x if x is not None else "" for x in labels])
    return ids.tolist(), names


def _open_entry(entry: Path, vocab_size: int | None = None) -> TokenStore | None:
    """Map a complete entry, or None when it is missing, damaged or holds ids of `vocab_size` or
    more (then it is removed, to be rebuilt)."""
    meta_path = entry / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        n = int(meta["n_tokens"])
        data = entry / "tokens.bin"
        if data.stat().st_size != n * dtype.itemsize or meta.get("format") != FORMAT_VERSION:
            raise ValueError("size mismatch")
        if str(entry) not in _verified:
            if meta["checksum"] != file_checksum(data):
                raise ValueError("checksum mismatch")
            _verified.add(str(entry))
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(entry, ignore_errors=True)
        return None
    tokens = np.memmap(data, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)
    if vocab_size is not None:
        if not isinstance(meta.get("max_id"), int):  # an entry written before meta kept it: once
            meta["max_id"] = int(tokens.max()) if n else -1
            _rewrite_meta(meta_path, meta)
        if meta["max_id"] >= vocab_size:
            del tokens
            shutil.rmtree(entry, ignore_errors=True)
            return None
    labels = meta.pop("labels")
    return TokenStore(
        tokens=tokens,
        starts=np.asarray(meta.pop("starts"), dtype=np.int64),
        ends=np.asarray(meta.pop("ends"), dtype=np.int64),
        names=meta.pop("names"),
        labels=None if labels is None else np.asarray(labels, dtype=np.int64),
        label_names=meta.pop("label_names"),
        meta={**meta, "cache_entry": str(entry), "first_load": False},
    )


def _rewrite_meta(meta_path: Path, meta: dict) -> None:
    """Replace an entry's meta.json whole (temporary name, then rename); a read-only cache keeps the old one."""
    tmp = meta_path.with_name(f".meta-{os.getpid()}.json.tmp")
    try:
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)
    except OSError:
        tmp.unlink(missing_ok=True)


def file_checksum(path: Path) -> str:
    """blake2b of a token file, whole up to FULL_CHECK_BYTES; above that 'sampled:' + the hash of
    64 blocks spread over the file (cheap enough to check on every first use)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= FULL_CHECK_BYTES:
            for chunk in iter(lambda: f.read(8 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest()
        for i in range(_SAMPLE_BLOCKS):
            f.seek(max(0, size - _BLOCK) * i // max(1, _SAMPLE_BLOCKS - 1))
            digest.update(f.read(_BLOCK))
    return "sampled:" + digest.hexdigest()


def _sweep_stale(root: Path) -> None:
    """Remove temporary folders left by conversions that were killed long ago."""
    now = time.time()
    for p in root.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def entries(cache: str | Path | None = None) -> list[Path]:
    """The complete entries in the cache (for inspection and cleanup)."""
    root = cache_dir(cache)
    return sorted(p for p in root.glob("*-*") if (p / "meta.json").exists()) if root.exists() else []
