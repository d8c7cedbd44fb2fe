"""The kernels, one folder per op, each with its public function and dispatch (`__init__.py`),
its Triton implementation (`triton.py`) and its plain PyTorch reference (`reference.py`):

    scan/    selective_scan: the fused selective scan, forward and backward
    conv/    causal_conv1d, causal_conv1d_update: Mamba's short depthwise conv (+ SiLU)
    decode/  selective_state_update: one recurrent step of the scan
    norm/    add_rms_norm: fused residual add + RMSNorm
    mamba_block/  mamba_inner: conv -> projections -> scan -> out_proj as one autograd node

`backend` ("auto", "triton", "reference"; backend.py) picks the same way for every op; layout.py
holds the two row layouts (batch-major, channel-outer) the conv and scan read in place. Triton is
imported only when a Triton path runs, so the references work with a torch that lacks it. The
contract the scan keeps is CONTRACT.md; the measurements behind the kernels are NOTES.md.
This package imports nothing else of seqbench.
"""

from seqbench.kernels.backend import BACKENDS, resolve_backend
from seqbench.kernels.conv import causal_conv1d, causal_conv1d_update
from seqbench.kernels.decode import selective_state_update
from seqbench.kernels.norm import add_rms_norm
from seqbench.kernels.scan import selective_scan

__all__ = ["BACKENDS", "resolve_backend", "selective_scan", "selective_state_update", "causal_conv1d",
           "causal_conv1d_update", "add_rms_norm"]
