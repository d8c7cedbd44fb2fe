"""The scan's kernels compile for the H200 (sm_90) on any machine: Triton's own compiler, down to
PTX and a cubin by the ptxas it ships, with no GPU. The interpreter tests check what the kernels
compute; this catches what only the compiler sees (types, constexpr branches) before a GPU does.
In a subprocess without TRITON_INTERPRET, where `triton.jit` gives real compilable kernels."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

# kernel, pointer dtypes that differ from fp32, constexprs: every flag of the plans' launches in
# both settings somewhere (short and long calls, A or A_log, bf16 D / delta_bias, C reversed)
_SCRIPT = textwrap.dedent('''
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from seqbench.kernels.scan import triton as st

    bf16 = {n: "*bf16" for n in ("u_ptr", "delta_ptr", "z_ptr", "out_ptr", "B_ptr", "C_ptr", "Crev_ptr", "D_ptr",
                                 "bias_ptr", "dout_ptr", "du_ptr", "ddelta_ptr", "dz_ptr")}
    log_bf16 = dict(bf16, A_ptr="*bf16")
    fwd = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, UNROLL=1)
    cases = [
        (st._fwd_seq, log_bf16, dict(N=16, BD=1, T=64, HAS_H0=False, HAS_LAST=False, A_IS_LOG=True, SUB=1, **fwd)),
        (st._fwd_seq, bf16, dict(N=16, BD=1, T=512, HAS_H0=True, HAS_LAST=True, A_IS_LOG=False, SUB=1, **fwd)),
        (st._fwd_seq, log_bf16, dict(N=16, BD=1, T=256, HAS_H0=False, HAS_LAST=True, A_IS_LOG=True, SUB=4, **fwd)),
        (st._fwd_tile_state, log_bf16, dict(N=16, BD=4, T=64, HAS_BIAS=True, SOFTPLUS=True, UNROLL=1, A_IS_LOG=True)),
        (st._carry_fwd, {}, dict(N=16, BLK=64, K=32, HAS_H0=True, A_IS_LOG=False)),
        (st._fwd_out, bf16, dict(N=16, BD=4, T=64, A_IS_LOG=False, **fwd)),
        (st._bwd_tile_state, log_bf16, dict(N=16, BD=4, T=64, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, UNROLL=1,
                                            WRITE_CREV=True, A_IS_LOG=True)),
        (st._bwd_tile_state, bf16, dict(N=16, BD=4, T=64, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, UNROLL=1,
                                        WRITE_CREV=False, A_IS_LOG=False)),
        (st._carry_bwd, {"A_ptr": "*bf16"}, dict(N=16, BLK=64, K=32, HAS_DLAST=True, A_IS_LOG=True)),
        (st._reverse_tiles, bf16, dict(T=64, BLK=1024)),
        (st._bwd_main, log_bf16, dict(N=16, BD=4, T=64, ACCUM=True, HAS_OUT=True, C_REV_LOAD=False, A_IS_LOG=True,
                                      HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, UNROLL=1)),
        (st._bwd_main, bf16, dict(N=16, BD=4, T=64, ACCUM=False, HAS_OUT=False, C_REV_LOAD=True, A_IS_LOG=False,
                                  HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, UNROLL=1)),
        (st._bwd_sums, {"dBC_ptr": "*bf16"}, dict(BLK=256, ROWS=16)),
    ]
    for kernel, pointers, constexprs in cases:
        signature = {name: "constexpr" if name in constexprs else
                     pointers.get(name, "*fp32" if name.endswith("_ptr") else "i32") for name in kernel.arg_names}
        compiled = triton_compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": 4 if kernel is st._bwd_sums else 1})
        assert "cubin" in compiled.asm and len(compiled.asm["cubin"]) > 0
        print("compiled", kernel.__name__)
''')


def test_the_scan_kernels_compile_for_sm_90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compiled here, not taken from a cache
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("compiled ") == 13, proc.stdout
