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
_compiled: dict[tuple, "_Direct"] = {}
# Bound passes its tensors' addresses as integers (Triton's launcher calls data_ptr() on a tensor
# and asks the driver for its device pointer: cuPointerGetAttribute, once per tensor per launch)
PASS_ADDRESSES = True


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


class _Direct:
    """A compiled kernel's C launcher with what it needs fixed: the function handle, the packed
    metadata and the constexpr values (it takes every parameter in order and skips the constexpr
    ones itself). Kernels that need scratch memory go through Triton's launcher, which allocates
    it on each call."""

    __slots__ = ("run", "head", "constexprs")

    def __init__(self, compiled, kernel: triton.JITFunction, n_runtime: int, meta: dict) -> None:
        if hasattr(compiled, "result"):  # asynchronous compile mode
            compiled = compiled.result()
        self.constexprs = tuple(meta[name] for name in kernel.arg_names[n_runtime:])
        launcher = compiled.run
        if launcher.global_scratch_size or launcher.profile_scratch_size:
            self.run, self.head = launcher, (compiled.function, compiled.packed_metadata, None, None, None)
        else:  # what launcher(...) does, minus its scratch allocation closures
            self.run = launcher.launch
            self.head = (compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl, None, None,
                         compiled.packed_metadata, None, None, None)


def through_triton() -> bool:
    """Calls go through Triton itself: under the interpreter, or while a profiler's hook is set."""
    return _INTERPRET or _hooked(triton.knobs.runtime.launch_enter_hook) or \
        _hooked(triton.knobs.runtime.launch_exit_hook)


def launch(kernel: triton.JITFunction, grid: tuple[int, ...], *args: object, **meta: object) -> None:
    """`kernel[grid](*args, **meta)`: runtime arguments positionally, constexprs and options
    (num_warps, ...) by keyword, on the current CUDA stream of the first tensor's device."""
    if through_triton():
        kernel[grid](*args, **meta)
        return
    device = next(a for a in args if isinstance(a, Tensor)).device.index
    key = (kernel, device, tuple(meta.items()), tuple(map(_arg_key, args)))
    direct = _compiled.get(key)
    if direct is None:
        _compiled[key] = _Direct(kernel[grid](*args, **meta), kernel, len(args), meta)
        return
    grid3 = (*grid, 1, 1)
    direct.run(grid3[0], grid3[1], grid3[2], current_stream(device), *direct.head, *args, *direct.constexprs)


def current_stream(device_index: int) -> int:
    """The raw current CUDA stream of a device (0 for CPU tensors: the interpreter ignores it)."""
    return torch._C._cuda_getCurrentRawStream(device_index) if device_index >= 0 else 0


class Bound:
    """`kernel[grid](*tensors, *ints, **meta)` with the grid, the scalar arguments (`ints`: the
    integers and floats after the tensors) and the constexprs / options fixed at construction.

    The caller guarantees that every call's tensors specialise alike (the same dtypes and 16-byte
    alignment in the same places): the kernel compiled by the first call is reused unchecked.
    After that first call a tensor may also be passed as its address (an int) of the same dtype.
    Under the interpreter, or while a Triton launch hook is installed, calls go through Triton."""

    __slots__ = ("kernel", "grid", "ints", "meta", "_direct", "_tail")

    def __init__(self, kernel: triton.JITFunction, grid: tuple[int, ...], ints: tuple = (), **meta: object) -> None:
        self.kernel, self.grid, self.ints, self.meta = kernel, (*grid, 1, 1)[:3], tuple(ints), meta
        self._direct: _Direct | None = None

    @property
    def compiled(self) -> bool:
        """Whether the first call has compiled the kernel (from then on a tensor may be an address)."""
        return self._direct is not None

    def __call__(self, stream: int, *tensors: Tensor | int) -> None:
        if self._direct is None or through_triton():
            compiled = self.kernel[self.grid](*tensors, *self.ints, **self.meta)
            if self._direct is None and not _INTERPRET:
                self._direct = _Direct(compiled, self.kernel, len(tensors) + len(self.ints), self.meta)
                self._tail = (*self.ints, *self._direct.constexprs)
            return
        direct = self._direct
        if PASS_ADDRESSES:  # an integer skips the launcher's data_ptr() call and driver lookup per tensor
            tensors = [t if t.__class__ is int else t.data_ptr() for t in tensors]
        direct.run(*self.grid, stream, *direct.head, *tensors, *self._tail)
