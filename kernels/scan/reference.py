"""Plain PyTorch selective scan: the CPU path and the test oracle.

Layout and semantics follow the selective-scan contract (kernels/CONTRACT.md):

    dt_t  = softplus(delta_t + delta_bias)  if delta_softplus else  delta_t + delta_bias
    h_t   = exp(dt_t * A) * h_{t-1} + (dt_t * u_t) * B_t          per channel d, per state n
    y_t   = <h_t, C_t> + D * u_t
    out_t = y_t * silu(z_t)                                        if z is given

Shapes: u, delta, z (batch, dim, length); A (dim, N); B, C (batch, N, length) or grouped
(batch, groups, N, length) with dim divisible by groups; D, delta_bias (dim,); states
(batch, dim, N) in fp32. Everything is computed in fp32 (fp64 when u is fp64) and the output is
cast back to u's dtype.

Two scans live here:
- `selective_scan_ref`: the sequential loop over time, the oracle the kernels are tested against.
- `selective_scan_chunked`: the same function as a two-level (within chunk, across chunks) scan
  vectorised over chunks; it runs the small models on CPU at a usable speed and bounds memory by
  processing the sequence in blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "selective_scan_ref",
    "selective_scan_chunked",
]


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _discretize_dt(
    delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> Tensor:
    """dt = softplus(delta + bias) (threshold 20) or delta + bias, in `dtype`. Works for any
    leading shape as long as the channel axis is the one before the last (or last, for steps)."""
    dt = delta.to(dtype)
    if delta_bias is not None:
        bias = delta_bias.to(dtype)
        dt = dt + (bias[:, None] if dt.dim() == 3 else bias)
    if delta_softplus:
        dt = F.softplus(dt, beta=1.0, threshold=20.0)
    return dt


def _per_channel(BC: Tensor, dim: int) -> Tensor:
    """(b, N, l) or (b, g, N, l) -> (b, dim, N, l) by repeating each group over its channels."""
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(BC.shape[0], dim, BC.shape[1], BC.shape[2])
    groups = BC.shape[1]
    return BC.repeat_interleave(dim // groups, dim=1)


def _finish(
    y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype, out_dtype: torch.dtype
) -> Tensor:
    if D is not None:
        y = y + D.to(dtype)[:, None] * u.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(out_dtype)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential selective scan, one time step after the other (the oracle)."""
    dtype = _compute_dtype(u)
    batch, dim, length = u.shape
    dt = _discretize_dt(delta, delta_bias, delta_softplus, dtype)
    uf = u.to(dtype)
    Af = A.to(dtype)
    Bd = _per_channel(B.to(dtype), dim)
    Cd = _per_channel(C.to(dtype), dim)
    if initial_state is None:
        h = u.new_zeros((batch, dim, A.shape[1]), dtype=dtype)
    else:
        h = initial_state.to(dtype)
    ys = []
    for t in range(length):
        dt_t = dt[:, :, t, None]
        h = torch.exp(dt_t * Af) * h + (dt_t * uf[:, :, t, None]) * Bd[:, :, :, t]
        ys.append((h * Cd[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else uf.new_zeros((batch, dim, 0))
    out = _finish(y, u, D, z, dtype, u.dtype)
    return (out, h.float() if dtype != torch.float64 else h) if return_last_state else out


class _Layout:
    """Reshapes between (b, d, l) / (b, g, N, l) and the chunked layout of the CPU scan,
    (chunk, b, g, chunks, dg, N): time-within-chunk leads, so each step of a loop is one
    contiguous slice holding every chunk, and (dg, N) trail, so reductions are matmuls."""

    def __init__(self, b: int, g: int, dg: int, n: int, length: int, chunk: int) -> None:
        self.b, self.g, self.dg, self.n, self.chunk = b, g, dg, n, chunk
        self.chunks = -(-length // chunk)
        self.pad = self.chunks * chunk - length

    def channels(self, x: Tensor) -> Tensor:
        """(b, d, l) -> (chunk, b, g, chunks, dg); padding is zero (dt = 0: the state passes through)."""
        x = F.pad(x, (0, self.pad)) if self.pad else x
        return x.view(self.b, self.g, self.dg, self.chunks, self.chunk).permute(4, 0, 1, 3, 2).contiguous()

    def states(self, x: Tensor) -> Tensor:
        """(b, g, N, l) -> (chunk, b, g, chunks, 1, N)."""
        x = F.pad(x, (0, self.pad)) if self.pad else x
        return x.view(self.b, self.g, self.n, self.chunks, self.chunk).permute(4, 0, 1, 3, 2).unsqueeze(4).contiguous()

    def channels_back(self, x: Tensor) -> Tensor:
        """(chunk, b, g, chunks, dg) -> (b, d, l)."""
        full = x.permute(1, 2, 4, 3, 0).reshape(self.b, self.g * self.dg, self.chunks * self.chunk)
        return full[:, :, : full.shape[-1] - self.pad]

    def states_back(self, x: Tensor) -> Tensor:
        """(chunk, b, g, chunks, 1, N) -> (b, g, N, l)."""
        full = x.squeeze(4).permute(1, 2, 4, 3, 0).reshape(self.b, self.g, self.n, self.chunks * self.chunk)
        return full[..., : full.shape[-1] - self.pad]


def _block_states(dt: Tensor, u: Tensor, A: Tensor, B: Tensor, h0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """States of one block in the chunked layout. dt, u (T, b, g, c, dg); A (g, dg, N);
    B (T, b, g, c, 1, N); h0 (b, g, dg, N). Returns decay and states h_t (T, b, g, c, dg, N), the
    state before each chunk (b, g, c, dg, N) and the block's last state (b, g, dg, N).

    Within-chunk states are first computed from zero for all chunks at once (a loop over T),
    then the chunk-start states are carried across chunks (a loop over c) and added back
    through the cumulative decay."""
    A = A[None, None, :, None]
    decay = torch.exp(dt.unsqueeze(-1) * A)
    states = (dt * u).unsqueeze(-1) * B
    for t in range(1, states.shape[0]):
        states[t].addcmul_(decay[t], states[t - 1])
    # prod of decay over [chunk start, t] = exp(A * sum of dt): one pass, no cumprod
    cum_decay = torch.exp(torch.cumsum(dt, dim=0).unsqueeze(-1) * A)
    starts = torch.empty_like(states[0])
    h = h0
    for c in range(states.shape[3]):
        starts[:, :, c] = h
        h = torch.addcmul(states[-1][:, :, c], cum_decay[-1][:, :, c], h)
    states.addcmul_(cum_decay, starts)
    return decay, states, starts, h


class _ChunkedScan(torch.autograd.Function):
    """Core scan y_t = <h_t, C_t>, h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, with a hand-written
    backward. Blocks of the sequence are scanned one after the other (the state carried
    between them); only the block-start states are kept, and backward recomputes each block."""

    @staticmethod
    def forward(ctx, dt, u, A, B, C, h0, block: int, chunk: int | None):
        b, d, length = u.shape
        g, n = B.shape[1], B.shape[2]
        Ag = A.view(g, d // g, n)
        ys, block_starts, h = [], [], h0.view(b, g, d // g, n)
        for lo in range(0, length, block):
            hi = min(length, lo + block)
            lay = _Layout(b, g, d // g, n, hi - lo, chunk or max(1, int(math.sqrt(hi - lo))))
            block_starts.append(h)
            _, states, _, h = _block_states(lay.channels(dt[:, :, lo:hi]), lay.channels(u[:, :, lo:hi]), Ag,
                                            lay.states(B[..., lo:hi]), h)
            y = torch.matmul(states, lay.states(C[..., lo:hi]).transpose(-1, -2)).squeeze(-1)
            ys.append(lay.channels_back(y))
        ctx.save_for_backward(dt, u, A, B, C, *block_starts)
        ctx.block, ctx.chunk = block, chunk
        y = torch.cat(ys, dim=-1) if ys else u.new_zeros((b, d, 0))
        return y, h.reshape(b, d, n)

    @staticmethod
    def backward(ctx, dy, dh_last):
        dt, u, A, B, C, *block_starts = ctx.saved_tensors
        b, d, length = u.shape
        g, n = B.shape[1], B.shape[2]
        dg = d // g
        Ag = A.view(g, dg, n)
        ddt, du = torch.zeros_like(dt), torch.zeros_like(u)
        dA, dB, dC = torch.zeros_like(Ag), torch.zeros_like(B), torch.zeros_like(C)
        dy = dy if dy is not None else torch.zeros_like(u)
        dh = (dh_last if dh_last is not None else torch.zeros(b, d, n, dtype=u.dtype)).reshape(b, g, dg, n)
        bounds = list(range(0, length, ctx.block))
        for index in reversed(range(len(bounds))):
            lo, hi = bounds[index], min(length, bounds[index] + ctx.block)
            lay = _Layout(b, g, dg, n, hi - lo, ctx.chunk or max(1, int(math.sqrt(hi - lo))))
            dt_l, u_l = lay.channels(dt[:, :, lo:hi]), lay.channels(u[:, :, lo:hi])
            B_l, C_l = lay.states(B[..., lo:hi]), lay.states(C[..., lo:hi])
            dy_l = lay.channels(dy[:, :, lo:hi])
            decay, states, starts, _ = _block_states(dt_l, u_l, Ag, B_l, block_starts[index])

            # G_t = dL/dh_t: dy_t C_t plus what flows back from h_{t+1} through decay_{t+1}.
            grad = dy_l.unsqueeze(-1) * C_l
            for t in range(grad.shape[0] - 2, -1, -1):
                grad[t].addcmul_(decay[t + 1], grad[t + 1])
            # carry[t] = prod of decay over (t, chunk end] = exp(A * sum of dt over (t, end]):
            # how a gradient at the chunk's end reaches t.
            dt_after = dt_l.sum(0, keepdim=True) - torch.cumsum(dt_l, dim=0)
            carry = torch.exp(dt_after.unsqueeze(-1) * Ag[None, None, :, None])
            ends = torch.empty_like(starts)
            for c in reversed(range(lay.chunks)):
                ends[:, :, c] = dh
                dh = decay[0][:, :, c] * torch.addcmul(grad[0][:, :, c], carry[0][:, :, c], dh)
            grad.addcmul_(carry, ends)

            prev = torch.cat([starts.unsqueeze(0), states[:-1]], dim=0)  # h_{t-1}
            q = prev.mul_(decay).mul_(grad)  # dL/d(dt_t A) per state
            dtu = dt_l * u_l
            d_dtu = torch.matmul(grad, B_l.transpose(-1, -2)).squeeze(-1)
            ddt_l = (q * Ag[None, None, :, None]).sum(-1) + d_dtu * u_l
            dA += q.mul_(dt_l.unsqueeze(-1)).sum((0, 1, 3))
            dB[..., lo:hi] = lay.states_back(torch.matmul(dtu.unsqueeze(-2), grad))
            dC[..., lo:hi] = lay.states_back(torch.matmul(dy_l.unsqueeze(-2), states))
            ddt[:, :, lo:hi] = lay.channels_back(ddt_l)
            du[:, :, lo:hi] = lay.channels_back(d_dtu * dt_l)
        return ddt, du, dA.view(d, n), dB, dC, dh.reshape(b, d, n), None, None


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
    chunk: int | None = None,
    block_elements: int = 1 << 23,
) -> Tensor | tuple[Tensor, Tensor]:
    """Vectorised two-level selective scan (the CPU path of `backend="auto"`).

    The sequence is processed in blocks of about `block_elements / (batch * dim * N)` steps (so
    length 2^20 runs in bounded memory) with the state carried between blocks; each block is
    split into chunks of about sqrt(block length) steps. Backward is written by hand and
    recomputes each block from its start state.
    """
    dtype = _compute_dtype(u)
    batch, dim, length = u.shape
    n = A.shape[1]
    dt = _discretize_dt(delta, delta_bias, delta_softplus, dtype)
    Bg = (B if B.dim() == 4 else B.unsqueeze(1)).to(dtype)
    Cg = (C if C.dim() == 4 else C.unsqueeze(1)).to(dtype)
    h0 = u.new_zeros((batch, dim, n), dtype=dtype) if initial_state is None else initial_state.to(dtype)
    block = max(1, min(max(length, 1), block_elements // max(1, batch * dim * n)))
    y, h = _ChunkedScan.apply(dt.contiguous(), u.to(dtype).contiguous(), A.to(dtype).contiguous(),
                              Bg.contiguous(), Cg.contiguous(), h0, block, chunk)
    out = _finish(y, u, D, z, dtype, u.dtype)
    if not return_last_state:
        return out
    return out, (h if dtype == torch.float64 else h.float())
