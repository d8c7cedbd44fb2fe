"""The Modality protocol: how one kind of data becomes integer tokens and back."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Modality(Protocol):
    """A kind of data (text bytes, mu-law audio, DNA bases, or plain synthetic tokens).

    `vocab_size` counts every id the embedding must hold, specials included; `specials` names
    the special ids (e.g. {"pad": 0}). `encode` maps raw data to ids, `decode` maps ids back.
    """

    name: str
    vocab_size: int
    specials: dict[str, int]

    def encode(self, data) -> list[int]: ...

    def decode(self, ids) -> object: ...
