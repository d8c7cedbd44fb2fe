"""The MAD synthetic suite (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"): six token tasks that architecture studies compare sequence mixers on before
scaling, each with MAD's generator and baseline settings.

Unlike the Mamba paper's tasks (a fresh batch every step), MAD trains on a fixed, finite training
set per task setting (`train_examples` sequences, seen over and over) and evaluates on an
independent test set of 1,280 sequences (`test_examples`). Both are generated here once per
(setting, length, seed) from NumPy generators seeded by them, so every machine sees the same
sets; step `s` trains on rows of a seeded permutation of the training set (epoch s // steps per
epoch). Training targets are the next token at every position where MAD's are (recall tasks:
language-model targets everywhere), test targets are MAD's (recall: only the values of keys seen
before); accuracy is over the scored positions, as MAD's.

Our sequences are exactly `--seq-len` positions long: where MAD's shifted multi-query recall
instance has one position fewer, ours starts with one more value (of no pair in the context).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from itertools import permutations
from pathlib import Path

import numpy as np
import torch

from seqbench.core.errors import SeqbenchError
from seqbench.core.types import IGNORE_INDEX, Batch, HeadSpec
from seqbench.tasks.base import SeededTask, TaskDefaults

TRAIN, TEST = 1, 2
GENERATOR_VERSION = 2  # part of the cache key: raise it when a generator changes what it makes
# MAD's models: width 128, two mixer blocks; its optimiser grid is lr {1e-4, 5e-4, 1e-3} x wd {0, 0.1}.
# `blocks` picks the blocks at that size (MAD_MODELS: per family, "default" for the others).
BLOCKS = {"family": "each family's own block at MAD's width 128 and depth 2: Mamba mixers alone with state 16, "
                    "attention and Hyena each followed by their MLP (GELU; transformer++: SwiGLU)",
          "mad": "MAD's blocks (mad-lab's configs): every mixer followed by a SwiGLU MLP, Mamba's state 4, "
                 "attention with 16 heads"}
_SIZE = {"d_model": 128, "n_layers": 2}
_HYBRID = {**_SIZE, "attn_layers": "1", "n_heads": 16}
MAD_MODELS = {
    "family": {"default": _SIZE, "transformer": {**_SIZE, "n_heads": 16}, "hybrid": _HYBRID},
    "mad": {"default": {**_SIZE, "mlp": "swiglu"},
            "mamba": {**_SIZE, "d_state": 4, "mlp": "swiglu"},
            **{name: {**_SIZE, "n_heads": 16, "mlp": "swiglu"}
               for name in ("transformer", "transformer-abs", "transformer-xpos")},
            "transformer++": {**_SIZE, "n_heads": 16},  # SwiGLU already
            "hybrid": {**_HYBRID, "d_state": 4, "mlp": "swiglu"}},
}


def mad_defaults(seq_len: int, train_examples: int, batch_size: int = 128, blocks: str = "family") -> TaskDefaults:
    """MAD's training recipe: 200 epochs of its training set at batch 128, AdamW at 5e-4 with a
    cosine schedule (its baseline point of the lr x wd grid), bf16 on a GPU; MAD's model size
    with the `blocks` of MAD_MODELS."""
    steps = 200 * math.ceil(train_examples / batch_size)
    return TaskDefaults(modality="tokens", seq_len=seq_len, steps=steps, batch_size=batch_size, lr=5e-4,
                        weight_decay=0.0, schedule="cosine",  # evaluated at the training length
                        model_kwargs=MAD_MODELS[blocks])


class FixedSetTask(SeededTask):
    """A task of fixed training and test sets generated from the seed (MAD's protocol): subclasses
    set `vocab` and implement `instance(rng, seq_len, training) -> (inputs, targets)` as NumPy arrays
    of `seq_len` ids each (targets IGNORE_INDEX where nothing is scored)."""

    modalities = ("tokens",)
    vocab: int
    train_examples: int = 12_800
    test_examples: int = 1_280

    def __init__(self, modality: str | None, data: str | None, seed: int, train_examples: int,
                 blocks: str = "family") -> None:
        if train_examples < 1:
            raise SeqbenchError(f"task {self.name!r}: train_examples must be >= 1, got {train_examples}")
        if blocks not in BLOCKS:
            raise SeqbenchError(f"task {self.name!r}: blocks must be one of {', '.join(BLOCKS)}, got {blocks!r}")
        super().__init__(modality, data, seed)
        self.train_examples = train_examples
        # MAD trains 200 epochs of whatever its training set holds: the steps follow the set's size
        self.defaults = mad_defaults(type(self).defaults.seq_len, train_examples, blocks=blocks)
        self._sets: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def settings_key(self) -> tuple:
        """The settings the generated sets depend on (besides length and seed)."""
        return tuple(sorted((k, v) for k, v in vars(self).items() if not k.startswith("_")
                            and k not in ("modality", "data", "seed", "defaults")))

    def _rng(self, split: int, seq_len: int) -> np.random.Generator:
        text = repr((self.name, self.settings_key(), self.seed, split, seq_len)).encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(text).digest()[:8], "little"))

    def instance(self, rng: np.random.Generator, seq_len: int, training: bool) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def instances(self, rng: np.random.Generator, count: int, seq_len: int,
                  training: bool) -> tuple[np.ndarray, np.ndarray]:
        """`count` sequences as (inputs, targets) arrays of shape (count, seq_len): one `instance`
        after another, unless a task draws the whole set at once."""
        pairs = [self.instance(rng, seq_len, training) for _ in range(count)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def dataset(self, split: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the training (TRAIN) or test (TEST) set at `seq_len`, int64 tensors.
        Kept in the data cache (a MAD sweep trains each set at six optimiser points and several
        models): generated once, written under a temporary name, then renamed into place."""
        self.check_seq_len(seq_len)
        key = (split, seq_len)
        if key not in self._sets:
            path = self._cache_path(split, seq_len)
            try:
                saved = torch.load(path, weights_only=True)
                self._sets[key] = saved["inputs"], saved["targets"]
            except Exception:  # not there yet, or damaged (any unpickling error): make it again
                rng = self._rng(split, seq_len)
                count = self.train_examples if split == TRAIN else self.test_examples
                inputs, targets = self.instances(rng, count, seq_len, split == TRAIN)
                inputs = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.int64))
                targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64))
                self._sets[key] = inputs, targets
                self._save(path, inputs, targets)
        return self._sets[key]

    def _cache_path(self, split: int, seq_len: int) -> Path:
        from seqbench.modalities.catalog import data_root

        text = repr((GENERATOR_VERSION, self.name, self.settings_key(), self.seed, split, seq_len)).encode()
        return data_root() / "mad" / f"{self.name}-{hashlib.sha256(text).hexdigest()[:16]}.pt"

    @staticmethod
    def _save(path: Path, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.save({"inputs": inputs, "targets": targets}, tmp)
            os.replace(tmp, path)
        except OSError:  # a read-only cache: the set is simply made again next time
            pass

    def train_batch(self, step: int, batch_size: int, seq_len: int, device: torch.device | None = None) -> Batch:
        inputs, targets = self.dataset(TRAIN, seq_len)
        n = inputs.shape[0]
        per_epoch = max(1, n // batch_size) if batch_size <= n else 1
        epoch, slot = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        rows = order[(slot * batch_size + torch.arange(batch_size)) % n]
        return Batch(inputs[rows], targets[rows])

    def eval_batches(self, seq_len: int, n_samples: int, batch_size: int,
                     device: torch.device | None = None) -> Iterator[Batch]:
        inputs, targets = self.dataset(TEST, seq_len)
        count = min(n_samples, inputs.shape[0])
        for start in range(0, count, batch_size):
            end = min(count, start + batch_size)
            yield Batch(inputs[start:end], targets[start:end])


class InContextRecall(FixedSetTask):
    """MAD in-context recall: key-value pairs in context, the values of keys seen before scored.

    Keys come from the first half of the ids, values from the second; each sequence has its own
    key -> value map. MAD's baseline: vocab 16, length 128, 12,800 training sequences,
    multi-query (every repeated key's value is scored; multi_query=false scores one probe after
    a copy token). Its difficulty grid: vocab 32/64/128, length 256/512/1k, 6,400 ... 800
    training sequences. 200 epochs at batch 128 by default (`seqbench list tasks`)."""

    name = "mad-recall"
    defaults = mad_defaults(128, 12_800)

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0, vocab: int = 16,
                 train_examples: int = 12_800, multi_query: bool = True, noise_vocab: int = 0,
                 frac_noise: float = 0.0, blocks: str = "family") -> None:
        super().__init__(modality, data, seed, train_examples, blocks)
        self.vocab, self.multi_query = vocab, multi_query
        self.noise_vocab, self.frac_noise = noise_vocab, frac_noise

    def check_seq_len(self, seq_len: int) -> None:
        if seq_len < 4 or seq_len % 2:
            raise SeqbenchError(f"{self.name} takes even lengths >= 4 (key-value pairs), got {seq_len}")
        plain = self.vocab - (0 if self.multi_query else 1) - self.noise_vocab
        if plain < 2:
            raise SeqbenchError(f"{self.name}: vocab {self.vocab} leaves no keys and values "
                                f"(noise_vocab {self.noise_vocab})")
        if not 0 <= self.frac_noise < 1 or (self.frac_noise > 0 and self.noise_vocab < 1):
            raise SeqbenchError(f"{self.name}: frac_noise must be in [0, 1) and needs noise_vocab >= 1")

    def instances(self, rng, count, seq_len, training):
        """The whole set at once. Per sequence: seq_len / 2 - 1 context slots (multi-query: one more,
        the first, a filler pair of which the length keeps only the value, so it is no pair of the
        context), each a key and that key's value (drawn per key, once per sequence) or, at `frac_noise` of
        the slots but one, a pair of noise ids; then (single query) the copy id; then a probe key,
        drawn uniformly from the keys of the context, and its value. Multi-query scores the value
        of every key seen before in the context, and the probe's."""
        copy_token = self.vocab - 1
        plain = self.vocab - (0 if self.multi_query else 1) - self.noise_vocab
        half = plain // 2
        filler = int(self.multi_query)
        slots = seq_len // 2 + filler - 1
        rows = np.arange(count)
        keys = rng.integers(0, half, (count, slots))
        value_of = rng.integers(half, plain, (count, half))  # each key's value in each sequence
        tokens = np.stack([keys, np.take_along_axis(value_of, keys, axis=1)], axis=2)  # (count, slots, 2)
        real = np.ones((count, slots), dtype=bool)  # slots that are key-value pairs of the context
        if filler:
            real[:, 0] = False
            tokens[:, 0, 0], tokens[:, 0, 1] = rng.integers(0, half, count), rng.integers(half, plain, count)
        if self.frac_noise > 0:
            kept = rng.integers(filler, slots, count)  # one slot is never noise: some pair precedes the probe
            noise = rng.random((count, slots)) < self.frac_noise
            noise[:, :filler] = False
            noise[rows, kept] = False
            noise_ids = rng.integers(plain, plain + self.noise_vocab, (count, slots, 2))
            tokens = np.where(noise[..., None], noise_ids, tokens)
            real &= ~noise
        # each real slot's key: its first occurrence in the sequence, or seen before
        marked = np.where(real, keys, half)  # half: no key
        order = np.argsort(marked, axis=1, kind="stable")
        ordered = np.take_along_axis(marked, order, axis=1)
        first_in_order = np.ones_like(ordered, dtype=bool)
        first_in_order[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        first = np.empty_like(first_in_order)
        np.put_along_axis(first, order, first_in_order, axis=1)
        seen_before = real & ~first
        scored = np.full((count, slots, 2), IGNORE_INDEX)
        if self.multi_query:
            scored[:, :, 1] = np.where(seen_before, tokens[:, :, 1], IGNORE_INDEX)
        # the probe: uniform over the distinct keys of the context (a random score on first occurrences)
        probe_slot = np.where(real & first, rng.random((count, slots)), -1.0).argmax(axis=1)
        probe = keys[rows, probe_slot]
        answer = value_of[rows, probe]
        tail, tail_scored = [probe, answer], [np.full(count, IGNORE_INDEX), answer]
        if not self.multi_query:
            tail, tail_scored = [np.full(count, copy_token), *tail], [np.full(count, IGNORE_INDEX), *tail_scored]
        tokens = np.concatenate([tokens.reshape(count, -1), np.stack(tail, axis=1)], axis=1)[:, -(seq_len + 1):]
        scored = np.concatenate([scored.reshape(count, -1), np.stack(tail_scored, axis=1)], axis=1)[:, -(seq_len + 1):]
        return tokens[:, :-1], tokens[:, 1:] if training else scored[:, 1:]


class NoisyInContextRecall(InContextRecall):
    """MAD noisy in-context recall: in-context recall with noise pairs from their own ids (the
    last `noise_vocab` below the specials) in a fraction `frac_noise` of the slots; noise is never
    scored. MAD's baseline: vocab 32 of which 16 noise, 20% noise, length 128; its grid adds
    vocab 48/80/144, noise 40/60/80%, length 256/512/1k and 6,400 ... 800 training sequences."""

    name = "mad-noisy-recall"
    defaults = mad_defaults(128, 12_800)

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0, vocab: int = 32,
                 train_examples: int = 12_800, multi_query: bool = True, noise_vocab: int = 16,
                 frac_noise: float = 0.2, blocks: str = "family") -> None:
        super().__init__(modality, data, seed, vocab, train_examples, multi_query, noise_vocab, frac_noise, blocks)


def _pick(rng: np.random.Generator, options: list[int]) -> int:
    """`rng.choice(options)` for a short list: the same draw (one bounded integer), without
    choice's array handling, which was most of the fuzzy-recall generator's time."""
    return options[int(rng.integers(len(options)))]


class FuzzyInContextRecall(FixedSetTask):
    """MAD fuzzy in-context recall: keys and values are spans of 1..k_motif and 1..v_motif
    distinct ids (keys from the first half of the plain ids, values from the second), so a key is
    only known once its whole span is read; the values of repeated keys are scored, and one
    probe pair is placed in the context and repeated at the end. Test keys are all k_motif long.
    Sequences are left-padded with a pad id (or trimmed on the left) to the length. MAD's baseline: vocab 16, motifs 3
    and 3, length 128, multi-query; its grid as in-context recall's."""

    name = "mad-fuzzy-recall"
    defaults = mad_defaults(128, 12_800)

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0, vocab: int = 16,
                 train_examples: int = 12_800, k_motif: int = 3, v_motif: int = 3,
                 multi_query: bool = True, blocks: str = "family") -> None:
        super().__init__(modality, data, seed, train_examples, blocks)
        self.vocab, self.k_motif, self.v_motif = vocab, k_motif, v_motif
        self.multi_query = multi_query
        self._spans: dict[tuple[int, int], list[tuple[int, ...]]] = {}

    def _plain(self) -> int:
        return self.vocab - (1 if self.multi_query else 2)  # the pad id (and copy id)

    def check_seq_len(self, seq_len: int) -> None:
        half = self._plain() // 2
        if self.k_motif < 1 or self.v_motif < 1 or half < max(self.k_motif, self.v_motif):
            raise SeqbenchError(f"{self.name}: vocab {self.vocab} gives {half} key ids, fewer than the motifs "
                                f"({self.k_motif}, {self.v_motif}) need")
        if seq_len < 4 * (self.k_motif + self.v_motif) + 2:
            raise SeqbenchError(f"{self.name} needs length >= {4 * (self.k_motif + self.v_motif) + 2} "
                                f"for motifs {self.k_motif} and {self.v_motif}, got {seq_len}")

    def _spans_of(self, ids: np.ndarray, size: int) -> list[tuple[int, ...]]:
        key = (int(ids[0]), size)
        if key not in self._spans:
            self._spans[key] = list(permutations(ids.tolist(), size))
        return self._spans[key]

    def _draw(self, rng, ids, size) -> tuple[int, ...]:
        spans = self._spans_of(ids, size)
        return spans[rng.integers(len(spans))]

    def instance(self, rng, seq_len, training):
        plain = self._plain()
        copy_token = self.vocab - 1  # multi-query has no copy id: its pad is the last id
        pad = self.vocab - 1 if self.multi_query else self.vocab - 2
        keys, values = np.arange(plain // 2), np.arange(plain // 2, plain)
        k_sizes = list(range(1, self.k_motif + 1)) if training else [self.k_motif]
        v_sizes = list(range(1, self.v_motif + 1))
        probe_k = self._draw(rng, keys, _pick(rng, k_sizes))
        probe_v = self._draw(rng, values, _pick(rng, v_sizes))
        budget = seq_len + 1 - (0 if self.multi_query else 1) - len(probe_k) - len(probe_v)
        probe_at = rng.integers(max(1, budget - len(probe_k) - len(probe_v) - (self.k_motif + self.v_motif)))
        mapping, seen, tokens, scored, placed = {}, set(), [], [], False
        while len(tokens) < budget - (self.k_motif + self.v_motif):
            if not placed and len(tokens) >= probe_at:
                k, v, placed = probe_k, probe_v, True
            else:
                k = self._draw(rng, keys, _pick(rng, k_sizes))
                if k == probe_k:
                    v, placed = probe_v, True
                else:
                    v = mapping.get(k) or self._draw(rng, values, _pick(rng, v_sizes))
            mapping[k] = v
            tokens += [*k, *v]
            scored += [IGNORE_INDEX] * len(k) + (list(v) if (self.multi_query and k in seen) else [IGNORE_INDEX] * len(v))
            seen.add(k)
        if not placed:  # the context ran out before the probe's slot: it goes last
            tokens += [*probe_k, *probe_v]
            scored += [IGNORE_INDEX] * (len(probe_k) + len(probe_v))
        if not self.multi_query:
            tokens.append(copy_token)
            scored.append(IGNORE_INDEX)
        tokens += [*probe_k, *probe_v]
        scored += [IGNORE_INDEX] * len(probe_k) + list(probe_v)
        tokens, scored = tokens[-(seq_len + 1):], scored[-(seq_len + 1):]
        pad_n = seq_len + 1 - len(tokens)
        tokens, scored = [pad] * pad_n + tokens, [IGNORE_INDEX] * pad_n + scored
        inputs = np.asarray(tokens[:-1])
        targets = np.asarray(tokens[1:] if training else scored[1:])
        return inputs, targets


class MadSelectiveCopying(FixedSetTask):
    """MAD selective copying: `tokens` ids (from all but the two specials) with blank ids inserted
    at random places, then a copy id and `tokens` blanks; the blanks after the copy id are scored
    with the ids in their order. Unlike our `selective-copying` (the Mamba paper's: 4,096
    positions, fresh data every step), MAD's baseline is vocab 16, length 256, 16 tokens and
    12,800 training sequences; its grid: vocab 32/64/128, length 512/1k, 6,400 ... 800 training
    sequences, 32/64/96 tokens."""

    name = "mad-selective-copying"
    defaults = mad_defaults(256, 12_800)

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0, vocab: int = 16,
                 train_examples: int = 12_800, tokens: int = 16, blocks: str = "family") -> None:
        super().__init__(modality, data, seed, train_examples, blocks)
        self.vocab, self.tokens = vocab, tokens

    def check_seq_len(self, seq_len: int) -> None:
        if self.vocab < 3:
            raise SeqbenchError(f"{self.name} needs vocab >= 3 (a blank and a copy id), got {self.vocab}")
        if seq_len <= 2 * self.tokens + 1:
            raise SeqbenchError(f"{self.name} needs length > 2·tokens + 1 = {2 * self.tokens + 1}, got {seq_len}")

    def instance(self, rng, seq_len, training):
        copy_token, blank = self.vocab - 1, self.vocab - 2
        to_copy = rng.integers(0, self.vocab - 2, self.tokens)
        blanks = seq_len - 2 * self.tokens - 1
        context = np.insert(to_copy, rng.integers(0, self.tokens, blanks), blank)
        inputs = np.concatenate([context, [copy_token], np.full(self.tokens, blank)])
        targets = np.concatenate([np.full(self.tokens + blanks + 1, IGNORE_INDEX), to_copy])
        return inputs, targets


class Compression(FixedSetTask):
    """MAD compression: `length - 1` random ids and a compression id; the model's last position
    alone, through a small MLP decoder with sine-cosine positions (the `reconstruct` head), must
    give back every id of the sequence. MAD's baseline: vocab 16, length 32, 12,800 training
    sequences; its grid: vocab 32/64/128, length 64/128/256, 6,400 ... 800 training sequences."""

    name = "mad-compression"
    defaults = mad_defaults(32, 12_800)

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0, vocab: int = 16,
                 train_examples: int = 12_800, blocks: str = "family") -> None:
        super().__init__(modality, data, seed, train_examples, blocks)
        self.vocab = vocab

    @property
    def head(self) -> HeadSpec:
        return HeadSpec(kind="reconstruct", n_outputs=self.vocab)

    def check_seq_len(self, seq_len: int) -> None:
        if seq_len < 2 or self.vocab < 2:
            raise SeqbenchError(f"{self.name} needs length >= 2 and vocab >= 2, got {seq_len} and {self.vocab}")

    def instance(self, rng, seq_len, training):
        inputs = np.concatenate([rng.integers(0, self.vocab - 1, seq_len - 1), [self.vocab - 1]])
        return inputs, inputs.copy()


class Memorization(FixedSetTask):
    """MAD memorization: one fixed key -> value map for the whole task (drawn from the seed), so
    nothing can be recalled from context; each sequence is keys each followed by an insert id,
    scored at the insert id with the key's value. MAD's baseline: vocab 256, length 32, 256
    training sequences; its grid: vocab 512 ... 8,192 (the facts to memorise grow with it)."""

    name = "mad-memorization"
    defaults = mad_defaults(32, 256)

    def __init__(self, modality: str | None = None, data: str | None = None, seed: int = 0, vocab: int = 256,
                 train_examples: int = 256, blocks: str = "family") -> None:
        super().__init__(modality, data, seed, train_examples, blocks)
        self.vocab = vocab
        self._facts = self.facts() if vocab >= 3 else {}  # check_seq_len refuses a smaller vocab

    def facts(self) -> dict[int, int]:
        """The key -> value map: keys the first half of the plain ids, values the second, paired
        by two seeded shuffles."""
        plain = self.vocab - 1
        rng = self._rng(0, 0)
        keys, values = rng.permutation(plain // 2), rng.permutation(np.arange(plain // 2, plain))
        return dict(zip(keys.tolist(), values.tolist()))

    def check_seq_len(self, seq_len: int) -> None:
        if seq_len < 2 or seq_len % 2 or self.vocab < 3:
            raise SeqbenchError(f"{self.name} takes even lengths >= 2 and vocab >= 3, got {seq_len} and {self.vocab}")

    def instance(self, rng, seq_len, training):
        keys = rng.choice(np.fromiter(self._facts, dtype=np.int64), seq_len // 2)
        inputs = np.stack([keys, np.full_like(keys, self.vocab - 1)], axis=1).reshape(-1)
        values = np.array([self._facts[k] for k in keys.tolist()])
        targets = np.stack([np.full_like(keys, IGNORE_INDEX), values], axis=1).reshape(-1)
        return inputs, targets
