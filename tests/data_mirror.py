"""A loopback HTTP server standing in for the data sets' public sources: it serves the shared data
folder's files (never copied into the project) at the paths the catalog's mirror layout asks for.

The shared folder is found through $SEQBENCH_SHARED_DATA or `<repo>/../shared/data`.
$SEQBENCH_DATA_MIRROR (catalog.MIRROR_ENV) points the downloads at the server.
"""

from __future__ import annotations

import http.server
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED = Path(os.environ.get("SEQBENCH_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SPOKEN = SHARED / "audio/spoken-digits"
# Each catalog file and the shared file with the same bytes.
SHARED_FILE = {
    ("tinyshakespeare", "tinyshakespeare.txt"): "text/tinyshakespeare.txt",
    ("ecoli-k12", "ecoli-k12-mg1655.fna.gz"): "dna/bacteria/ecoli-k12-mg1655.fna.gz",
    **{("great-apes-mtdna", f"{s}.fasta"): f"dna/great-ape-mtdna/{s}.fasta"
       for s in ("human", "chimpanzee", "bonobo", "gorilla", "orangutan")},
}
FSDD_ARCHIVE = "free-spoken-digit-dataset-1.0.10.tar.gz"


class Mirror(http.server.ThreadingHTTPServer):
    """Serves `files` ({"/name/file": bytes}); a path in `truncate` gets its full Content-Length
    but only half its bytes before the connection closes."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.server.truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def fsdd_archive() -> bytes:
    """The FSDD tag's archive as GitHub lays it out, built from the shared recordings, plus a
    recording of the sixth speaker and a non-recording file that the catalog leaves out."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        top = "free-spoken-digit-dataset-1.0.10"
        for wav in sorted(SPOKEN.glob("*.wav")):
            tar.add(wav, arcname=f"{top}/recordings/{wav.name}")
        for name, data in ((f"{top}/recordings/0_yweweler_0.wav", b"RIFF...."), (f"{top}/README.md", b"# FSDD\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@contextmanager
def serving(archive: bytes | None = None) -> Iterator[Mirror]:
    """A running mirror of every catalog file (`archive`: the FSDD archive, built when not given)."""
    server = Mirror()
    for (name, file), shared in SHARED_FILE.items():
        server.files[f"/{name}/{file}"] = (SHARED / shared).read_bytes()
    server.files[f"/fsdd/{FSDD_ARCHIVE}"] = archive if archive is not None else fsdd_archive()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
