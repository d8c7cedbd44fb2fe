"""`harness.cli` as a torchrun rank whose address space is capped when it is rank $CAPPED_RANK.

The cap is the rank's size once everything it will import is loaded, plus $CAPPED_MARGIN_MB: that
rank's first large allocation fails for real (the CPU allocator's out-of-memory error) while the
other ranks train on. tests/test_distributed.py starts it under torchrun to see what one rank's
out-of-memory does to a data-parallel run.
"""

import os
import resource
import sys

import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (loaded before the cap: a failing rank records its ending)
import mlflow.tracking  # noqa: F401
import torch  # noqa: F401

import harness.cli
import harness.runner  # noqa: F401


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


if __name__ == "__main__":
    if os.environ.get("RANK") == os.environ["CAPPED_RANK"]:
        cap = _address_space_bytes() + int(os.environ["CAPPED_MARGIN_MB"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.argv[0] = "seqbench"
    harness.cli.app()
