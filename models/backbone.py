"""The shared backbone: embedding -> pre-norm residual blocks (one mixer each) -> norm -> head.

Every model family is this class with a different mixer, so comparisons change one thing only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.kernels.norm import add_rms_norm
from seqbench.core.types import HeadSpec


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """Autocast's dtype when autocast is on for `device_type`, else None."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class Mixer(nn.Module):
    """What a block's sequence mixer is (subclass it for a new family): `forward(hidden, state=None)`
    maps (b, l, d) to (b, l, d) and, given a decoding state, fills it (prefill); `init_state`
    makes that state; `step(hidden, state)` decodes one token (b, d) -> (b, d), updating it.
    `graph_step` says whether the step has fixed shapes and no host decisions, so that a CUDA
    graph can replay it (models.decoding). `streams` says whether `forward(hidden, state)` also
    continues from a filled state, with a state of constant size: then a sequence run chunk after
    chunk gives the result of one forward over it, in the memory of one chunk (SequenceModel.stream)."""

    graph_step: bool = False
    streams: bool = False

    def init_state(self, batch_size: int, max_len: int = 0, device=None, dtype=None) -> dict:
        raise NotImplementedError(f"{type(self).__name__} does not decode step by step")

    def step(self, hidden: Tensor, state: dict) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not decode step by step")

    def state_size(self, length: int) -> int:
        """Numbers the layer keeps per sequence after `length` positions (its decoding state:
        constant for Mamba, a KV cache growing with the length for attention)."""
        state = self.init_state(1, length, device="meta")
        return sum(t.numel() for t in state.values() if isinstance(t, Tensor))


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (no bias), computed in fp32; the output takes
    the weight's dtype (so a bf16 model's fp32 residual stream feeds its layers bf16)."""

    def __init__(self, dim: int, eps: float = 1e-5, backend: str = "auto") -> None:
        super().__init__()
        self.eps = eps
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.add(x, None)[0]

    def add(self, hidden: Tensor, residual: Tensor | None, residual_in_fp32: bool = True) -> tuple[Tensor, Tensor]:
        """(norm(residual + hidden), residual + hidden) in one fused kernel (kernels.rmsnorm; the
        reference on CPU). The sum is kept in fp32 when `residual_in_fp32`; the normed output
        is in autocast's dtype when autocast is on (it feeds a projection), else the weight's."""
        out_dtype = autocast_dtype(hidden.device.type) or self.weight.dtype
        return add_rms_norm(hidden, residual, self.weight, self.eps, residual_in_fp32, out_dtype, self.backend)


class Block(nn.Module):
    """Pre-norm residual block: residual += hidden; hidden = mixer(norm(residual)); then the
    same with the MLP when one is given. It carries (hidden, residual) as the Mamba reference
    does, so each residual add is fused into the norm that follows it (one kernel each way);
    the residual stream is kept in fp32 when `residual_in_fp32` (stable under bf16 autocast)."""

    def __init__(self, d_model: int, mixer: nn.Module, mlp: nn.Module | None = None, residual_in_fp32: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        self.norm = RMSNorm(d_model, backend=backend)
        self.mixer = mixer
        self.mlp_norm = RMSNorm(d_model, backend=backend) if mlp is not None else None
        self.mlp = mlp
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, hidden: Tensor, residual: Tensor | None, state: dict | None = None) -> tuple[Tensor, Tensor]:
        """hidden, residual (b, l, d) -> the next block's (hidden, residual); residual None at the
        first block. With `state` (from the mixer's init_state) the mixer also records what
        decoding needs (prefill)."""
        mix = self.mixer if state is None else (lambda normed: self.mixer(normed, state=state))
        return self._residual(hidden, residual, mix)

    def step(self, hidden: Tensor, residual: Tensor | None, state: dict) -> tuple[Tensor, Tensor]:
        """One token, (b, d) each: the same computation as `forward` at the next position."""
        return self._residual(hidden, residual, lambda normed: self.mixer.step(normed, state))

    def _residual(self, hidden: Tensor, residual: Tensor | None, mix: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        normed, residual = self.norm.add(hidden, residual, self.residual_in_fp32)
        hidden = mix(normed)
        if self.mlp is not None:
            normed, residual = self.mlp_norm.add(hidden, residual, self.residual_in_fp32)
            hidden = self.mlp(normed)
        return hidden, residual


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
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.family = family
        self.residual_in_fp32 = residual_in_fp32
        self.head_spec = head
        self.max_seq_len: int | None = None  # set by families that cannot take any length
        self.embedding = nn.Embedding(vocab_size, d_model)
        mixers = [mixer_factory(i) for i in range(n_layers)]
        for mixer in mixers:
            if not isinstance(mixer, Mixer):
                raise TypeError(f"a mixer must subclass seqbench.models.backbone.Mixer, got {type(mixer).__name__}")
        self.blocks = nn.ModuleList(
            Block(d_model, mixers[i], mlp_factory(i) if mlp_factory else None, residual_in_fp32, backend)
            for i in range(n_layers)
        )
        self.norm = RMSNorm(d_model, backend=backend)
        self.head = nn.Linear(d_model, head.n_outputs, bias=False)
        if head.kind == "token" and head.n_outputs == vocab_size:
            self.head.weight = self.embedding.weight
        if head.kind == "reconstruct":  # MAD's decoder: the last state -> every position
            self.decoder = nn.Sequential(RMSNorm(d_model, backend=backend), nn.Linear(d_model, d_model), nn.GELU(),
                                         RMSNorm(d_model, backend=backend), nn.Linear(d_model, d_model), nn.GELU(),
                                         RMSNorm(d_model, backend=backend))
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

    def embed(self, input_ids: Tensor, offset: int = 0) -> Tensor:
        """Token embeddings of ids at positions offset.. (families with position tables override)."""
        return self.embedding(input_ids)

    def hidden_states(self, input_ids: Tensor, states: list | None = None) -> Tensor:
        hidden, residual = self.embed(input_ids), None
        for i, block in enumerate(self.blocks):
            hidden, residual = block(hidden, residual, None if states is None else states[i])
        return self.final_norm(hidden, residual)

    def final_norm(self, hidden: Tensor, residual: Tensor | None) -> Tensor:
        """The last residual add fused with the final norm."""
        return self.norm.add(hidden, residual, self.residual_in_fp32)[0]

    def forward(self, input_ids: Tensor, last_only: bool = False) -> Tensor:
        """Token head: logits (batch, length, n_out), or (batch, 1, n_out) with `last_only`.
        Class head: logits (batch, n_classes)."""
        h = self.hidden_states(input_ids)
        return self._head(h, last_only)

    def _head(self, h: Tensor, last_only: bool) -> Tensor:
        if self.head_spec.kind == "reconstruct":  # every position from the last one's state alone
            positions = sincos_positions(h.shape[1], h.shape[2], h.device, h.dtype)
            return self.head(self.decoder(h[:, -1:] + positions[None]))
        if self.head_spec.kind == "class":
            pooled = h[:, -1] if self.head_spec.pool == "last" else h.mean(dim=1)
            return self.head(pooled)
        if last_only:
            h = h[:, -1:]
        return self.head(h)

    # --- decoding -------------------------------------------------------------------------
    def init_state(self, batch_size: int, max_len: int = 4096, device=None, dtype=None) -> list:
        """Per-layer decoding state: Mamba's conv and SSM states, attention's KV cache (room for
        `max_len` positions), Hyena's token history."""
        device = device or self.embedding.weight.device
        return [block.mixer.init_state(batch_size, max_len, device=device, dtype=dtype) for block in self.blocks]

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, state: list) -> Tensor:
        """Run the prompt in parallel, filling `state`; returns the last position's logits (b, n_out)."""
        h = self.hidden_states(input_ids, states=state)
        return self._head(h, last_only=True)[:, -1]

    @torch.no_grad()
    def step(self, tokens: Tensor, state: list) -> tuple[Tensor, list]:
        """Next-token logits (b, n_out) for `tokens` (b,) given the state of the positions before."""
        offset = _state_position(state)
        hidden, residual = self.embed(tokens[:, None], offset=offset)[:, 0], None
        for block, layer_state in zip(self.blocks, state):
            hidden, residual = block.step(hidden, residual, layer_state)
        return self.head(self.final_norm(hidden, residual)), state

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, cuda_graph: bool = False) -> Tensor:
        """Sample `max_new_tokens` after `prompt` (b, p); temperature 0 is greedy. Returns (b, p + new).
        `cuda_graph` replays a captured decode step (models.decoding) where the family allows it;
        the step and its state stay with the model for the next call of the same shape
        (`seqbench.models.decoding.release_held_step` frees them).
        The decoding state takes autocast's dtype when autocast is on (half the KV cache)."""
        if self.head_spec.kind != "token":
            raise ValueError("generate needs a next-token head")
        device = prompt.device
        dtype = autocast_dtype(device.type)
        max_len = prompt.shape[1] + max_new_tokens
        graphed = None
        if cuda_graph and device.type == "cuda" and max_new_tokens > 1:
            from seqbench.models.decoding import graph_decodable, held_step

            if graph_decodable(self):  # else eager: absolute position tables, Hyena's growing history
                graphed = held_step(self, prompt.shape[0], max_len, device, dtype)
        state = graphed.state if graphed is not None else self.init_state(prompt.shape[0], max_len=max_len,
                                                                          device=device, dtype=dtype)
        logits = self.prefill(prompt, state)
        if graphed is not None:
            graphed.after_prefill()
        out = [prompt]
        for i in range(max_new_tokens):
            token = sample(logits, temperature, top_k, generator)
            out.append(token[:, None])
            if i + 1 < max_new_tokens:
                logits = graphed(token) if graphed is not None else self.step(token, state)[0]
        return torch.cat(out, dim=1)

    @property
    def graph_decodable(self) -> bool:
        """Whether the decode step can be captured as a CUDA graph (models.decoding)."""
        from seqbench.models.decoding import graph_decodable

        return graph_decodable(self)

    def release_decoding(self) -> None:
        """Free the captured decode step and its decoding state kept with this model."""
        from seqbench.models.decoding import release_held_step

        release_held_step(self)

    @property
    def streams(self) -> bool:
        """Every mixer continues from a constant-size state (Mixer.streams): `stream` works."""
        return self.head_spec.kind != "reconstruct" and all(block.mixer.streams for block in self.blocks)

    @torch.no_grad()
    def stream(self, input_ids: Tensor, chunk: int) -> Iterator[tuple[int, Tensor]]:
        """`forward(input_ids)` computed `chunk` positions at a time, the state carried across
        chunk boundaries, so the memory is that of one chunk whatever the length. A token head
        yields (start, logits of positions start .. start + chunk - 1) per chunk; a class head
        yields (0, logits) once, pooled over the whole sequence."""
        if not self.streams:
            raise ValueError(f"{self.family or type(self).__name__} does not stream: a mixer's state grows with the sequence")
        batch, length = input_ids.shape
        state = self.init_state(batch, 0, device=input_ids.device)
        pooled = None
        for start in range(0, length, chunk):
            h = self.hidden_states(input_ids[:, start:start + chunk], states=state)
            if self.head_spec.kind != "class":
                yield start, self.head(h)
            elif self.head_spec.pool == "last":
                pooled = h[:, -1]
            else:
                part = h.float().sum(dim=1)
                pooled = part if pooled is None else pooled + part
        if self.head_spec.kind == "class":
            if self.head_spec.pool != "last":
                pooled = (pooled / length).to(h.dtype)
            yield 0, self.head(pooled)

    def state_size(self, length: int) -> int | None:
        """Numbers the model keeps per sequence after `length` positions, over its layers (MAD
        compares recurrent mixers at equal state); None where a mixer does not say."""
        try:
            return sum(block.mixer.state_size(length) for block in self.blocks)
        except NotImplementedError:
            return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def sincos_positions(length: int, dim: int, device=None, dtype=None) -> Tensor:
    """Fixed sine-cosine position codes (length, dim): half the channels sines, half cosines of
    position / 10000^(2i/dim)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(1, half))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * frequencies[None]
    codes = torch.cat([angles.sin(), angles.cos()], dim=1)
    if codes.shape[1] < dim:
        codes = F.pad(codes, (0, dim - codes.shape[1]))
    return codes.to(dtype or torch.float32)


def _state_position(state: list) -> int:
    """How many positions the decoding state has seen (for position tables)."""
    for layer in state:
        if isinstance(layer, dict) and "pos" in layer:
            return int(layer["pos"])
    return 0


def sample(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Draw one id per row from logits (b, v); temperature 0 takes the argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


def parameter_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """AdamW groups: decay on matrices only; never on biases, norms, 1-d parameters or those
    flagged `_no_weight_decay` (Mamba's A_log, D and dt bias). A parameter with `_lr` (Hyena's
    filter) gets its own group whose `lr_ratio` scales the schedule to that learning rate."""
    groups: dict[tuple[float, float], list] = {}
    seen = set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        decays = p.dim() >= 2 and not getattr(p, "_no_weight_decay", False)
        ratio = getattr(p, "_lr", lr) / lr if lr and hasattr(p, "_lr") else 1.0
        groups.setdefault((weight_decay if decays else 0.0, ratio), []).append(p)
    return [{"params": params, "weight_decay": wd, "lr_ratio": ratio} for (wd, ratio), params in groups.items()]


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over scored positions (targets != -100), computed in fp32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
