"""The types tasks, models and the runner exchange: a batch of ids and targets, and what a
model's head outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Batch:
    """Token ids (batch, length) int64 and targets: (batch, length) with IGNORE_INDEX where no
    prediction is scored (token head), or (batch,) class ids (class head)."""

    inputs: Tensor
    targets: Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


@dataclass(frozen=True)
class HeadSpec:
    """What the model's head outputs: next-token logits over `n_outputs` ids at each position
    ("token"), one distribution over `n_outputs` classes per sequence ("class", pooled), or logits
    over `n_outputs` ids at every position decoded from the last position's state alone
    ("reconstruct": MAD's compression task)."""

    kind: Literal["token", "class", "reconstruct"]
    n_outputs: int
    pool: Literal["last", "mean"] = "last"
