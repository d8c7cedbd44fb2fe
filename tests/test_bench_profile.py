"""`bench mamba-ssm --parts profile`'s arithmetic (harness/bench/mamba_ssm.py): one decode step
from a generation call's kernels less its prefill's, and the rows the CSV gets."""

from seqbench.harness.bench import mamba_ssm
from seqbench.harness.bench.mamba_ssm import per_step, profile_rows


def test_one_decode_step_is_the_call_less_its_prefill_per_step():
    call = {"scan": (48.0, 200.0), "state_update": (6144.0, 40.0), "state_copy": (60.0, 2.0), "gemm": (6240.0, 300.0)}
    prefill = {"scan": (48.0, 190.0), "state_copy": (48.0, 1.0), "gemm": (96.0, 100.0)}
    step = per_step(call, prefill, 128)
    # kernels of the prefill alone (scan) or launched once a call (the state's copies) are not the step's
    assert step == {"state_update": (48.0, 40.0 / 128), "gemm": (48.0, 200.0 / 128)}


def test_profile_rows_rank_kernels_and_close_with_totals_and_wall(monkeypatch):
    monkeypatch.setattr(mamba_ssm, "PROFILE_TOP", 2)
    kernels = {"a": (1.0, 0.5), "b": (2.0, 3.0), "c": (4.0, 1.0), "d": (8.0, 0.25)}
    rows = profile_rows(kernels, 6.0, "seqbench", "prefill", "1.4b", 1)
    assert [r["kernel"] for r in rows] == ["b", "c", "(2 other kernels)", "(all kernels)", "(wall)"]
    assert rows[2]["launches"] == 9.0 and rows[2]["device_ms"] == 0.75
    assert rows[3]["launches"] == 15.0 and rows[3]["device_ms"] == 4.75
    assert rows[4]["device_ms"] == 6.0 and rows[4]["launches"] == ""
    assert set(rows[0]) == set(mamba_ssm.PROFILE_FIELDS)
