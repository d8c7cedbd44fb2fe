"""Token-by-token decoding with the step captured in a CUDA graph.

At small batches a decode step is hundreds of tiny kernels launched one by one from Python, and
the launches, not the GPU, set the speed. Captured once, the step replays as one graph per token.
Possible where a step has fixed shapes and no host decisions: Mamba (constant-size conv and SSM
state, updated in place) and Transformers with rotary positions (the KV cache is written at a
device-side position and attention reads the whole cache through a mask). Learned absolute
positions and Hyena (a growing history) decode eagerly. `held_step` keeps each model's newest
capture, with its state, for the next call of the same shape.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
from torch import Tensor


def graph_decodable(model) -> bool:
    """Whether `model`'s decode step can be captured: every mixer says so (attention only with
    rotary positions; learned position tables are indexed from the host)."""
    return all(block.mixer.graph_step for block in model.blocks)


@contextmanager
def _uncached_autocast():
    """Autocast as the caller has it, without its weight-cast cache (whose tensors would be freed
    under a captured graph)."""
    if torch.is_autocast_enabled("cuda"):
        with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False):
            yield
    else:
        yield


class GraphedStep:
    """`model.step` on a fresh decoding `state`, captured; call it per token after the prefill.

    Capture happens before the prompt is seen: two warm-up steps (they compile the Triton kernels)
    run on the new state, which is then zeroed, so the prefill that follows writes into the very
    tensors the graph reads."""

    def __init__(self, model, state: list, batch_size: int, device: torch.device) -> None:
        if not graph_decodable(model):
            raise ValueError(f"{model.family} cannot decode under a CUDA graph; decode eagerly")
        self.state = state
        # host-side values (attention's "pos") as they start, for reset()
        self._host_start = [{k: v for k, v in layer.items() if not isinstance(v, Tensor)} for layer in state]
        for layer in state:
            if "k" in layer:  # attention: the position lives on the device
                layer["pos_t"] = torch.zeros(1, dtype=torch.long, device=device)
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), _uncached_autocast():
            for _ in range(2):
                model.step(self.tokens, state)
        torch.cuda.current_stream(device).wait_stream(side)
        self._zero()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), _uncached_autocast():
            self.logits, _ = model.step(self.tokens, state)
        for layer in state:  # zeroed above and capturing runs nothing: a state that has seen no token
            if "fresh" in layer:
                layer["fresh"] = True

    def _zero(self) -> None:
        for layer in self.state:
            for value in layer.values():
                if isinstance(value, Tensor):
                    value.zero_()

    def reset(self) -> None:
        """Back to an empty state (zeroed tensors, host positions at their start), for a new prompt."""
        self._zero()
        for layer, start in zip(self.state, self._host_start):
            layer.update(start)

    def after_prefill(self) -> None:
        """Point the device-side positions at the end of the prompt the prefill just wrote."""
        for layer in self.state:
            if "pos_t" in layer:
                layer["pos_t"].fill_(layer["pos"])

    def __call__(self, tokens: Tensor) -> Tensor:
        """Logits (b, n_out) for `tokens` (b,); the returned tensor is overwritten by the next call."""
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


# The newest captured step of each model, kept across `generate` calls as mamba_ssm's decoding
# keeps its graphs: capturing costs two eager steps and the capture (40-125 ms at 130m-1.4b on the
# H200), more than a hundred replays at batch 1. Weak keys: the entry goes with the model.
_held: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_key(model) -> tuple:
    # the graph reads parameters and buffers at their addresses; a move (model.to) changes them
    return tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))


def held_step(model, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype | None) -> GraphedStep:
    """The model's captured decode step for this batch, state length and dtype, reset for a new
    prompt: reused when the last call had the same shape (and the weights have not moved), else
    captured anew on a fresh state (the previous one is freed first). Its `state` is the decoding
    state to prefill into."""
    from seqbench.models.backbone import autocast_dtype

    key = (batch_size, max_len, device, dtype, autocast_dtype("cuda"), model.training, _weights_key(model))
    step = _held.get(model)
    if step is not None and step.key == key:
        step.reset()
        return step
    _held.pop(model, None)
    step = GraphedStep(model, model.init_state(batch_size, max_len=max_len, device=device, dtype=dtype),
                       batch_size, device)
    step.key = key
    _held[model] = step
    return step


def release_held_step(model) -> None:
    """Free the decode step (and its decoding state: a KV cache can be large) kept for `model`."""
    _held.pop(model, None)
