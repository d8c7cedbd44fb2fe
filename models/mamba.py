"""The Mamba block (Gu & Dao 2023, §3.4) on the selective-scan kernel.

in_proj (d -> 2·expand·d) splits into x and the gate z; x passes a causal depthwise conv (width
d_conv) and SiLU; x_proj gives the input-dependent dt (rank dt_rank), B and C; dt_proj lifts dt to
every channel; the selective scan (kernels.selective_scan: Triton on CUDA, PyTorch on CPU) fuses
softplus, discretisation, the D skip and the SiLU(z) gate; out_proj returns to d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench import kernels
from seqbench.kernels import selective_scan
from seqbench.kernels.backend import resolve_backend
from seqbench.models.backbone import Mixer, SequenceModel, autocast_dtype
from seqbench.kernels.layout import mix_channels
from seqbench.models.channel_major import channels_to_tokens, tokens_to_channels
from seqbench.models.transformer import mlp_factory
from seqbench.core.types import HeadSpec


class MambaMixer(Mixer):
    """One selective-SSM mixer: (batch, length, d_model) -> (batch, length, d_model)."""

    graph_step = True  # the decode step has fixed shapes: a CUDA graph can replay it (models.decoding)
    streams = True  # forward(chunk, state) continues from the state: any length in chunks, constant memory

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        bias: bool = False,
        conv_bias: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.backend = backend  # for every kernel the block runs (seqbench.kernels.backend)
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv_weight = nn.Parameter(torch.empty(self.d_inner, d_conv))
        self.conv_bias = nn.Parameter(torch.zeros(self.d_inner)) if conv_bias else None
        bound = 1 / math.sqrt(d_conv)  # PyTorch's Conv1d default for a depthwise kernel
        nn.init.uniform_(self.conv_weight, -bound, bound)
        if self.conv_bias is not None:
            nn.init.uniform_(self.conv_bias, -bound, bound)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)

        # dt_proj: weights so that dt starts at the scale of its init; bias = softplus^-1(dt) with
        # dt log-uniform in [dt_min, dt_max].
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True
        self.dt_proj.bias._no_weight_decay = True

        # S4D-real: A = -(1..N) for every channel, stored as log for positivity.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self.out_proj.writes_residual = True

    def _conv_params(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        return self.conv_weight.to(dtype), None if self.conv_bias is None else self.conv_bias.to(dtype)

    def forward(self, hidden: Tensor, state: dict | None = None) -> Tensor:
        """(b, l, d_model) -> (b, l, d_model). With `state`, start from it (a fresh, zero state is
        the sequence's start) and leave there the conv and SSM states of the last position: prefill
        for decoding, and chunk after chunk the result of one long forward (`streams`).

        Inside, every tensor is channel-major (b, channels, l), the layout the conv and the scan
        read: the projections write it directly (models.channel_major), so nothing is transposed
        or copied between the kernels, forward or backward."""
        dtype = autocast_dtype(hidden.device.type) or hidden.dtype
        cast = lambda w: None if w is None else w.to(dtype)  # noqa: E731  (autocast's job, done once here)
        di, R, N = self.d_inner, self.dt_rank, self.d_state
        x, z = tokens_to_channels(hidden.to(dtype), cast(self.in_proj.weight), (di, di))
        if self.in_proj.bias is not None:
            bias = cast(self.in_proj.bias)
            x, z = x + bias[:di, None], z + bias[di:, None]
        # a state that has seen no token (init_state's, or a reset one) needs no carrying: the conv
        # pads with zeros itself and the scan starts from zero, so the prefill of a prompt skips
        # the concatenation and the slice copy of x (two (b, d_inner, l) copies a layer)
        fresh = state is not None and state.get("fresh", False)
        carried = state is not None and not fresh
        if carried:  # continue from the state's last conv inputs
            x = torch.cat([state["conv"][:, :, 1:].to(x.dtype), x], dim=-1)
            state["conv"].copy_(x[:, :, -self.d_conv:])
        elif fresh:  # the last d_conv inputs (a shorter prompt leaves the state's leading zeros)
            n = min(x.shape[-1], self.d_conv)
            state["conv"][:, :, self.d_conv - n:].copy_(x[:, :, x.shape[-1] - n:])
        if state is None and torch.is_grad_enabled() and self._fused(x):
            from seqbench.kernels.mamba_block import mamba_inner  # imports Triton: only where it runs

            out = mamba_inner(x, z, cast(self.conv_weight), cast(self.conv_bias), cast(self.x_proj.weight),
                              cast(self.dt_proj.weight), self.A_log, self.D, self.dt_proj.bias,
                              cast(self.out_proj.weight), R, N)
        else:
            x = kernels.causal_conv1d(x, cast(self.conv_weight), cast(self.conv_bias), activation="silu",
                                      backend=self.backend)
            if carried:  # the outputs of the state's own inputs are the previous chunk's
                x = x[:, :, self.d_conv - 1:].contiguous()
            x_dbl = mix_channels(cast(self.x_proj.weight), x)  # (b, R + 2N, l) in x's layout
            dt = mix_channels(cast(self.dt_proj.weight), x_dbl[:, :R])  # (b, di, l); bias added in the scan
            y = selective_scan(
                x, dt, self.A_log, x_dbl[:, R:R + N], x_dbl[:, R + N:], A_is_log=True,  # A = -exp(A_log)
                D=self.D, z=z, delta_bias=self.dt_proj.bias, delta_softplus=True,  # read as fp32 by the scan
                return_last_state=state is not None, initial_state=state["ssm"] if carried else None,
                backend=self.backend,
            )
            if state is not None:
                y, last = y
                state["ssm"].copy_(last)
                state["fresh"] = False
            out = channels_to_tokens(y, cast(self.out_proj.weight))
        return out if self.out_proj.bias is None else out + cast(self.out_proj.bias)

    def _fused(self, x: Tensor) -> bool:
        """Training on the Triton scan goes through the one-node block (kernels.mamba_block)."""
        return resolve_backend(self.backend, x.device) == "triton" and x.dtype != torch.float64

    def init_state(self, batch_size: int, max_len: int = 0, device=None, dtype=None) -> dict:
        """Decoding state: the conv's last d_conv inputs and the SSM state (fp32); size does not
        grow with the sequence, which is why Mamba decodes in constant time per token."""
        dtype = dtype or self.in_proj.weight.dtype
        return {"conv": torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype),
                "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32),
                "fresh": True}  # no token seen yet (`forward` and `step` clear it)

    def step(self, hidden: Tensor, state: dict) -> Tensor:
        """One token: (b, d_model) -> (b, d_model), updating the conv and SSM states in place."""
        state["fresh"] = False
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b, d_inner) each, row slices: read in place
        x = kernels.causal_conv1d_update(x, state["conv"], *self._conv_params(x.dtype), activation="silu",
                                         backend=self.backend)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)
        y = kernels.selective_state_update(
            state["ssm"], x, dt, self.A_log, B, C, D=self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True,
            A_is_log=True, backend=self.backend,
        )
        return self.out_proj(y)


def mamba_mixer_reference(mixer: MambaMixer, hidden: Tensor) -> Tensor:
    """The same block in plain PyTorch, token-major with F.linear and the reference conv and
    scan: the oracle the channel-major forward is tested against (values and every gradient)."""
    from seqbench.kernels.conv.reference import causal_conv1d_ref
    from seqbench.kernels.scan.reference import selective_scan_ref

    R, N = mixer.dt_rank, mixer.d_state
    x, z = mixer.in_proj(hidden).chunk(2, dim=-1)  # (b, l, di) each
    x = causal_conv1d_ref(x.transpose(1, 2), mixer.conv_weight.to(x.dtype),
                          None if mixer.conv_bias is None else mixer.conv_bias.to(x.dtype), "silu")
    dt, B, C = torch.split(mixer.x_proj(x.transpose(1, 2)), [R, N, N], dim=-1)
    dt = F.linear(dt, mixer.dt_proj.weight)
    y = selective_scan_ref(x, dt.transpose(1, 2), -torch.exp(mixer.A_log.float()), B.transpose(1, 2),
                           C.transpose(1, 2), D=mixer.D.float(), z=z.transpose(1, 2),
                           delta_bias=mixer.dt_proj.bias.float(), delta_softplus=True)
    return mixer.out_proj(y.transpose(1, 2))


def build_mamba(
    vocab_size: int,
    head: HeadSpec,
    d_model: int = 64,
    n_layers: int = 2,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    residual_in_fp32: bool = True,
    backend: str = "auto",
    mlp: str = "none",
) -> SequenceModel:
    """A Mamba language/classification model on the shared backbone: Mamba blocks only, as the
    paper's (`mlp` none), or each followed by a gelu / swiglu MLP (MAD's blocks pair every mixer
    with a SwiGLU). `backend` picks the implementation of every kernel the model runs (scan,
    conv, decode step, norm): auto (Triton on CUDA), triton, reference."""
    return SequenceModel(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        mixer_factory=lambda i: MambaMixer(d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                                           backend=backend),
        head=head,
        mlp_factory=mlp_factory(d_model, mlp),
        residual_in_fp32=residual_in_fp32,
        family="mamba",
        backend=backend,
    )
