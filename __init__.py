"""seqbench: a benchmark harness for long-sequence models (Mamba, Transformer, Hyena on text, audio
and DNA), tracked in MLflow. The packages below it: harness (CLI, runner, sweep, report), tasks,
modalities, models, kernels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seqbench")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
