"""Modalities on generated data: round trips, mu-law bound, resampling, FASTA edge cases, the token
cache (reuse, invalidation, atomic writes) and clear errors for corrupt inputs. No downloads."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from seqbench.core.errors import SeqbenchError
from seqbench.modalities import LoadableModality, Modality, TokenStore, get_modality, load_source
from seqbench.modalities import cache as cache_mod
from seqbench.modalities.audio import SPOKEN_DIGIT, AudioModality
from seqbench.modalities.dna import DNAModality, reverse_complement
from seqbench.modalities.samples import digit_clip, sample_dir, sample_source
from seqbench.modalities.text import TextModality


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Each test gets its own empty token cache."""
    monkeypatch.setenv("SEQBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Path:
    return sample_dir(tmp_path_factory.mktemp("samples") / "v")


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ---- protocol and registry ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["text", "audio", "dna"])
def test_registered_and_protocol(name):
    mod = get_modality(name)
    assert isinstance(mod, Modality) and isinstance(mod, LoadableModality)
    assert mod.name == name
    assert all(0 <= i < mod.vocab_size for i in mod.specials.values())


def test_tokens_modality_still_works():
    mod = get_modality("tokens", vocab_size=8)
    assert mod.decode(mod.encode([1, 2, 7])) == [1, 2, 7]


def test_samples_are_deterministic(samples, tmp_path):
    again = sample_dir(tmp_path / "again")
    for rel in ["text/sample.txt", "audio/digits/7_bob_1.wav", "dna/species/gamma.fasta"]:
        assert (samples / rel).read_bytes() == (again / rel).read_bytes()


# ---- text ---------------------------------------------------------------------------------------
def test_text_bytes_round_trip():
    mod = TextModality()
    text = "Hello, wörld — ∑ 🐍\n"
    ids = mod.encode(text)
    assert ids == list(text.encode("utf-8")) and mod.vocab_size == 259
    assert mod.decode(ids) == text
    assert mod.decode([mod.specials["bos"], *ids, mod.specials["eos"]]) == text


def test_text_load_file_folder_gz(samples, tmp_path):
    src = samples / "text/sample.txt"
    store = TextModality().load(src)
    raw = src.read_bytes()
    assert len(store) == len(raw) and store.n_records == 1
    assert store.window(100, 50).tobytes() == raw[100:150]
    folder = tmp_path / "corpus"
    (folder / "poems").mkdir(parents=True)
    (folder / "news").mkdir()
    (folder / "poems/a.txt").write_text("roses\n")
    with gzip.open(folder / "news/b.txt.gz", "wt") as f:
        f.write("headline\n")
    store = TextModality().load(folder, labels="folder")
    assert store.names == ["news/b.txt.gz", "poems/a.txt"]
    assert store.label_names == ["news", "poems"]
    assert TextModality().decode(store.record(0)) == "headline\n"


def test_text_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["first line", "second"]}).save_to_disk(str(tmp_path / "ds"))
    store = TextModality().load(tmp_path / "ds", column="text")
    assert TextModality().decode(store.record(0)) == "first line\nsecond"
    with pytest.raises(SeqbenchError, match="no column 'body'"):
        TextModality().load(tmp_path / "ds", column="body")


def test_text_hub_without_network_says_pass_a_local_path(monkeypatch):
    import seqbench.modalities.text as text

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(text, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SeqbenchError, match="local file or folder") as err:
        TextModality().load("Salesforce/wikitext", config="wikitext-103-raw-v1")
    assert "\n" not in str(err.value)


def test_text_hub_failure_is_one_clear_line(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Salesforce/wikitext' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SeqbenchError, match="pass a local file or folder") as err:
        TextModality().load("hf:Salesforce/wikitext", config="wikitext-103-raw-v1")
    assert "\n" not in str(err.value)


def test_missing_path_and_tokenizer_errors(tmp_path):
    with pytest.raises(SeqbenchError, match="no such file"):
        TextModality().load(tmp_path / "nope.txt")
    with pytest.raises(SeqbenchError, match="tokenizer"):
        TextModality(tokenizer=tmp_path / "missing.json")


def test_text_tokenizer_file(tmp_path, samples):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", "[PAD]"])
    tok.train([str(samples / "text/sample.txt")], trainer)
    tok.save(str(tmp_path / "tok.json"))
    mod = TextModality(tokenizer=tmp_path / "tok.json")
    assert mod.specials == {"[UNK]": 0, "[PAD]": 1}
    assert mod.decode(mod.encode("the long sequence")) == "the long sequence"
    store = mod.load(samples / "text/sample.txt")
    assert store.tokens.dtype == np.uint16 and 0 < len(store) < 19_881


# ---- audio --------------------------------------------------------------------------------------
def test_mu_law_error_bound():
    mod = AudioModality()
    x = torch.linspace(-1, 1, 20001)
    y = mod.decode(mod.encode(x))
    mu = 255.0
    bound = (1 / mu + x.abs()) * (np.exp(np.log1p(mu) / mu) - 1) + 1e-6
    assert torch.all((x - y).abs() <= bound)
    assert (x - y).abs().max() < 0.023  # ~2.2% of full scale at the loudest bin
    ids = mod.encode(x)
    assert min(ids) == 0 and max(ids) == 255
    assert mod.encode(mod.decode(ids)) == ids  # decoded values sit at bin centres
    assert mod.encode(torch.zeros(3)) == [128] * 3


def test_resample_doubles_8k_and_mixes_down():
    mod = AudioModality()
    wave = np.sin(np.arange(8000) / 7).astype(np.float32)
    assert len(mod.encode(wave, sample_rate=8000)) == 16000
    assert len(mod.encode(wave, sample_rate=16000)) == 8000
    stereo = np.stack([wave, -wave], axis=1)  # (frames, channels): mixes to silence
    assert set(mod.encode(stereo, sample_rate=16000)) == {128}


def test_audio_folder_labels_and_wav_round_trip(samples, tmp_path):
    mod = AudioModality()
    store = mod.load(samples / "audio/digits", labels=SPOKEN_DIGIT)
    assert store.n_records == 120 and store.label_names == [str(d) for d in range(10)]
    i = store.names.index("3_ada_1.wav")
    assert store.label_name(i) == "3"
    assert store.lengths[i] == 2 * len(digit_clip(3, 0, 1))  # 8 kHz -> 16 kHz
    ids = store.record(i)
    out = mod.write_wav(ids, tmp_path / "back.wav")
    data, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and len(data) == len(ids)
    assert np.array_equal(mod.encode_array(data), ids)


def test_audio_list_file_and_saved_dataset(samples, tmp_path):
    digits = samples / "audio/digits"
    lst = tmp_path / "clips.tsv"
    lst.write_text(f"# clips\n{digits / '1_ada_0.wav'}\tone\n{digits / '2_bob_1.wav'}\ttwo\n")
    store = AudioModality().load(lst)
    assert store.label_names == ["one", "two"] and store.n_records == 2
    datasets = pytest.importorskip("datasets")
    files = [str(digits / "1_ada_0.wav"), str(digits / "2_bob_1.wav")]
    ds = datasets.Dataset.from_dict({"audio": files, "label": [0, 1]})
    ds = ds.cast_column("audio", datasets.Audio()).cast_column("label", datasets.ClassLabel(names=["one", "two"]))
    ds.save_to_disk(str(tmp_path / "ds"))
    from_ds = AudioModality().load(tmp_path / "ds", label_column="label")
    assert from_ds.label_names == ["one", "two"]
    assert np.array_equal(from_ds.record(1), store.record(1))


def test_flac_ogg_and_folder_labels(tmp_path):
    clip = digit_clip(4, 0, 0)
    for sub, ext in [("flac", "FLAC"), ("ogg", "OGG")]:
        (tmp_path / sub).mkdir()
        sf.write(tmp_path / sub / f"a.{sub}", np.stack([clip, clip], axis=1), 8000, format=ext)
    store = AudioModality().load(tmp_path, labels="folder")
    assert store.names == ["flac/a.flac", "ogg/a.ogg"] and store.label_names == ["flac", "ogg"]
    assert store.lengths.tolist() == [2 * len(clip)] * 2
    lossless = AudioModality().encode_array(clip, 8000)
    assert np.abs(store.record(0).astype(int) - lossless).max() <= 1


def test_truncated_wav_is_a_clear_error_and_leaves_no_entry(samples, tmp_path, _cache):
    folder = tmp_path / "clips"
    shutil.copytree(samples / "audio/digits", folder)
    raw = (folder / "5_bob_0.wav").read_bytes()
    (folder / "5_bob_0.wav").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SeqbenchError, match=r"5_bob_0\.wav is truncated") as err:
        AudioModality().load(folder, labels=SPOKEN_DIGIT)
    assert "\n" not in str(err.value)
    assert entries(_cache) == []
    (folder / "5_bob_0.wav").write_bytes(raw[:30])  # cut inside the header
    with pytest.raises(SeqbenchError, match=r"5_bob_0\.wav is truncated or corrupt"):
        AudioModality().load(folder)
    assert entries(_cache) == []


def test_a_wav_without_samples_is_one_line_naming_it_and_leaves_no_entry(samples, tmp_path, _cache):
    folder = tmp_path / "clips"
    shutil.copytree(samples / "audio/digits", folder)
    sf.write(folder / "7_eve_0.wav", np.zeros(0, dtype=np.float32), 8000, subtype="PCM_16")
    assert (folder / "7_eve_0.wav").stat().st_size == 44  # a header and an empty data chunk
    for source in (folder, folder / "7_eve_0.wav"):
        with pytest.raises(SeqbenchError, match=r"7_eve_0\.wav holds no samples") as err:
            AudioModality().load(source, labels=SPOKEN_DIGIT)
        assert "\n" not in str(err.value)
        assert entries(_cache) == []


# ---- dna ----------------------------------------------------------------------------------------
def test_dna_encode_decode_and_reverse_complement():
    mod = DNAModality()
    assert mod.vocab_size == 8 and mod.specials == {"pad": 5, "bos": 6, "eos": 7}
    assert mod.encode("ACGTacgtNnRYkm-") == [0, 1, 2, 3, 0, 1, 2, 3] + [4] * 7
    assert mod.decode(mod.encode("gattaca")) == "GATTACA"
    ids = mod.encode("AACGTN")
    assert mod.decode(reverse_complement(ids)) == "NACGTT"
    arr = np.array([mod.encode("ACCGT"), mod.encode("TTTTN")], dtype=np.uint8)
    assert reverse_complement(arr).dtype == np.uint8
    assert np.array_equal(reverse_complement(reverse_complement(arr)), arr)
    t = torch.tensor(arr, dtype=torch.long)
    assert torch.equal(reverse_complement(t), torch.from_numpy(reverse_complement(arr).astype(np.int64)))
    with pytest.raises(SeqbenchError, match="unexpected symbol '7'"):
        mod.encode("AC7T")


EDGE_FASTA = ">chr1 first\r\nacgtNNNN\r\nRYKMacgt\r\n>empty\r\n>chr2\r\nGGGG\r\n"


@pytest.mark.parametrize("gz", [False, True])
def test_fasta_edge_cases(tmp_path, gz):
    path = tmp_path / ("g.fa.gz" if gz else "g.fa")
    data = EDGE_FASTA.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    store = DNAModality().load(path)
    assert store.names == ["chr1", "empty", "chr2"]
    assert store.lengths.tolist() == [16, 0, 4]
    assert DNAModality().decode(store.record(0)) == "ACGTNNNNNNNNACGT"
    stats = store.meta["stats"]
    assert stats["non_acgt"] == 8 and stats["empty_records"] == 1
    assert stats["non_acgt_symbols"] == {"K": 1, "M": 1, "N": 4, "R": 1, "Y": 1}
    assert store.labels is None


def test_windows_stay_inside_records_unless_asked(tmp_path):
    path = tmp_path / "two.fa"
    path.write_text(">a\n" + "A" * 100 + "\n>b\n" + "C" * 50 + "\n")
    store = DNAModality().load(path)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        w = store.random_window(60, g)
        assert w.record == 0 and set(w.tokens.tolist()) == {0}
    with pytest.raises(SeqbenchError, match="longest record"):
        store.random_window(101, g)
    mixed = [store.random_window(120, g, straddle=True).tokens for _ in range(50)]
    assert all(len(m) == 120 for m in mixed) and any(set(m.tolist()) == {0, 1} for m in mixed)


def test_species_folder_gives_labels(samples):
    store = DNAModality().load(samples / "dna/species")
    assert store.label_names == ["alpha", "beta", "gamma"] and store.n_records == 6
    assert store.names[0] == "alpha.fasta:alpha_chr1"
    gc = [np.isin(store.record(i), [1, 2]).mean() for i in range(0, 4, 2)]
    assert gc[0] > 0.55 > 0.45 > gc[1]  # GC-rich alpha vs AT-rich beta
    x, y = store.batch(16, 256, torch.Generator().manual_seed(1), by="label")
    assert x.shape == (16, 256) and x.dtype == torch.int64 and y.shape == (16,)
    assert x.max() < 5 and set(y.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    "text, match",
    [
        ("ACGT\n>a\nACGT\n", "comments at the beginning"),
        (">a\nAC1GT\n", r"record 'a'.*unexpected symbol '1'"),
        ("", "no FASTA records"),
    ],
)
def test_malformed_fasta_is_a_clear_error(tmp_path, _cache, text, match):
    path = tmp_path / "bad.fasta"
    path.write_text(text)
    with pytest.raises(SeqbenchError, match=match) as err:
        DNAModality().load(path)
    assert "bad.fasta" in str(err.value) and "\n" not in str(err.value)
    assert entries(_cache) == []


def test_truncated_gzip_fasta(tmp_path, _cache):
    blob = gzip.compress((">r1\n" + "ACGT" * 5000 + "\n>r2\n" + "TTTT" * 5000 + "\n").encode())
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SeqbenchError, match=r"cut\.fa\.gz"):
        DNAModality().load(path)
    assert entries(_cache) == []


# ---- cache and store ----------------------------------------------------------------------------
def test_cache_reuse_and_invalidation(tmp_path, _cache):
    path = tmp_path / "doc.txt"
    path.write_text("hello world\n")
    first = TextModality().load(path)
    assert first.meta["first_load"] and isinstance(first.tokens, np.memmap)
    second = TextModality().load(path)
    assert not second.meta["first_load"] and second.meta["cache_entry"] == first.meta["cache_entry"]
    w = second.window(0, 5)
    assert np.shares_memory(w, second.tokens) and w.tobytes() == b"hello"
    path.write_text("changed text\n")
    third = TextModality().load(path)
    assert third.meta["first_load"] and third.window(0, 7).tobytes() == b"changed"
    assert len(entries(_cache)) == 2
    labelled = TextModality().load(tmp_path, labels="folder")  # other settings: other entry
    assert labelled.meta["cache_entry"] != third.meta["cache_entry"]


def test_interrupted_build_leaves_nothing(tmp_path, _cache):
    def build(writer):
        writer.add("part", np.arange(10, dtype=np.uint8))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache_mod.load_or_build("x", {}, ["src"], build)
    assert entries(_cache) == []
    store = cache_mod.load_or_build("x", {}, ["src"], lambda w: w.add("part", np.arange(10, dtype=np.uint8)))
    assert store.record(0).tolist() == list(range(10))


def test_damaged_entry_is_rebuilt(tmp_path, _cache):
    path = tmp_path / "doc.txt"
    path.write_text("abcdef\n")
    entry = Path(TextModality().load(path).meta["cache_entry"])
    with open(entry / "tokens.bin", "r+b") as f:
        f.truncate(3)
    again = TextModality().load(path)
    assert again.meta["first_load"] and again.window(0, 6).tobytes() == b"abcdef"


def test_an_entry_corrupted_in_place_is_rebuilt_on_its_first_use_in_a_process(tmp_path, _cache, monkeypatch):
    path = tmp_path / "doc.txt"
    path.write_text("abcdefgh" * 100 + "\n")
    entry = Path(TextModality().load(path).meta["cache_entry"])
    with open(entry / "tokens.bin", "r+b") as f:  # same size, bytes zeroed: only the checksum sees it
        f.seek(10)
        f.write(b"\x00" * 20)
    monkeypatch.setattr(cache_mod, "_verified", set())  # a new process: nothing checked yet
    again = TextModality().load(path)
    assert again.meta["first_load"] and again.window(0, 40).tobytes() == (b"abcdefgh" * 5)


def test_a_large_entry_is_checked_by_sampled_blocks(tmp_path, _cache, monkeypatch):
    monkeypatch.setattr(cache_mod, "FULL_CHECK_BYTES", 1 << 10)  # treat 4 MiB as large
    ids = (np.arange(4 << 20) % 251).astype(np.uint8)
    store = cache_mod.load_or_build("big", {}, ["src"], lambda w: w.add("all", ids))
    entry = Path(store.meta["cache_entry"])
    assert json.loads((entry / "meta.json").read_text())["checksum"].startswith("sampled:")
    monkeypatch.setattr(cache_mod, "_verified", set())
    assert not cache_mod.load_or_build("big", {}, ["src"], lambda w: w.add("all", ids)).meta["first_load"]
    with open(entry / "tokens.bin", "r+b") as f:  # zero the first sampled block
        f.write(b"\x00" * 1000)
    monkeypatch.setattr(cache_mod, "_verified", set())
    assert cache_mod.load_or_build("big", {}, ["src"], lambda w: w.add("all", ids)).meta["first_load"]


def test_an_entry_with_ids_beyond_the_vocabulary_is_rebuilt(tmp_path, _cache, monkeypatch):
    """An entry whose ids the modality cannot have (written by another version of the conversion,
    with a checksum that matches its own bytes) is rebuilt instead of reaching the embedding."""
    path = tmp_path / "one.fa"
    path.write_text(">r1\nACGTACGTNN\n")
    entry = Path(DNAModality().load(path).meta["cache_entry"])
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["max_id"] == 4  # N
    (entry / "tokens.bin").write_bytes(bytes([0, 1, 2, 3, 200, 1, 2, 3, 4, 4]))  # 200: no DNA id
    meta["checksum"] = cache_mod.file_checksum(entry / "tokens.bin")
    del meta["max_id"]  # as an entry from before the meta kept it
    (entry / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setattr(cache_mod, "_verified", set())
    again = DNAModality().load(path)
    assert again.meta["first_load"] and again.record(0).tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 4]
    assert json.loads((entry / "meta.json").read_text())["max_id"] == 4
    # an old entry that is in range gets its largest id recorded once, and is kept
    meta = json.loads((entry / "meta.json").read_text())
    del meta["max_id"]
    (entry / "meta.json").write_text(json.dumps(meta))
    assert not DNAModality().load(path).meta["first_load"]
    assert json.loads((entry / "meta.json").read_text())["max_id"] == 4


def test_a_conversion_that_writes_ids_beyond_the_vocabulary_is_one_line(_cache):
    def build(writer):
        writer.add("r", np.array([1, 2, 300], dtype=np.uint16))

    with pytest.raises(SeqbenchError, match=r"wrote token id 300, outside the modality's ids 0\.\.255") as err:
        cache_mod.load_or_build("x", {}, ["src"], build, dtype=np.uint16, vocab_size=256)
    assert "\n" not in str(err.value) and entries(_cache) == []
    assert cache_mod.load_or_build("x", {}, ["src"], build, dtype=np.uint16).record(0).tolist() == [1, 2, 300]


def test_store_sampling_subsets_and_determinism():
    store = TokenStore.from_records(
        [np.zeros(100), np.ones(10), np.full(300, 2)], names=["a", "b", "c"], labels=[0, 1, 1], label_names=["x", "y"]
    )
    w1 = store.random_window(50, 7)
    w2 = store.random_window(50, 7)
    assert (w1.record, w1.start) == (w2.record, w2.start)
    rng = np.random.default_rng(0)
    picks = [store.random_window(20, rng).record for _ in range(300)]
    assert 1 not in picks and picks.count(2) > picks.count(0)  # weighted by valid windows
    assert len(store) == 410 and store.eligible(50).tolist() == [0, 2]
    assert store.random_window(50, 0, by="label").record in (0, 2)
    with pytest.raises(SeqbenchError, match="label"):
        store.random_window(200, 0, by="label")  # label x has no record of 200 tokens
    assert store.where("^[ab]$").names == ["a", "b"]
    tail = store.portion(0.9, 1.0)
    assert tail.lengths.tolist() == [10, 1, 30]
    assert tail.random_window(30, 0).record == 2
    apart = store.select([0, 2]).random_window(350, 0, straddle=True).tokens  # a and c are not adjacent
    assert len(apart) == 350 and 1 not in apart.tolist()
    x, y = store.batch(4, 8, 3)
    assert x.shape == (4, 8) and y.shape == (4,)
    assert torch.equal(store.batch(4, 8, 3)[0], x)  # same seed, same batch


def test_load_source_defaults_to_samples():
    store = load_source("audio")
    assert store.n_records == 120 and store.n_labels == 10
    assert sample_source("dna").name == "species"
    with pytest.raises(SeqbenchError, match="accepted"):
        sample_source("video")
