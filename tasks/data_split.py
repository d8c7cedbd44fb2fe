"""Train / held-out splits of a loaded TokenStore, shared by the data-backed tasks."""

from __future__ import annotations

import numpy as np

from seqbench.modalities.base import TokenStore

HELD_OUT_EVERY = 20  # with many records: every 20th record is held out
HELD_OUT_FRACTION = 0.2  # with few records: the last 20% of each record is held out


def split_store(store: TokenStore, held_out: float = HELD_OUT_FRACTION) -> tuple[TokenStore, TokenStore]:
    """(train, held-out). Many records (>= 20: clips, documents): whole records are held out, every
    20th. Few records (genomes, one text file): the last `held_out` fraction (20%) of every record
    is held out, so both splits see every record (every class) without sharing a position."""
    if store.n_records >= HELD_OUT_EVERY:
        index = np.arange(store.n_records)
        held = index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        return store.select(index[~held]), store.select(index[held])
    return store.portion(0.0, 1.0 - held_out), store.portion(1.0 - held_out, 1.0)
