"""The example data sets by name: `--data tinyshakespeare`, `fsdd`, `great-apes-mtdna`, `ecoli-k12`.

The manifest below says what each set is, its modality and license, and every file to download:
the public URL (pinned to a commit, so the bytes never change), its size and SHA-256. A set is
downloaded once into the user's data cache — $SEQBENCH_DATA, else $XDG_CACHE_HOME/seqbench/data,
else ~/.cache/seqbench/data — as `<cache>/<name>/`, each file verified before it is renamed into
place. $SEQBENCH_DATA_MIRROR replaces every upstream origin by a mirror laid out like the cache
(`<mirror>/<name>/<file>`, http(s):// or file://), for machines that reach a local copy only.

`resolve_source` is what `--data` goes through: an existing path or an `hf:` name is left as it
is; a catalog name becomes the path of its cached copy (downloaded on first use).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from seqbench.core.errors import SeqbenchError
from seqbench.modalities.download import Unreachable, download, say, sha256_of, temp_path

DATA_ENV = "SEQBENCH_DATA"
MIRROR_ENV = "SEQBENCH_DATA_MIRROR"
STALE_TMP_SECONDS = 24 * 3600
_BUILT_IN_MODALITIES = ("text", "audio", "dna", "tokens")


@dataclass(frozen=True)
class Remote:
    """One file to download: its URL, the name it has in the set's folder (and on a mirror), its
    size and SHA-256 (None for an archive the server builds on request: its members are checked)."""

    url: str
    file: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Members:
    """The files an archive contributes: those whose base name matches `pattern`, written flat into
    `folder`; checked by their count, total size and the SHA-256 of their `sha256sum` listing
    (`cd FOLDER && LC_ALL=C ls | xargs sha256sum | sha256sum`)."""

    pattern: str
    folder: str
    count: int
    size: int
    listing_sha256: str


@dataclass(frozen=True)
class Dataset:
    """A named example data set: what `--data NAME` resolves to."""

    name: str
    modality: str
    title: str  # a few words, for listings
    license: str
    provenance: str  # what the files are, where they come from, how they relate to their origin
    files: tuple[Remote, ...]
    path: str = ""  # what --data resolves to, inside the set's folder ("": the folder itself)
    members: Members | None = None  # files[0] is an archive of which these members are kept

    @property
    def size(self) -> int:
        """Bytes the set takes in the cache."""
        return self.members.size if self.members else sum(f.size or 0 for f in self.files)


_CHAR_RNN = "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"
_PALEOMIX = ("https://raw.githubusercontent.com/MikkelSchubert/paleomix/182dd3a35784a8cd40fac0c0d146583e3fdc019a/"
             "paleomix/resources/examples/phylo_pipeline/alignment/prefixes")
_SOURMASH = "https://raw.githubusercontent.com/sourmash-bio/sourmash/f267347cbd40315056ce0e93ddb9f858d3e55728"

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        name="tinyshakespeare", modality="text", path="tinyshakespeare.txt",
        title="Shakespeare's works, one text file",
        license="public domain (char-rnn: MIT)",
        provenance="Tiny Shakespeare, 1,115,394 bytes of plain text: karpathy/char-rnn "
                   "data/tinyshakespeare/input.txt (the same bytes on master)",
        files=(Remote(f"{_CHAR_RNN}/data/tinyshakespeare/input.txt", "tinyshakespeare.txt", 1_115_394,
                      "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
    ),
    Dataset(
        name="fsdd", modality="audio", path="recordings",
        title="spoken digits 0-9, 2,500 WAV clips, 5 speakers",
        license="CC BY-SA 4.0",
        provenance="Free Spoken Digit Dataset: recordings of the digits 0-9, 8 kHz mono 16-bit WAV, "
                   "<digit>_<speaker>_<index>.wav, 5 speakers x 10 digits x 50. "
                   "Jakobovski/free-spoken-digit-dataset, tag v1.0.10, recordings/ of george, jackson, lucas, "
                   "nicolas and theo; the archive also holds a sixth speaker (yweweler), left out so that the "
                   "set is the one the project's results use. GitHub builds the archive on request (its bytes "
                   "are not guaranteed stable), so the kept recordings are checked, not the archive",
        files=(Remote("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
                      "free-spoken-digit-dataset-1.0.10.tar.gz", None, None),),
        members=Members(pattern=r"[0-9]_(george|jackson|lucas|nicolas|theo)_[0-9]+\.wav", folder="recordings",
                        count=2500, size=18_273_508,
                        listing_sha256="6683e4cce57553414a3f46d7e6159c614cdbba1313f3ca0f3ea109523db11ea6"),
    ),
    Dataset(
        name="great-apes-mtdna", modality="dna",
        title="mitochondrial genomes of 5 great apes, one FASTA each",
        license="NCBI public; paleomix: MIT",
        provenance="Complete mitochondrial genomes, one record per file (species labels from the file names): "
                   "NC_012920.1 human, NC_001643.1 chimpanzee, NC_001644.1 bonobo, NC_011120.1 gorilla, "
                   "NC_002083.1 Sumatran orangutan (16.4-16.6 kb). "
                   "NCBI RefSeq as shipped in MikkelSchubert/paleomix's phylo_pipeline example "
                   "(rCRS.fasta saved as human.fasta, sumatran_orangutan.fasta as orangutan.fasta). These "
                   "copies carry older FASTA headers (>gi|...|ref|NC_001644.1| ..., >NC_012920_1) than NCBI "
                   "efetch writes today, so an efetch download is not byte-identical: the paleomix files "
                   "are the ones downloaded and checksummed",
        files=tuple(Remote(f"{_PALEOMIX}/{upstream}.fasta", f"{species}.fasta", size, sha) for upstream, species, size, sha in (
            ("rCRS", "human", 16_820, "a4d60d52fcb7b096dae9c0ea65b79eace620f5ba7e61b9889b2ce30809c89dd5"),
            ("chimpanzee", "chimpanzee", 16_868, "7e1cde7313940745e865eadb9166cfd417ec8a3f539a2547040d8cbcca0ea643"),
            ("bonobo", "bonobo", 16_874, "22a87a00a388ff14fce66a4bf272605409509ce08d46cefadc6c5c7ad0554963"),
            ("gorilla", "gorilla", 16_734, "6a7b5daecf6c7ace4c3e3fe3eceeeea1d433eb9fa1b73ac0f39f3fe231ab5fe6"),
            ("sumatran_orangutan", "orangutan", 16_809,
             "a9685468aafca5b587fdbfef693fded2a3d1d3266afa9174bc29c414d902c5aa"),
        )),
    ),
    Dataset(
        name="ecoli-k12", modality="dna", path="ecoli-k12-mg1655.fna.gz",
        title="E. coli K-12 genome, 4.6 Mbp, gzipped FASTA",
        license="NCBI public; sourmash: BSD-3-Clause",
        provenance="E. coli K-12 MG1655 complete genome NC_000913.3, one record of 4,641,652 bp. "
                   "NCBI RefSeq assembly GCF_000005845.2 (GCF_000005845.2_ASM584v2_genomic.fna.gz) as committed "
                   "to sourmash-bio/sourmash data/ in 2016; NCBI regenerates its own .gz files, so the pinned "
                   "copy is the one downloaded and checksummed",
        files=(Remote(f"{_SOURMASH}/data/GCF_000005845.2_ASM584v2_genomic.fna.gz", "ecoli-k12-mg1655.fna.gz",
                      1_379_902, "a96d3cfa58c88d477013c768f90a11d2386d42a70d566abfb6d9013dcbd24255"),),
    ),
)}


def names() -> list[str]:
    """The catalog's data set names."""
    return list(DATASETS)


def dataset(name: str) -> Dataset:
    """The data set called `name`; SeqbenchError naming the closest names otherwise."""
    if name in DATASETS:
        return DATASETS[name]
    close = difflib.get_close_matches(name, DATASETS, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise SeqbenchError(f"unknown data set {name!r}.{hint} Known: {', '.join(DATASETS)} (seqbench data list)")


def data_root() -> Path:
    """The data cache: $SEQBENCH_DATA, else $XDG_CACHE_HOME/seqbench/data, else ~/.cache/seqbench/data."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "seqbench" / "data"


def folder(ds: Dataset) -> Path:
    """The set's folder in the data cache."""
    return data_root() / ds.name


def local_path(ds: Dataset) -> Path:
    """What `--data NAME` becomes: the set's file or folder in the cache (present or not)."""
    inner = ds.members.folder if ds.members else ds.path
    return folder(ds) / inner if inner else folder(ds)


def cache_state(ds: Dataset) -> str:
    """'yes' (every file is in the cache), 'partly' (some) or 'no'; the files are checked when used."""
    if ds.members:
        return "yes" if local_path(ds).is_dir() else "no"
    present = [(folder(ds) / f.file).is_file() for f in ds.files]
    return "yes" if all(present) else "partly" if any(present) else "no"


def url_of(ds: Dataset, remote: Remote) -> str:
    """The URL a file is fetched from: upstream, or `<mirror>/<name>/<file>` under $SEQBENCH_DATA_MIRROR."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{ds.name}/{remote.file}" if mirror else remote.url


def fetch(ds: Dataset) -> Path:
    """The set's local path, downloading what is missing and checking every file against the
    manifest, also those already there (downloaded before or put there by hand; a fraction of a
    second, so a damaged copy is never used). An unreachable host is one line naming every URL and
    where it goes."""
    root = folder(ds)
    root.mkdir(parents=True, exist_ok=True)
    _sweep_stale(root)
    created = not any(root.iterdir())
    try:
        if ds.members:
            _fetch_archive(ds)
        else:
            for remote in ds.files:
                dest = root / remote.file
                if dest.is_file():
                    _check_file(dest, remote)
                else:
                    download(url_of(ds, remote), dest, remote.size, remote.sha256, f"{ds.name}/{remote.file}")
    except Unreachable as e:
        raise SeqbenchError(f"cannot download {ds.name}: {e}; {_by_hand(ds)}") from None
    finally:
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # a first download that failed leaves no trace
    return local_path(ds)


def _by_hand(ds: Dataset) -> str:
    """What to fetch on a machine with network, and where to put it."""
    missing = [f for f in ds.files if ds.members or not (folder(ds) / f.file).is_file()]
    where = ", ".join(f"{f.url} as {f.file}" for f in missing)
    then = " (`seqbench data get` then unpacks it)" if ds.members else ""
    return f"download {where} into {folder(ds)}{then}, or set {MIRROR_ENV} to a mirror"


def _check_file(path: Path, remote: Remote) -> None:
    """SeqbenchError when a file already in the cache is not the manifest's."""
    size = path.stat().st_size
    if size != remote.size or sha256_of(path) != remote.sha256:
        raise SeqbenchError(f"{path} is not the expected file ({size:,} bytes; expected {remote.size:,} bytes "
                            f"of SHA-256 {remote.sha256[:16]}...); remove it and run again")


def _fetch_archive(ds: Dataset) -> None:
    """Unpack the members of the set's archive (downloaded, or put in the set's folder by hand)
    into a temporary folder, check them, then rename that folder into place."""
    members, remote, root, target = ds.members, ds.files[0], folder(ds), local_path(ds)
    if target.is_dir():
        _check_members(target, members, ds.name, f"remove {target} and run again")
        return
    placed = root / remote.file
    archive = placed if placed.is_file() else temp_path(placed)
    staging = None
    try:
        if archive != placed:
            download(url_of(ds, remote), archive, label=f"{ds.name}/{remote.file}")
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
        _unpack(archive, staging, members)
        _check_members(staging, members, ds.name, "nothing was kept")
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # unless another process finished first (its copy is kept)
                raise
        say(f"{ds.name}/{members.folder}: {members.count:,} files unpacked and checked")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if archive != placed:
            archive.unlink(missing_ok=True)


def _unpack(archive: Path, into: Path, members: Members) -> None:
    """Write the archive's regular files whose base name matches `members.pattern`, flat, by base name."""
    pattern = re.compile(members.pattern)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                name = info.name.rsplit("/", 1)[-1]
                if info.isfile() and pattern.fullmatch(name):
                    with tar.extractfile(info) as src, open(into / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise SeqbenchError(f"{archive.name} is truncated or not a tar archive ({e}); nothing was kept") from None


def _check_members(where: Path, members: Members, name: str, then: str) -> None:
    """SeqbenchError ending with `then` when the files in `where` are not the manifest's."""
    files = sorted(p.name for p in where.iterdir() if p.is_file())
    listing = "".join(f"{sha256_of(where / f)}  {f}\n" for f in files)
    digest = hashlib.sha256(listing.encode()).hexdigest()
    size = sum((where / f).stat().st_size for f in files)
    if (len(files), size, digest) != (members.count, members.size, members.listing_sha256):
        raise SeqbenchError(f"the files of {name} differ from the manifest ({len(files):,} files, {size:,} bytes, "
                            f"listing SHA-256 {digest[:16]}...; expected {members.count:,}, {members.size:,}, "
                            f"{members.listing_sha256[:16]}...); {then}")


def _sweep_stale(root: Path) -> None:
    """Remove temporary files of downloads killed long ago (a live download's are recent)."""
    now = time.time()
    for p in root.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:
            pass


def resolve_source(source: str | Path | None, modality: str | None = None) -> str | Path | None:
    """What `--data` names: an existing path or an `hf:` name as it is; a catalog name as the path
    of its cached copy (downloaded on first use), refused in one line when a built-in modality
    other than the set's would read it (a plugin modality may read any files). A name that is
    neither is left for the modality to refuse."""
    if source is None:
        return None
    text = str(source)
    if text.startswith("hf:") or Path(text).expanduser().exists():
        return source
    if text not in DATASETS:
        close = difflib.get_close_matches(text, DATASETS, n=1, cutoff=0.75)
        if close and "/" not in text:
            raise SeqbenchError(f"no such file, folder or data set: {text}. Did you mean {close[0]!r}? "
                                f"(seqbench data list)")
        return source
    ds = DATASETS[text]
    if modality in _BUILT_IN_MODALITIES and modality != ds.modality:
        raise SeqbenchError(f"data set {ds.name!r} is {ds.modality}, not {modality}; pass --modality {ds.modality} "
                            f"(or a task that reads {ds.modality})")
    return str(fetch(ds))

