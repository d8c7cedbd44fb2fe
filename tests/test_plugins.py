"""Extension points that go all the way: a model family (builder, mixer and named sizes), a
modality and a task from a third-party package, registered through real entry points and run
through the CLI in a fresh process."""

import os
import subprocess
import sys
import textwrap

PLUGIN = '''
import torch
from torch import nn

from seqbench.models import Mixer, SequenceModel, model_family
from seqbench.modalities.dna import DNAModality
from seqbench.tasks.synthetic import InductionHeads


class CumulativeMean(Mixer):
    """Each position mixes the mean of the positions up to it (causal)."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, hidden, state=None):
        steps = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
        return self.proj(hidden.cumsum(1) / steps[:, None])


@model_family(sizes={"tiny": {"d_model": 16, "n_layers": 1}, "small": {"d_model": 32, "n_layers": 2}})
def build_cummean(vocab_size, head, d_model=16, n_layers=1):
    return SequenceModel(vocab_size, d_model, n_layers, lambda i: CumulativeMean(d_model), head, family="cummean")


class RNAModality(DNAModality):
    """DNA's alphabet read as RNA (U for T); sample data of its own."""

    def __init__(self, name="rna"):
        super().__init__(name=name)

    def encode(self, data):
        text = data if isinstance(data, str) else bytes(data).decode()
        return super().encode(text.replace("U", "T").replace("u", "t"))

    def sample_source(self):
        import pathlib, random

        path = pathlib.Path.cwd() / "rna-sample.fa"
        if not path.exists():
            rng = random.Random(0)
            path.write_text("".join(f">r{i}\\n" + "".join(rng.choice("ACGU") for _ in range(400)) + "\\n"
                                    for i in range(4)))
        return path, {}


class BigVocabInduction(InductionHeads):
    name = "big-vocab-induction"

    def __init__(self, modality=None, data=None, seed=0):
        super().__init__(modality, data, seed, vocab=64)
'''


def _install_plugin(root):
    (root / "my_plugins.py").write_text(PLUGIN)
    dist = root / "my_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [seqbench.models]
        cummean = my_plugins:build_cummean
        [seqbench.modalities]
        rna = my_plugins:RNAModality
        [seqbench.tasks]
        big-vocab-induction = my_plugins:BigVocabInduction
    """))


def _cli(root, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "seqbench.harness.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


def test_plugin_model_modality_and_task_run_through_the_cli(tmp_path):
    _install_plugin(tmp_path)
    listed = _cli(tmp_path, "list", "models")
    assert listed.returncode == 0 and "cummean" in listed.stdout and "tiny" in listed.stdout, listed.stderr
    tasks = _cli(tmp_path, "list", "tasks")
    assert "big-vocab-induction" in tasks.stdout and "rna" in tasks.stdout  # lm takes the plugin modality
    common = ["--steps", "3", "--batch-size", "2", "--eval-samples", "2", "--device", "cpu", "--no-progress",
              "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    task_run = _cli(tmp_path, "run", "big-vocab-induction", "--model", "cummean", "--size", "tiny",
                    "--seq-len", "32", "--eval-lengths", "32", *common)
    assert task_run.returncode == 0, task_run.stdout[-2000:] + task_run.stderr[-2000:]
    lm_run = _cli(tmp_path, "run", "lm", "--modality", "rna", "--model", "cummean", "--size", "small",
                  "--seq-len", "64", "--eval-lengths", "64", *common)
    assert lm_run.returncode == 0, lm_run.stdout[-2000:] + lm_run.stderr[-2000:]
    assert "bits_per_token" in lm_run.stdout or "loss" in lm_run.stdout
    bad_size = _cli(tmp_path, "run", "lm", "--modality", "rna", "--model", "cummean", "--size", "huge", *common)
    assert bad_size.returncode == 2 and "tiny, small" in bad_size.stderr
