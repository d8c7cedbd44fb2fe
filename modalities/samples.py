"""Small sample data for every modality, generated deterministically (no download needed).

The embedded default data and the tests use it: a short UTF-8 text, 120 "spoken digit"-like
clips at 8 kHz named `<digit>_<speaker>_<index>.wav` (a class-specific two-tone chirp per digit,
so a classifier can tell them apart), and three "species" of FASTA files with two records each and
different composition (GC-rich, AT-rich, a repeated motif), with soft-masked lowercase runs and N
runs. Generated once into `<cache>/samples-v<version>/` (temp folder, then rename).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from seqbench.modalities.cache import cache_dir

VERSION = 2
SEED = 20231201
SPEAKERS = ("ada", "bob")
CLIPS_PER_SPEAKER = 6  # indices 0-4 are the usual held-out split, so 5 is the train part
SPECIES = {"alpha": 0.65, "beta": 0.35, "gamma": None}  # GC fraction; None: motif-rich
_WORDS = (
    "the a long sequence model reads every token once and keeps a small state while attention "
    "looks back at all of them selective scan recall copy induction head memory window byte "
    "café naïve über state space"
).split()
LAYOUT = {"text": "text/sample.txt", "audio": "audio/digits", "dna": "dna/species"}


def sample_dir(root: str | Path | None = None) -> Path:
    """The sample data folder, generated on first use; `root` overrides `<cache>/samples-v<N>`."""
    target = Path(root) if root is not None else cache_dir() / f"samples-v{VERSION}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-samples-", dir=target.parent))
    try:
        write_samples(tmp)
        (tmp / ".complete").write_text(f"seqbench samples v{VERSION}\n")
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def sample_source(modality: str, root: str | Path | None = None) -> Path:
    """The sample source of `modality` ("text", "audio" or "dna") to pass to `Modality.load`."""
    if modality not in LAYOUT:
        from seqbench.core.errors import SeqbenchError

        raise SeqbenchError(f"no sample data for modality {modality!r}; accepted: {', '.join(LAYOUT)}")
    return sample_dir(root) / LAYOUT[modality]


def write_samples(root: Path) -> None:
    """Write all sample files under `root` (same bytes on every run)."""
    rng = np.random.default_rng(SEED)
    write_text(root / LAYOUT["text"], rng)
    write_audio(root / LAYOUT["audio"], rng)
    write_dna(root / LAYOUT["dna"], rng)


def write_text(path: Path, rng: np.random.Generator, n_sentences: int = 400) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(n_sentences):
        words = rng.choice(_WORDS, size=int(rng.integers(4, 14)))
        lines.append(" ".join(words).capitalize() + ".")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def digit_clip(digit: int, speaker: int, index: int, rate: int = 8000) -> np.ndarray:
    """A 0.25-0.4 s clip: two tones at digit-specific frequencies gliding upwards, in a
    smooth envelope; the speaker shifts the pitch a little, the index the length."""
    n = int(rate * (0.25 + 0.05 * ((digit + index) % 4)))
    t = np.arange(n) / rate
    f1 = 300 + 120 * digit * (1 + 0.04 * speaker)
    f2 = 2.5 * f1 if digit % 2 else 1.5 * f1
    glide = 1 + 0.3 * t / t[-1]
    wave = 0.6 * np.sin(2 * np.pi * f1 * glide * t) + 0.3 * np.sin(2 * np.pi * f2 * t)
    envelope = np.sin(np.pi * np.arange(n) / n) ** 2
    noise = np.random.default_rng(1000 * digit + 10 * speaker + index).normal(0, 0.01, n)
    return (0.8 * wave * envelope + noise).astype(np.float32)


def write_audio(folder: Path, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        for s, speaker in enumerate(SPEAKERS):
            for index in range(CLIPS_PER_SPEAKER):
                clip = digit_clip(digit, s, index)
                sf.write(folder / f"{digit}_{speaker}_{index}.wav", clip, 8000, subtype="PCM_16", format="WAV")


def _random_bases(rng: np.random.Generator, n: int, gc: float | None) -> str:
    if gc is None:
        motif = "ACGTTGCAAT"
        parts, total = [], 0
        while total < n:
            piece = motif * int(rng.integers(1, 4)) if rng.random() < 0.6 else "".join(rng.choice(list("ACGT"), 10))
            parts.append(piece)
            total += len(piece)
        return "".join(parts)[:n]
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(rng.choice(list("ACGT"), size=n, p=p))


def write_dna(folder: Path, rng: np.random.Generator, line: int = 70) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for species, gc in SPECIES.items():
        out = []
        for chrom in (1, 2):
            seq = list(_random_bases(rng, int(rng.integers(3000, 6000)), gc))
            lo = int(rng.integers(0, len(seq) - 400))
            seq[lo : lo + 200] = [c.lower() for c in seq[lo : lo + 200]]  # soft-masked repeat
            seq[lo + 250 : lo + 270] = ["N"] * 20  # assembly gap
            text = "".join(seq)
            out.append(f">{species}_chr{chrom} synthetic {species} chromosome {chrom}")
            out.extend(text[i : i + line] for i in range(0, len(text), line))
        (folder / f"{species}.fasta").write_text("\n".join(out) + "\n")
