"""Downloading one file safely: streamed to a temporary name beside its destination, checked
against the expected size and SHA-256, then renamed into place, so a dropped connection, a wrong
checksum or a Ctrl-C leaves nothing half-written under the destination's name.

Progress goes to stderr: a live bar on a terminal, a plain line every $SEQBENCH_PROGRESS_SECONDS
(default 10) otherwise. Failures are `SeqbenchError`s of one line; `Unreachable` marks the ones
where the host could not be reached at all (no network, DNS failure, connection refused), so the
caller can say what to fetch by hand.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from seqbench.core.errors import SeqbenchError

CHUNK = 1 << 16
TIMEOUT_S = 30.0
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN,
                       errno.ENETDOWN, errno.EADDRNOTAVAIL}


class Unreachable(SeqbenchError):
    """The host of a URL could not be reached (no connection was made)."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read back from disk (what is checked is what was written)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temp_path(dest: Path) -> Path:
    """A fresh hidden temporary name beside `dest` (same folder, so the final rename is atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{dest.name}-", dir=dest.parent)
    os.close(fd)
    return Path(name)


def download(url: str, dest: Path, size: int | None = None, sha256: str | None = None,
             label: str | None = None) -> Path:
    """Fetch `url` into `dest`, verified against `size` and `sha256` when given; returns `dest`.
    Nothing is left at `dest` (or beside it) unless the whole file arrived and matched. `label`
    names the file in progress lines (default: the URL's file name)."""
    label = label or Path(urlsplit(url).path).name or url
    tmp = temp_path(dest)
    start = time.monotonic()
    try:
        received = _fetch(url, tmp, size, label)
        if size is not None and received != size:
            raise SeqbenchError(f"{url} sent {received:,} bytes, expected {size:,}: not the expected file; "
                                f"nothing was kept")
        if sha256 is not None:
            actual = sha256_of(tmp)
            if actual != sha256:
                raise SeqbenchError(f"{url} does not match its checksum (SHA-256 {actual[:16]}..., expected "
                                    f"{sha256[:16]}...); nothing was kept")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    checked = ", SHA-256 checked" if sha256 else ""
    say(f"{label}: {_amount(received)} from {urlsplit(url).netloc or url} in {time.monotonic() - start:.1f} s{checked}")
    return dest


def _fetch(url: str, tmp: Path, size: int | None, label: str) -> int:
    """Stream `url` into `tmp` with progress; the number of bytes received."""
    request = urllib.request.Request(url, headers={"User-Agent": "seqbench"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise SeqbenchError(f"{url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if _is_unreachable(reason):
            raise Unreachable(f"cannot reach {urlsplit(url).netloc or url} ({_describe(reason)})") from None
        raise SeqbenchError(f"cannot download {url} ({_describe(reason)})") from None
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else size
        progress = Progress(label, total)
        try:
            with open(tmp, "wb") as f:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    try:
                        f.write(block)
                    except OSError as e:
                        raise SeqbenchError(f"cannot write {tmp.parent} ({_describe(e)})") from None
                    received += len(block)
                    if size is not None and received > size:  # an error page or another file: stop early
                        raise SeqbenchError(f"{url} sends more than the expected {size:,} bytes: not the "
                                            f"expected file; nothing was kept")
                    progress.update(received)
        except (http.client.HTTPException, OSError) as e:
            raise SeqbenchError(f"the connection to {urlsplit(url).netloc} dropped after {received:,} of "
                                f"{f'{total:,}' if total else 'an unknown number of'} bytes of {url} "
                                f"({_describe(e)}); nothing was kept, try again") from None
        finally:
            progress.stop()
    if length and length.isdigit() and received != int(length):
        raise SeqbenchError(f"the connection to {urlsplit(url).netloc} dropped after {received:,} of "
                            f"{int(length):,} bytes of {url}; nothing was kept, try again")
    return received


def _is_unreachable(reason: object) -> bool:
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError, socket.timeout)):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


def _describe(error: object) -> str:
    if isinstance(error, socket.gaierror):
        return f"DNS: {error.strerror or error}"
    if isinstance(error, BaseException):
        text = getattr(error, "strerror", None) or str(error) or type(error).__name__
        return text.splitlines()[0] if text else type(error).__name__
    return str(error)


def _amount(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def say(line: str) -> None:
    """One progress line on stderr (stdout stays for what a command prints, such as a path)."""
    print(line, file=sys.stderr, flush=True)


class Progress:
    """Progress of one download on stderr: a rich bar on a terminal, otherwise a plain line every
    `every` seconds (none for a quick one, so a failure stays one line)."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.start = self.last = time.monotonic()
        self.every = max(0.0, float(os.environ.get("SEQBENCH_PROGRESS_SECONDS", "10")))
        self.bar = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(label, total=total)
            self.bar.start()

    def update(self, received: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=received)
            return
        now = time.monotonic()
        if now - self.last >= self.every and self.every > 0:
            self.last = now
            done = f"{100 * received / self.total:.0f}% ({_amount(received)} of {_amount(self.total)})" \
                if self.total else _amount(received)
            say(f"{self.label}: {done} at {_amount(int(received / max(now - self.start, 1e-9)))}/s")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
