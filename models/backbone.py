"""The shared backbone: embedding -> pre-norm residual blocks (one mixer each) -> norm -> head.

Every model family is this class with a different mixer, so comparisons change one thing only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.base import HeadSpec


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(x.dtype)


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + mlp(norm(x)) when an MLP is given.
    The residual stream is kept in fp32 when `residual_in_fp32` (stable under bf16 autocast)."""

    def __init__(self, d_model: int, mixer: nn.Module, mlp: nn.Module | None = None, residual_in_fp32: bool = True) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = mixer
        self.mlp_norm = RMSNorm(d_model) if mlp is not None else None
        self.mlp = mlp
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, x: Tensor) -> Tensor:
        residual_dtype = torch.float32 if self.residual_in_fp32 else x.dtype
        x = x.to(residual_dtype) + self.mixer(self.norm(x)).to(residual_dtype)
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x)).to(residual_dtype)
        return x


class SequenceModel(nn.Module):
    """Embedding -> `n_layers` blocks -> final RMSNorm -> head.

    `mixer_factory(layer_idx)` builds each block's sequence mixer (Mamba, attention, Hyena);
    `mlp_factory(layer_idx)` an optional MLP. The token head is tied to the embedding when it
    predicts the input vocabulary; the class head pools the last token or the mean.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        mixer_factory: Callable[[int], nn.Module],
        head: HeadSpec,
        mlp_factory: Callable[[int], nn.Module] | None = None,
        residual_in_fp32: bool = True,
        family: str = "",
    ) -> None:
        super().__init__()
        self.family = family
        self.head_spec = head
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, mixer_factory(i), mlp_factory(i) if mlp_factory else None, residual_in_fp32)
            for i in range(n_layers)
        )
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, head.n_outputs, bias=False)
        if head.kind == "token" and head.n_outputs == vocab_size:
            self.head.weight = self.embedding.weight
        self._init_weights(n_layers, residuals_per_layer=2 if mlp_factory else 1)

    def _init_weights(self, n_layers: int, residuals_per_layer: int) -> None:
        """As the Mamba reference: N(0, 0.02) embeddings, zero biases, and output projections that
        write into the residual stream scaled by 1/sqrt(residuals_per_layer * n_layers)."""
        nn.init.normal_(self.embedding.weight, std=0.02)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                    nn.init.zeros_(module.bias)
                if getattr(module, "writes_residual", False):
                    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                    with torch.no_grad():
                        module.weight /= math.sqrt(residuals_per_layer * n_layers)

    def hidden_states(self, input_ids: Tensor) -> Tensor:
        x = self.embedding(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, input_ids: Tensor, last_only: bool = False) -> Tensor:
        """Token head: logits (batch, length, n_out), or (batch, 1, n_out) with `last_only`.
        Class head: logits (batch, n_classes)."""
        h = self.hidden_states(input_ids)
        if self.head_spec.kind == "class":
            pooled = h[:, -1] if self.head_spec.pool == "last" else h.mean(dim=1)
            return self.head(pooled)
        if last_only:
            h = h[:, -1:]
        return self.head(h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices only; never on biases, norms, embeddings of size < 2 dims,
    or parameters flagged `_no_weight_decay` (Mamba's A_log, D and dt bias)."""
    decay, no_decay = [], []
    seen = set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if p.dim() < 2 or getattr(p, "_no_weight_decay", False):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over scored positions (targets != -100), computed in fp32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
