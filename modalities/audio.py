"""Audio: waveforms as 8-bit mu-law samples at 16 kHz (256 classes), the Mamba paper's setup.

Decoding: soundfile (libsndfile) for WAV, FLAC, OGG and the other formats it knows; torchcodec for
the rest when it is installed. Every clip is mixed down to mono, resampled to 16 kHz with
torchaudio and mu-law encoded with torchaudio.functional. Tokens decode back to a waveform that
`write_wav` saves, so generated audio can be listened to.

Sources: a folder of audio files (one record per file), a single audio file, a list file (one
path per line, optionally followed by a tab or comma and a label; paths relative to the list
file), a folder saved by `datasets`' save_to_disk, or a hub audio dataset. Labels come from the
list file, a dataset column, the folder name (`labels="folder"`) or a file-name pattern
(`labels=SPOKEN_DIGIT`, i.e. `<digit>_<speaker>_<n>.wav`).
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torchaudio.transforms import Resample

from seqbench.core.errors import SeqbenchError
from seqbench.modalities.base import TokenStore, label_rule, list_files, source_kind
from seqbench.modalities.cache import StoreWriter, file_fingerprint, load_or_build

SAMPLE_RATE = 16_000
CHANNELS = 256  # 8-bit mu-law
SILENCE = 128  # mu-law id of 0.0
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".w64", ".rf64", ".mp3")
TORCHCODEC_SUFFIXES = (".m4a", ".mp4", ".aac", ".opus", ".webm", ".wma")
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES + TORCHCODEC_SUFFIXES
SPOKEN_DIGIT = r"^(\d+)_"  # labels of the Free Spoken Digit Dataset: <digit>_<speaker>_<index>.wav


class AudioModality:
    """Mu-law ids 0..255 of 16 kHz mono audio; no special ids (id 128 is silence)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, channels: int = CHANNELS, name: str = "audio") -> None:
        if channels > 256:
            raise SeqbenchError(f"audio keeps mu-law ids in uint8: channels must be <= 256, got {channels}")
        self.name = name
        self.sample_rate = sample_rate
        self.channels = channels
        self.vocab_size = channels
        self.specials: dict[str, int] = {}
        self._resamplers: dict[int, Resample] = {}

    byte_level = True  # one mu-law id per sample: bits per byte of 8-bit audio

    def sample_source(self) -> tuple[Path, dict]:
        """The generated spoken-digit clips (modalities.samples), labelled by digit."""
        from seqbench.modalities.samples import sample_source

        return sample_source("audio"), {"labels": SPOKEN_DIGIT}

    # ---- waveform <-> ids --------------------------------------------------------------
    def to_mono(self, waveform: np.ndarray | torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """A (samples,) float32 tensor at `self.sample_rate` from (samples,) or a 2-D array whose
        shorter axis is the channel axis (soundfile's (frames, channels) or torch's (channels, frames))."""
        x = torch.as_tensor(np.asarray(waveform, dtype=np.float32) if isinstance(waveform, np.ndarray) else waveform)
        x = x.to(torch.float32)
        if x.ndim == 2:
            x = x.mean(dim=0) if x.shape[0] <= x.shape[1] else x.mean(dim=1)
        elif x.ndim != 1:
            raise SeqbenchError(f"audio must be (samples,) or 2-D with a channel axis, got shape {tuple(x.shape)}")
        if sample_rate is not None and sample_rate != self.sample_rate:
            x = self._resampler(sample_rate)(x)
        return x

    def encode(self, data: np.ndarray | torch.Tensor, sample_rate: int | None = None) -> list[int]:
        """Waveform in [-1, 1] (at `sample_rate`, default 16 kHz) to mu-law ids."""
        return self.encode_array(data, sample_rate).tolist()

    def encode_array(self, data: np.ndarray | torch.Tensor, sample_rate: int | None = None) -> np.ndarray:
        x = self.to_mono(data, sample_rate).clamp(-1.0, 1.0)
        return AF.mu_law_encoding(x, self.channels).to(torch.uint8).numpy()

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Mu-law ids to a float32 waveform in [-1, 1] at `self.sample_rate`."""
        t = torch.as_tensor(np.asarray(ids, dtype=np.int64)) if not isinstance(ids, torch.Tensor) else ids.long()
        return AF.mu_law_decoding(t, self.channels).to(torch.float32)

    def write_wav(self, ids: Sequence[int] | np.ndarray | torch.Tensor, path: str | Path) -> Path:
        """Decode ids and write a 16-bit PCM WAV at `self.sample_rate` (temp file, then rename)."""
        path = Path(path)
        wave = self.decode(ids).numpy()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=path.parent or ".")
        os.close(fd)
        try:
            sf.write(tmp, wave, self.sample_rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def read(self, path: str | Path) -> tuple[np.ndarray, int]:
        """Decode one file to (float32 array, sample rate); SeqbenchError when it is corrupt."""
        return read_audio(Path(path))

    def _resampler(self, rate: int) -> Resample:
        if rate not in self._resamplers:
            self._resamplers[rate] = Resample(rate, self.sample_rate)
        return self._resamplers[rate]

    # ---- sources -----------------------------------------------------------------------
    def load(
        self,
        source: str | Path,
        *,
        labels: str | None = None,
        column: str = "audio",
        label_column: str | None = None,
        config: str | None = None,
        split: str = "train",
        cache: str | Path | None = None,
    ) -> TokenStore:
        """Token store of an audio source (see the module doc); one record per clip."""
        kind = source_kind(source)
        settings = {"rate": self.sample_rate, "channels": self.channels, "labels": labels, "label_column": label_column}
        if kind in ("hub", "saved-dataset"):
            from seqbench.modalities.text import open_dataset

            ds, key = open_dataset(source, kind, config, split, [column, label_column])
            return load_or_build(
                "audio", settings, key, lambda w: self._build_dataset(w, ds, column, label_column),
                source=f"{source}[{split}].{column}", cache=cache, vocab_size=self.vocab_size,
            )
        path = Path(str(source)).expanduser()
        rule = label_rule(labels)
        if kind == "dir":
            files = list_files(path, AUDIO_SUFFIXES)
            items = [(f, f.relative_to(path).as_posix(), None) for f in files]
        elif path.name.lower().endswith(AUDIO_SUFFIXES):
            items = [(path, path.name, None)]
        else:
            items = _read_list_file(path)
        if not items:
            raise SeqbenchError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {path}")

        def build(w: StoreWriter) -> None:
            seconds = 0.0
            with one_thread():
                for f, name, listed in items:
                    label = listed if listed is not None else (rule(f) if rule is not None else None)
                    data, rate = read_audio(f)
                    ids = self.encode_array(data.mean(axis=1), rate)
                    seconds += len(ids) / self.sample_rate
                    w.add(name, ids, label)
            w.stats.update(clips=len(items), seconds=round(seconds, 2))

        return load_or_build(
            "audio", settings, file_fingerprint(f for f, _, _ in items), build, source=str(path), cache=cache,
            vocab_size=self.vocab_size,
        )

    def _build_dataset(self, w: StoreWriter, ds, column: str, label_column: str | None) -> None:
        import datasets

        if isinstance(ds.features.get(column), datasets.Audio):
            ds = ds.cast_column(column, datasets.Audio(decode=False))
        names = None
        if label_column is not None and isinstance(ds.features.get(label_column), datasets.ClassLabel):
            names = ds.features[label_column].names
        with one_thread():
            self._add_rows(w, ds, column, label_column, names)
        w.stats.update(clips=len(ds))

    def _add_rows(self, w: StoreWriter, ds, column: str, label_column: str | None, names: list[str] | None) -> None:
        for i, row in enumerate(ds):
            item = row[column]
            where = f"row {i}" + (f" ({item.get('path')})" if isinstance(item, dict) and item.get("path") else "")
            if isinstance(item, dict) and item.get("bytes"):
                data, rate = _read_soundfile(io.BytesIO(item["bytes"]), where)
                data = data.mean(axis=1)
            elif isinstance(item, dict) and item.get("path"):
                data, rate = read_audio(Path(item["path"]))
                data = data.mean(axis=1)
            elif isinstance(item, dict) and "array" in item:
                data = _with_samples(np.asarray(item["array"], dtype=np.float32), where)
                rate = int(item["sampling_rate"])
            else:
                raise SeqbenchError(f"column {column!r} of {where} holds no audio bytes, path or array")
            label = None
            if label_column is not None:
                value = row[label_column]
                label = names[value] if names is not None else str(value)
            name = Path(item["path"]).name if isinstance(item, dict) and item.get("path") else str(i)
            w.add(name, self.encode_array(data, rate), label)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: per-clip resampling and mu-law are tiny ops for which
    intra-op threads cost far more than they save (50x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _read_list_file(path: Path) -> list[tuple[Path, str, str | None]]:
    """Entries of a list file: `path[<tab or comma>label]` per line, '#' starts a comment."""
    items = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise SeqbenchError(
            f"{path} is neither an audio file ({', '.join(AUDIO_SUFFIXES)}) nor a text list of audio files"
        ) from e
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else ("," if "," in line else None)
        name, label = (line.split(sep, 1) + [None])[:2] if sep else (line, None)
        f = (path.parent / name.strip()).expanduser()
        if not f.is_file():
            raise SeqbenchError(f"list file {path} line {n}: no such audio file {name.strip()}")
        items.append((f, name.strip(), None if label is None else label.strip()))
    return items


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file (soundfile, or torchcodec for formats libsndfile lacks) after checking that
    a WAV holds all the data its header declares (libsndfile silently reads a truncated WAV)."""
    if path.name.lower().endswith(TORCHCODEC_SUFFIXES):
        return _read_torchcodec(path)
    if path.name.lower().endswith(".wav"):
        _check_wav(path)
    return _read_soundfile(path, str(path))


def _read_soundfile(file, where: str) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(file) as f:
            declared = f.frames
            data = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise SeqbenchError(f"audio file {where} is truncated or corrupt (soundfile: {e})") from e
    if len(data) < declared:
        raise SeqbenchError(f"audio file {where} is truncated ({len(data)} of {declared} frames)")
    return _with_samples(data, where), rate


def _with_samples(data: np.ndarray, where: str) -> np.ndarray:
    """`data`, or SeqbenchError naming the clip when it holds no samples: an empty clip would become
    an empty record, and the task would fail later without saying which file is to blame."""
    if len(data) == 0:
        raise SeqbenchError(f"audio file {where} holds no samples (0 frames); remove it or give a clip with sound")
    return data


def _check_wav(path: Path) -> None:
    """Walk the RIFF chunks; raise when the data chunk claims more bytes than the file holds."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # RF64, RIFX or not a WAV at all: soundfile's own checks apply
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                if length not in (0, 0xFFFFFFFF) and pos + 8 + length > size:
                    raise SeqbenchError(
                        f"audio file {path} is truncated "
                        f"(data chunk declares {length:,} bytes, {size - pos - 8:,} present)"
                    )
                return
            pos += 8 + length + (length & 1)
    raise SeqbenchError(f"audio file {path} is truncated or corrupt (WAV without a data chunk)")


def _read_torchcodec(path: Path) -> tuple[np.ndarray, int]:
    try:
        from torchcodec.decoders import AudioDecoder
    except ImportError as e:
        raise SeqbenchError(
            f"audio file {path}: this format needs torchcodec (pip install torchcodec); "
            f"soundfile reads {', '.join(SOUNDFILE_SUFFIXES)}"
        ) from e
    try:
        samples = AudioDecoder(str(path)).get_all_samples()
    except Exception as e:
        raise SeqbenchError(f"audio file {path} is truncated or corrupt (torchcodec: {str(e).splitlines()[0]})") from e
    return _with_samples(samples.data.numpy().T.astype(np.float32), str(path)), int(samples.sample_rate)
