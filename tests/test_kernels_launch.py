"""seqbench.kernels.launch: the cache key must separate every argument Triton compiles differently.

The direct-launch path itself needs a GPU (tests/test_kernels_gpu.py runs it with unaligned views
and odd lengths); here the key is checked on CPU tensors, and `launch` runs a kernel through the
interpreter.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from seqbench.kernels.launch import Bound, _arg_key, current_stream, launch


def test_key_separates_alignment_dtype_and_integer_classes():
    base = torch.zeros(64)
    assert _arg_key(base) == _arg_key(base[4:])  # 16-byte offset: still aligned
    assert _arg_key(base) != _arg_key(base[1:])  # 4-byte offset
    assert _arg_key(base) != _arg_key(base.to(torch.bfloat16))
    assert _arg_key(32) == _arg_key(48)  # both divisible by 16
    keys = {_arg_key(v) for v in (1, 16, 17, 1 << 31)}
    assert len(keys) == 4  # equal to 1, divisible by 16, neither, beyond int32
    assert _arg_key(0.5) == _arg_key(2.0) and _arg_key(None) is None


@triton.jit
def _scale_kernel(x_ptr, out_ptr, n, a, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(out_ptr + offs, a * tl.load(x_ptr + offs, mask=m), mask=m)


def test_launch_runs_the_kernel():
    # on CUDA the second call takes the direct path; on CPU both run in the interpreter
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(100, device=device)
    for a in (3.0, -2.0):
        out = torch.zeros(100, device=device)
        launch(_scale_kernel, (triton.cdiv(100, 32),), x, out, 100, a, BLOCK=32)
        torch.testing.assert_close(out, a * x)


def test_a_bound_kernel_takes_its_tensors_and_keeps_its_integers_and_constexprs():
    """`Bound` fixes grid, integers and constexprs; each call passes only tensors (on CUDA the
    calls after the first go straight to the compiled launcher, here through the interpreter)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(100, device=device)
    bound = Bound(_scale_kernel, (triton.cdiv(100, 32),), (100, 3.0), BLOCK=32)
    stream = current_stream(x.get_device())
    for _ in range(3):
        out = torch.zeros(100, device=device)
        bound(stream, x, out)
        torch.testing.assert_close(out, 3.0 * x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_bound_kernel_takes_addresses_after_its_first_call():
    """After the first call has compiled the kernel, a tensor may be passed as its address (the
    scan passes its scratch buffers so, and `PASS_ADDRESSES` converts every tensor)."""
    x = torch.randn(100, device="cuda")
    bound = Bound(_scale_kernel, (triton.cdiv(100, 32),), (100, 3.0), BLOCK=32)
    stream = current_stream(x.get_device())
    out = torch.zeros(100, device="cuda")
    bound(stream, x, out)  # compiles
    for _ in range(2):
        out = torch.zeros(100, device="cuda")
        bound(stream, x.data_ptr(), out.data_ptr())
        torch.testing.assert_close(out, 3.0 * x)
