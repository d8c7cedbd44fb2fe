"""Modalities on the real data sets of the shared data folder (never copied into the project).

Found through $SEQBENCH_SHARED_DATA or `<repo>/../shared/data`; skipped when absent. Loads run
twice into a session cache: the first converts, the second maps the cached array.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from seqbench.core.errors import SeqbenchError
from seqbench.modalities.audio import SPOKEN_DIGIT, AudioModality
from seqbench.modalities.dna import DNAModality, reverse_complement
from seqbench.modalities.text import TextModality

SHARED = Path(os.environ.get("SEQBENCH_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared real data not found at {SHARED} (set SEQBENCH_SHARED_DATA)"
)

APES = {"human": 16569, "chimpanzee": 16554, "bonobo": 16563, "gorilla": 16412, "orangutan": 16499}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real-cache")


def load_twice(mod, source, cache, **options):
    """(store from the first load, store from the cached load, seconds of each)."""
    t0 = time.perf_counter()
    first = mod.load(source, cache=cache, **options)
    t1 = time.perf_counter()
    again = mod.load(source, cache=cache, **options)
    t2 = time.perf_counter()
    assert first.meta["first_load"] and not again.meta["first_load"]
    assert len(first) == len(again) and np.array_equal(first.tokens[:4096], again.tokens[:4096])
    print(f"\n{again.describe()} | first {t1 - t0:.2f}s, cached {t2 - t1:.3f}s")
    return first, again, t1 - t0, t2 - t1


def test_tinyshakespeare(cache):
    path = SHARED / "text/tinyshakespeare.txt"
    _, store, _, cached = load_twice(TextModality(), path, cache)
    assert len(store) == 1_115_394 == path.stat().st_size
    assert TextModality().decode(store.window(0, 13)) == "First Citizen"
    w = store.random_window(1_000_000, torch.Generator().manual_seed(0))
    assert len(w.tokens) == 1_000_000 and np.shares_memory(w.tokens, store.tokens)
    assert cached < 2.0


def test_great_apes(cache):
    _, store, _, _ = load_twice(DNAModality(), SHARED / "dna/great-ape-mtdna", cache)
    assert store.label_names == sorted(APES)
    lengths = {store.label_name(i): int(n) for i, n in enumerate(store.lengths)}
    assert lengths == APES
    assert store.meta["stats"]["non_acgt"] == 1  # the human genome's single N
    x, y = store.batch(32, 4096, torch.Generator().manual_seed(0), by="label")
    assert x.shape == (32, 4096) and set(y.tolist()) <= set(range(5))
    with pytest.raises(SeqbenchError, match="longest record"):
        store.random_window(1 << 15, 0)


def test_ecoli_long_windows(cache):
    _, store, _, _ = load_twice(DNAModality(), SHARED / "dna/bacteria/ecoli-k12-mg1655.fna.gz", cache)
    assert len(store) == 4_641_652 and store.n_records == 1
    assert store.meta["stats"]["non_acgt"] == 0
    g = torch.Generator().manual_seed(0)
    w = store.random_window(1 << 22, g)
    assert len(w.tokens) == 1 << 22 and np.shares_memory(w.tokens, store.tokens)
    t = time.perf_counter()
    for _ in range(100):
        store.random_window(1 << 20, g)
    assert time.perf_counter() - t < 1.0  # views: no copy of a million bases
    rc = reverse_complement(w.tokens[:1000])
    assert np.array_equal(reverse_complement(rc), w.tokens[:1000])


def test_spoken_digits(cache):
    folder = SHARED / "audio/spoken-digits"
    _, store, _, _ = load_twice(AudioModality(), folder, cache, labels=SPOKEN_DIGIT)
    assert store.n_records == 2500 and store.label_names == [str(d) for d in range(10)]
    i = store.names.index("7_theo_12.wav")
    assert store.label_name(i) == "7"
    assert store.lengths[i] == 2 * sf.info(str(folder / "7_theo_12.wav")).frames  # 8 kHz -> 16 kHz
    test = store.where(r"_[0-4]\.wav$")  # the data set's usual test split
    assert test.n_records == 250
    x, y = test.batch(8, 2048, torch.Generator().manual_seed(0), by="label")
    assert x.shape == (8, 2048) and int(x.max()) < 256 and y.shape == (8,)
