"""Counter-based random numbers that are the same on every device.

A generated task's batch must be the same whether it is made on the CPU or on the GPU (where a
captured training step wants it, with no host work per step), and the same after a resume. Torch's
generators differ by device (Mersenne twister on the CPU, Philox on CUDA), so generated tasks draw
from a hash instead: value (row, draw, column) of a stream is splitmix64 of the stream key, the
row's sample index, the draw's number and the column, computed with int64 torch ops that wrap
identically on every device. Rows are samples: sample j of a stream does not depend on how many
samples are drawn with it (the held-out set is the same at every evaluation batch size).
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_ROW = _signed(0xD6E8FEB86659FD93)
_DRAW = _signed(0xA0761D6478BD642F)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def _mix_int(x: int) -> int:
    """`_mix` of one Python int (the same bits as the tensor version)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _signed(x ^ (x >> 31))


_KEY_MUL, _KEY_PART = 6364136223846793005, 1442695040888963407


def stream_key(seed: int, *stream: int | torch.Tensor) -> int | torch.Tensor:
    """One int64 key for a data stream: (seed, split id, step or length) -> independent streams.
    The last part may be a 0-d int64 device tensor (a captured step's step counter): the key is
    then a device tensor with the same bits as the int the same step gives."""
    *head, last = (seed, *stream) if stream else (seed, None)
    mixed = head[0] & _MASK64
    for part in head[1:]:
        mixed = (mixed * _KEY_MUL + (part & _MASK64) * _KEY_PART + 1) & _MASK64
    if last is None:
        return _signed(mixed)
    if isinstance(last, torch.Tensor):  # int64 arithmetic wraps modulo 2^64 on every device
        return last.to(torch.int64) * _KEY_PART + _signed(mixed * _KEY_MUL + 1)
    return _signed(mixed * _KEY_MUL + (last & _MASK64) * _KEY_PART + 1)


class CounterRandom:
    """Draws for `rows` (sample indices of one stream) on `device`: each call is a new draw, and
    returns a (len(rows), n) tensor whose row i depends only on (key, rows[i], draw, column)."""

    def __init__(self, key: int | torch.Tensor, rows: torch.Tensor, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.key = key
        self.rows = rows.to(device=self.device, dtype=torch.int64).view(-1, 1)
        self.draws = 0

    @classmethod
    def for_samples(cls, key: int | torch.Tensor, start: int, count: int, device: torch.device | str | None = None) -> "CounterRandom":
        """Draws for samples start .. start+count-1 of the stream `key`."""
        return cls(key, torch.arange(start, start + count, device=device), device)

    @property
    def batch_size(self) -> int:
        return self.rows.shape[0]

    def bits(self, n: int) -> torch.Tensor:
        """(batch, n) int64 of 64 random bits each."""
        self.draws += 1
        columns = torch.arange(n, device=self.device, dtype=torch.int64).view(1, -1)
        if isinstance(self.key, torch.Tensor):  # a key on the device (inside a captured step)
            salt = _mix(self.key ^ _signed(self.draws * _DRAW))
        else:
            salt = _mix_int(self.key ^ (self.draws * _DRAW))  # a host scalar: no transfer per draw
        return _mix(_mix(self.rows * _ROW + salt) + columns * _GOLDEN)

    def integers(self, low: int, high: int, n: int) -> torch.Tensor:
        """(batch, n) int64 uniform in [low, high) (high - low < 2^31; multiply-shift, bias < 2^-32)."""
        span = high - low
        if not 0 < span < 1 << 31:
            raise ValueError(f"integers needs 0 < high - low < 2^31, got [{low}, {high})")
        return low + _shift_right(_shift_right(self.bits(n), 32) * span, 32)

    def uniform(self, n: int) -> torch.Tensor:
        """(batch, n) float64 uniform in [0, 1), 53 bits each (exact on every device)."""
        return _shift_right(self.bits(n), 11).double() * 2.0**-53

    def permutation_keys(self, n: int) -> torch.Tensor:
        """(batch, n) int64 sort keys: a stable argsort of them is a uniform random permutation
        (ties, rare at 63 bits, are broken by position on every device alike)."""
        return _shift_right(self.bits(n), 1)

    def choose(self, n: int, k: int) -> torch.Tensor:
        """(batch, k) int64: k distinct indices of range(n) per row, in random order."""
        return torch.argsort(self.permutation_keys(n), dim=1, stable=True)[:, :k]
