"""Cut the authors' extensions down to what `bench mamba-ssm` runs, before building them.

    python3 -m seqbench.harness.bench.anchor_trim .anchor

The side-by-side measurement builds `mamba_ssm`'s CUDA selective scan and causal-conv1d from
their public source (never a dependency, never committed). Built whole, that takes about 510 s
on the GPU machine's 16 cores: each source file is one compile, and the longest ones instantiate
the scan for complex weights and fp16, and the conv's backward for nine dtype pairs in two
layouts, none of which the measurement calls. This rewrites only their explicit instantiation
lists: the instantiations the measurement uses stay as they are (scan: bf16 and fp32 inputs with
real weights, forward and backward; conv backward: bf16 or fp32 input with fp32 weight, and
bf16 with bf16, channel-first), every other one becomes a specialisation that throws when
called. The kernels themselves are untouched, so what is timed is the authors' code; the
build then takes its longest kept file (153 s on the H200 machine, 123 s on a 2-core host).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SCAN_KEEP = {("fwd", "at::BFloat16", "float"), ("fwd", "float", "float"),
             ("bwd", "at::BFloat16", "float"), ("bwd", "float", "float")}
CONV_BWD_KEEP = {("causal_conv1d_bwd_cuda", "float", "float"),
                 ("causal_conv1d_bwd_cuda", "at::BFloat16", "float"),
                 ("causal_conv1d_bwd_cuda", "at::BFloat16", "at::BFloat16")}
_SCAN = re.compile(r"^template void selective_scan_(fwd|bwd)_cuda<([\w:]+), ([\w:]+)>\((\w+) &params, cudaStream_t stream\);$")
_CONV = re.compile(r"^template void (\w+)<([\w:]+), ([\w:]+)>\(ConvParamsBwd &params, cudaStream_t stream\);$")
# what a file that keeps no instantiation needs instead of the kernel header (which is the slow part)
_STUB_HEADER = """#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/cuda/CUDAException.h>
#include <ATen/cuda/Atomic.cuh>
#include "selective_scan.h"
#include "selective_scan_common.h"
template<typename input_t, typename weight_t> void selective_scan_fwd_cuda(SSMParamsBase &params, cudaStream_t stream);
template<typename input_t, typename weight_t> void selective_scan_bwd_cuda(SSMParamsBwd &params, cudaStream_t stream);
"""
_MARK = "not in this measurement build"
_TRIMMED = f"// harness/bench/anchor_trim.py: instantiations {_MARK} throw\n#include <stdexcept>\n"


def _throwing(name: str, types: str, params: str) -> str:
    return (f"template<> void {name}<{types}>({params} &params, cudaStream_t stream) "
            f"{{ throw std::runtime_error(\"{name}<{types}>: {_MARK}\"); }}")


def trim_scan_file(text: str) -> str:
    """One selective_scan_*.cu: kept instantiations as they are, the others throwing; without a
    kept one the kernel header is not included at all."""
    lines, kept = [], False
    for line in text.splitlines():
        m = _SCAN.match(line)
        if m:
            kind, i, w, params = m.groups()
            if (kind, i, w) in SCAN_KEEP:
                kept = True
            else:
                line = _throwing(f"selective_scan_{kind}_cuda", f"{i}, {w}", params)
        lines.append(line)
    if not kept:
        lines = [line for line in lines if not line.startswith("#include")]
        return _TRIMMED + _STUB_HEADER + "\n".join(lines) + "\n"
    return _TRIMMED + "\n".join(lines) + "\n"


def trim_conv_bwd_file(text: str) -> str:
    """causal_conv1d_bwd.cu: the kept instantiations as they are, the others throwing."""
    lines = []
    for line in text.splitlines():
        m = _CONV.match(line)
        if m and m.groups() not in CONV_BWD_KEEP:
            name, i, w = m.groups()
            line = _throwing(name, f"{i}, {w}", "ConvParamsBwd")
        lines.append(line)
    return _TRIMMED + "\n".join(lines) + "\n"


def trim(anchor: Path) -> list[Path]:
    """Rewrite the instantiation files under `anchor` (the folder prepare.sh makes) that are not
    rewritten yet; returns those it rewrote."""
    scan = sorted((anchor / "mamba/csrc/selective_scan").glob("selective_scan_*.cu"))
    conv = anchor / "ccd/csrc/causal_conv1d_bwd.cu"
    if not scan or not conv.is_file():
        raise SystemExit(f"{anchor}: no selective_scan_*.cu or causal_conv1d_bwd.cu (run prepare.sh first)")
    done = []
    for path, rewrite in [*((p, trim_scan_file) for p in scan), (conv, trim_conv_bwd_file)]:
        text = path.read_text()
        if not text.startswith(_TRIMMED):  # once only
            path.write_text(rewrite(text))
            done.append(path)
    return done


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".anchor")
    print(f"trimmed {len(trim(folder))} files (the measurement build of {folder})")
