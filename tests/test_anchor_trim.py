"""The measurement build's trim (harness/bench/anchor_trim.py) on files laid out as the authors'
are: the instantiations `bench mamba-ssm` calls stay, every other one throws, a file left with
none stops including its kernel header, and a second pass changes nothing."""

import pytest

from seqbench.harness.bench.anchor_trim import trim

HEADER = "// Copyright notice\n\n"
SCAN_FILES = {
    "selective_scan_fwd_bf16.cu": ("fwd", "SSMParamsBase", [("at::BFloat16", "float"), ("at::BFloat16", "complex_t")]),
    "selective_scan_fwd_fp16.cu": ("fwd", "SSMParamsBase", [("at::Half", "float"), ("at::Half", "complex_t")]),
    "selective_scan_bwd_fp32_real.cu": ("bwd", "SSMParamsBwd", [("float", "float")]),
    "selective_scan_bwd_bf16_complex.cu": ("bwd", "SSMParamsBwd", [("at::BFloat16", "complex_t")]),
}
CONV_PAIRS = [(i, w) for w in ("float", "at::Half", "at::BFloat16") for i in ("float", "at::Half", "at::BFloat16")]


def _anchor(tmp_path):
    scan = tmp_path / "mamba/csrc/selective_scan"
    scan.mkdir(parents=True)
    for name, (kind, params, pairs) in SCAN_FILES.items():
        lines = [f'#include "selective_scan_{kind}_kernel.cuh"', ""]
        lines += [f"template void selective_scan_{kind}_cuda<{i}, {w}>({params} &params, cudaStream_t stream);"
                  for i, w in pairs]
        (scan / name).write_text(HEADER + "\n".join(lines) + "\n")
    conv = tmp_path / "ccd/csrc"
    conv.mkdir(parents=True)
    lines = ["#include <c10/util/BFloat16.h>", "template<typename input_t, typename weight_t>",
             "void causal_conv1d_bwd_cuda(ConvParamsBwd &params, cudaStream_t stream) {}", ""]
    lines += [f"template void {name}<{i}, {w}>(ConvParamsBwd &params, cudaStream_t stream);"
              for name in ("causal_conv1d_bwd_cuda", "causal_conv1d_channellast_bwd_cuda") for i, w in CONV_PAIRS]
    (conv / "causal_conv1d_bwd.cu").write_text("\n".join(lines) + "\n")
    return tmp_path


def _kept_and_thrown(text):
    kept = [line for line in text.splitlines() if line.startswith("template void")]
    thrown = [line for line in text.splitlines() if line.startswith("template<> void") and "throw" in line]
    return kept, thrown


def test_the_measured_instantiations_stay_and_the_others_throw(tmp_path):
    anchor = _anchor(tmp_path)
    assert len(trim(anchor)) == len(SCAN_FILES) + 1
    scan = anchor / "mamba/csrc/selective_scan"

    kept, thrown = _kept_and_thrown((scan / "selective_scan_fwd_bf16.cu").read_text())
    assert kept == ["template void selective_scan_fwd_cuda<at::BFloat16, float>(SSMParamsBase &params, cudaStream_t stream);"]
    assert len(thrown) == 1 and "<at::BFloat16, complex_t>" in thrown[0]
    assert '#include "selective_scan_fwd_kernel.cuh"' in (scan / "selective_scan_fwd_bf16.cu").read_text()

    kept, thrown = _kept_and_thrown((scan / "selective_scan_bwd_fp32_real.cu").read_text())
    assert len(kept) == 1 and not thrown

    for name in ("selective_scan_fwd_fp16.cu", "selective_scan_bwd_bf16_complex.cu"):
        text = (scan / name).read_text()
        kept, thrown = _kept_and_thrown(text)
        assert not kept and len(thrown) == len(SCAN_FILES[name][2])
        assert "_kernel.cuh" not in text  # the slow part of the compile is gone
        assert "template<typename input_t, typename weight_t> void selective_scan_fwd_cuda" in text

    kept, thrown = _kept_and_thrown((anchor / "ccd/csrc/causal_conv1d_bwd.cu").read_text())
    assert sorted(kept) == sorted(
        f"template void causal_conv1d_bwd_cuda<{i}, {w}>(ConvParamsBwd &params, cudaStream_t stream);"
        for i, w in [("float", "float"), ("at::BFloat16", "float"), ("at::BFloat16", "at::BFloat16")])
    assert len(thrown) == 2 * len(CONV_PAIRS) - 3


def test_a_second_trim_changes_nothing(tmp_path):
    anchor = _anchor(tmp_path)
    trim(anchor)
    before = {p: p.read_text() for p in anchor.rglob("*.cu")}
    assert trim(anchor) == []
    assert {p: p.read_text() for p in anchor.rglob("*.cu")} == before


def test_a_folder_without_the_sources_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="run prepare.sh first"):
        trim(tmp_path)
