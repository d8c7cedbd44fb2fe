"""`--deterministic`: PyTorch's deterministic algorithms inside a run, the ops without one
recorded, the previous settings back afterwards (the repeatability itself is a GPU test)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from mlflow.tracking import MlflowClient

from seqbench.harness.determinism import CUBLAS_WORKSPACE, deterministic_algorithms
from seqbench.harness.runner import run
from tests.test_run import loss_history, tiny_config

# PyTorch's wording when an op without a deterministic version runs in warn-only mode (no CPU op
# lacks one, so the CPU tests raise the alert themselves)
ALERT = ("{} does not have a deterministic implementation, but you set "
         "'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file an issue at ...")


def test_inside_the_block_deterministic_algorithms_are_on_and_alerts_are_collected(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True) as ops:
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        for _ in range(2):
            warnings.warn(ALERT.format("index_add_cuda_"), UserWarning)
        warnings.warn(ALERT.format("embedding_dense_backward_cuda"), UserWarning)
        with pytest.warns(UserWarning, match="something else"):  # other warnings still show
            warnings.warn("something else", UserWarning)
    assert ops == {"index_add_cuda_", "embedding_dense_backward_cuda"}
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_off_changes_nothing():
    with deterministic_algorithms(False) as ops:
        assert not torch.are_deterministic_algorithms_enabled()
    assert ops == set()


def test_a_deterministic_run_records_it_and_restores_the_settings(tmp_path):
    config = tiny_config(tmp_path, deterministic=True)
    result = run(config, progress=False)
    assert result.status == "ok"
    logged = MlflowClient(config.tracking_uri).get_run(result.run_id)
    assert logged.data.params["deterministic"] == "True"
    assert logged.data.tags["nondeterministic_ops"] == "none"  # on the CPU every op has a deterministic version
    assert not torch.are_deterministic_algorithms_enabled()
    # the flag does not change what the run computes: same config hash, same losses
    plain = run(tiny_config(tmp_path, checkpoint_dir=str(tmp_path / "other")), progress=False)
    assert plain.config.hash() == result.config.hash()
    assert loss_history(config.tracking_uri, plain.run_id) == loss_history(config.tracking_uri, result.run_id)


@pytest.mark.gpu
def test_on_the_gpu_two_deterministic_runs_of_one_seed_repeat_bitwise(tmp_path):
    runs = []
    for n in range(2):
        config = tiny_config(tmp_path, device="cuda", deterministic=True, steps=40, model="mamba",
                             model_kwargs={"d_model": 64, "n_layers": 2}, checkpoint_dir=str(tmp_path / f"c{n}"))
        result = run(config, progress=False)
        assert result.status == "ok"
        runs.append(loss_history(config.tracking_uri, result.run_id))
    assert runs[0] == runs[1]
