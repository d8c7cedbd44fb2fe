"""Launch Triton kernels without Triton's per-call binding work.

`kernel[grid](...)` binds every argument, specialises it, hashes a cache key from the result
and builds launch metadata on each call. On the H200's host that costs ~17 us for a kernel with
5 arguments and ~28 us for one with 26 (kernels/NOTES.md, variant 8). A short forward+backward of
the scan launches six such kernels, so this overhead, not the GPU, set its time.

`launch` keys the compiled kernel on what Triton specialises (argument dtypes, 16-byte alignment
of pointers; integers equal to 1, divisible by 16, or wider than 32 bits), the constexprs and
the launch options. The first call with a new key goes through Triton and is compiled as usual;
later calls go straight to the compiled kernel's C launcher. Under TRITON_INTERPRET=1, or while a
Triton launch hook is installed (profilers), every call takes Triton's own path.

`Bound` goes one step further for a caller that already knows its call's signature (the scan
keys a plan on every input's shape, stride, dtype and alignment): the grid, integer arguments and
constexprs are fixed once, and a call passes only its tensors; no key is built at all.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_I32 = (-(1 << 31), (1 << 31) - 1)
_compiled: dict[tuple, object] = {}


def _arg_key(arg: object) -> object:
    """What Triton's specialisation depends on for one runtime argument."""
    if isinstance(arg, Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, bool) or arg is None:
        return arg
    if isinstance(arg, int):
        return arg == 1, arg % 16 == 0, _I32[0] <= arg <= _I32[1]
    return type(arg)


def _hooked(hook: object) -> bool:
    # Triton keeps its launch hooks in a HookChain, empty unless a profiler added one
    return hook is not None and bool(getattr(hook, "calls", True))


def launch(kernel: triton.JITFunction, grid: tuple[int, ...], *args: object, **meta: object) -> None:
    """`kernel[grid](*args, **meta)`: runtime arguments positionally, constexprs and options
    (num_warps, ...) by keyword, on the current CUDA stream of the first tensor's device."""
    if _INTERPRET or _hooked(triton.knobs.runtime.launch_enter_hook) or _hooked(triton.knobs.runtime.launch_exit_hook):
        kernel[grid](*args, **meta)
        return
    device = next(a for a in args if isinstance(a, Tensor)).device.index
    key = (kernel, device, tuple(meta.items()), tuple(map(_arg_key, args)))
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = kernel[grid](*args, **meta)
        if hasattr(compiled, "result"):  # asynchronous compile mode
            compiled = compiled.result()
        _compiled[key] = compiled
        return
    # the launcher takes every parameter in order; it skips the constexpr ones
    constexprs = [meta[name] for name in kernel.arg_names[len(args):]]
    grid3 = (*grid, 1, 1)
    compiled.run(grid3[0], grid3[1], grid3[2], torch._C._cuda_getCurrentRawStream(device), compiled.function,
                 compiled.packed_metadata, None, None, None, *args, *constexprs)


def current_stream(device_index: int) -> int:
    """The raw current CUDA stream of a device (0 for CPU tensors: the interpreter ignores it)."""
    return torch._C._cuda_getCurrentRawStream(device_index) if device_index >= 0 else 0


class Bound:
    """`kernel[grid](*tensors, *ints, **meta)` with the grid, the scalar arguments (`ints`: the
    integers and floats after the tensors) and the constexprs / options fixed at construction.

    The caller guarantees that every call's tensors specialise alike (the same dtypes and 16-byte
    alignment in the same places): the kernel compiled by the first call is reused unchecked.
    Under the interpreter, or while a Triton launch hook is installed, calls go through Triton."""

    __slots__ = ("kernel", "grid", "ints", "meta", "_launch", "_head", "_tail")

    def __init__(self, kernel: triton.JITFunction, grid: tuple[int, ...], ints: tuple = (), **meta: object) -> None:
        self.kernel, self.grid, self.ints, self.meta = kernel, (*grid, 1, 1)[:3], tuple(ints), meta
        self._launch = None

    def __call__(self, stream: int, *tensors: Tensor) -> None:
        if self._launch is None or _hooked(triton.knobs.runtime.launch_enter_hook) or \
                _hooked(triton.knobs.runtime.launch_exit_hook):
            compiled = self.kernel[self.grid](*tensors, *self.ints, **self.meta)
            if self._launch is None and not _INTERPRET:
                self._adopt(compiled.result() if hasattr(compiled, "result") else compiled, len(tensors))
            return
        self._launch(*self.grid, stream, *self._head, *tensors, *self._tail)

    def _adopt(self, compiled, n_tensors: int) -> None:
        # the launcher takes every parameter in order (it skips the constexpr ones itself)
        constexprs = [self.meta[name] for name in self.kernel.arg_names[n_tensors + len(self.ints):]]
        self._tail = (*self.ints, *constexprs)
        launcher = compiled.run
        if launcher.global_scratch_size or launcher.profile_scratch_size:  # Triton allocates these per call
            self._launch = launcher
            self._head = (compiled.function, compiled.packed_metadata, None, None, None)
        else:  # what launcher(...) does, minus its scratch allocation closures
            self._launch = launcher.launch
            self._head = (compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl, None, None,
                          compiled.packed_metadata, None, None, None)
