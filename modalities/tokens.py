"""Plain integer tokens: the modality of the synthetic tasks, whose data is already ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class TokenModality:
    """Ids 0..vocab_size-1 with no conversion; the task that generates them sets the vocabulary."""

    vocab_size: int = 16
    specials: dict[str, int] = field(default_factory=dict)
    name: str = "tokens"

    def encode(self, data: Sequence[int]) -> list[int]:
        ids = [int(i) for i in data]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} outside 0..{self.vocab_size - 1}")
        return ids

    def decode(self, ids: Sequence[int]) -> list[int]:
        return [int(i) for i in ids]
