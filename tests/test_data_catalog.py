"""Data sets by name (`seqbench data list|get|path`, `--data NAME`): the real download code against
a loopback HTTP server that serves the shared data folder's files (tests/data_mirror.py); without
that folder these tests are skipped.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqbench.core.errors import SeqbenchError
from seqbench.harness.cli import app
from seqbench.modalities import catalog, load_source
import data_mirror
from data_mirror import FSDD_ARCHIVE, SHARED, SHARED_FILE, SPOKEN

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared real data not found at {SHARED} (set SEQBENCH_SHARED_DATA)"
)
cli = CliRunner()


@pytest.fixture(scope="module")
def fsdd_archive() -> bytes:
    return data_mirror.fsdd_archive()


@pytest.fixture
def mirror(tmp_path, monkeypatch, fsdd_archive):
    with data_mirror.serving(fsdd_archive) as server:
        monkeypatch.setenv("SEQBENCH_DATA", str(tmp_path / "cache"))
        monkeypatch.setenv(catalog.MIRROR_ENV, server.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        yield server


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_manifest_checksums_are_those_of_the_shared_files():
    for (name, file), shared in SHARED_FILE.items():
        remote = next(f for f in catalog.dataset(name).files if f.file == file)
        data = (SHARED / shared).read_bytes()
        assert (remote.size, remote.sha256) == (len(data), hashlib.sha256(data).hexdigest()), (name, file)
    members = catalog.dataset("fsdd").members
    wavs = sorted(SPOKEN.glob("*.wav"))
    listing = "".join(f"{hashlib.sha256(w.read_bytes()).hexdigest()}  {w.name}\n" for w in wavs)
    assert members.listing_sha256 == hashlib.sha256(listing.encode()).hexdigest()
    assert (members.count, members.size) == (len(wavs), sum(w.stat().st_size for w in wavs))
    assert all(catalog.dataset(n).license and catalog.dataset(n).files[0].url.startswith("https://")
               for n in catalog.names())


def test_get_downloads_checks_and_caches_every_file(mirror, tmp_path):
    result = cli.invoke(app, ["data", "get", "tinyshakespeare", "great-apes-mtdna", "ecoli-k12"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "cache"
    for (name, file), shared in SHARED_FILE.items():
        assert (root / name / file).read_bytes() == (SHARED / shared).read_bytes()
    assert len(files_under(root)) == len(SHARED_FILE)  # no temporary file left beside them
    assert "SHA-256 checked" in result.stderr and "(checked)" in result.stdout
    served = len(mirror.requests)
    listing = cli.invoke(app, ["data", "list"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in listing.stdout.splitlines() if line.count("│") > 3}
    assert "yes" in rows["tinyshakespeare"] and "CC BY-SA 4.0" in rows["fsdd"] and "│ no " in rows["fsdd"]
    again = cli.invoke(app, ["data", "get", "tinyshakespeare"])
    assert again.exit_code == 0 and len(mirror.requests) == served  # cached: checked, not fetched again


def test_fsdd_keeps_the_five_speakers_recordings_of_the_archive(mirror, tmp_path):
    result = cli.invoke(app, ["data", "path", "fsdd"])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path == tmp_path / "cache" / "fsdd" / "recordings"
    names = sorted(p.name for p in path.iterdir())
    assert names == sorted(w.name for w in SPOKEN.glob("*.wav"))  # no yweweler, no README
    assert files_under(tmp_path / "cache") == [path / n for n in names]  # the archive is gone too
    assert "2,500 files unpacked and checked" in result.stderr


def test_a_wrong_checksum_is_one_line_and_leaves_nothing(mirror, tmp_path):
    key = "/tinyshakespeare/tinyshakespeare.txt"
    altered = bytearray(mirror.files[key])
    altered[1000] ^= 1  # same size, one bit off
    mirror.files[key] = bytes(altered)
    line = one_error_line(cli.invoke(app, ["data", "get", "tinyshakespeare"]))
    assert "does not match its checksum" in line
    assert files_under(tmp_path / "cache") == []


@pytest.mark.parametrize("name,file", [("ecoli-k12", "ecoli-k12-mg1655.fna.gz"), ("fsdd", FSDD_ARCHIVE)])
def test_a_dropped_connection_is_one_line_and_leaves_nothing(mirror, tmp_path, name, file):
    mirror.truncate.add(f"/{name}/{file}")
    line = one_error_line(cli.invoke(app, ["data", "get", name]))
    assert "dropped after" in line and "nothing was kept" in line
    assert files_under(tmp_path / "cache") == []
    assert catalog.cache_state(catalog.dataset(name)) == "no"


def test_offline_says_what_to_download_and_where(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SEQBENCH_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv(catalog.MIRROR_ENV, f"http://127.0.0.1:{port}/")
    line = one_error_line(cli.invoke(app, ["data", "get", "great-apes-mtdna"]))
    ds = catalog.dataset("great-apes-mtdna")
    assert f"cannot reach 127.0.0.1:{port}" in line
    assert all(f"{f.url} as {f.file}" in line for f in ds.files) and str(tmp_path / "cache" / ds.name) in line
    assert files_under(tmp_path / "cache") == []


def test_unknown_name_is_one_line_with_a_suggestion(mirror):
    line = one_error_line(cli.invoke(app, ["data", "get", "tinyshakspeare"]))
    assert "unknown data set 'tinyshakspeare'. Did you mean 'tinyshakespeare'?" in line
    assert mirror.requests == []


def test_resolve_source_maps_names_and_leaves_paths(mirror, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = catalog.resolve_source("tinyshakespeare", "text")
    assert Path(text) == tmp_path / "cache" / "tinyshakespeare" / "tinyshakespeare.txt"
    assert len(load_source("text", text, cache=tmp_path / "tokens")) == 1_115_394
    apes = load_source("dna", catalog.resolve_source("great-apes-mtdna", "dna"), cache=tmp_path / "tokens")
    assert apes.label_names == ["bonobo", "chimpanzee", "gorilla", "human", "orangutan"]
    shared = str(SHARED / "text/tinyshakespeare.txt")
    assert catalog.resolve_source(shared, "text") == shared and catalog.resolve_source("hf:a/b") == "hf:a/b"
    (tmp_path / "fsdd").mkdir()  # a local folder of that name wins over the catalog
    assert catalog.resolve_source("fsdd", "audio") == "fsdd"
    with pytest.raises(SeqbenchError, match="'ecoli-k12' is dna, not text; pass --modality dna"):
        catalog.resolve_source("ecoli-k12", "text")
    with pytest.raises(SeqbenchError, match="Did you mean 'ecoli-k12'"):
        catalog.resolve_source("ecoli-k21", "dna")


def test_a_file_put_in_the_cache_by_hand_is_checked(mirror, tmp_path):
    hand = tmp_path / "cache" / "ecoli-k12" / "ecoli-k12-mg1655.fna.gz"
    hand.parent.mkdir(parents=True)
    hand.write_bytes(b"not a genome")
    line = one_error_line(cli.invoke(app, ["data", "path", "ecoli-k12"]))
    assert "is not the expected file" in line and "remove it" in line
    hand.write_bytes((SHARED / "dna/bacteria/ecoli-k12-mg1655.fna.gz").read_bytes())
    result = cli.invoke(app, ["data", "path", "ecoli-k12"])
    assert result.exit_code == 0 and result.stdout.strip() == str(hand) and mirror.requests == []


def test_run_takes_a_catalog_name_as_data(mirror, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQBENCH_CACHE", str(tmp_path / "tokens"))
    result = cli.invoke(app, ["run", "lm", "--data", "tinyshakespeare", "--seq-len", "32", "--steps", "2",
                              "--eval-lengths", "32", "--eval-samples", "4", "--set", "d_model=16",
                              "--set", "n_layers=1", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "tinyshakespeare" / "tinyshakespeare.txt").is_file()
