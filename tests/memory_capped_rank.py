"""`seqbench.harness.cli` with its memory capped: as a torchrun rank, when it is rank $CAPPED_RANK;
as a plain process (no $CAPPED_RANK), always.

On the CPU the cap is the rank's address space once everything it will import is loaded, plus
$CAPPED_MARGIN_MB; on a GPU it is PyTorch's own cap on the rank's device memory, the same margin.
That rank's first large allocation fails for real (the allocator's out-of-memory error) while the
other ranks train on. tests/test_distributed.py starts it under torchrun to see what one rank's
out-of-memory does to a data-parallel run; tests/test_streaming.py alone, to see a run evaluate a
length whose one forward does not fit.
"""

import os
import resource
import sys

import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (loaded before the cap: a failing rank records its ending)
import mlflow.tracking  # noqa: F401
import torch  # noqa: F401

import seqbench.harness.cli
import seqbench.harness.runner  # noqa: F401


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


if __name__ == "__main__":
    if os.environ.get("RANK") == os.environ.get("CAPPED_RANK", os.environ.get("RANK")):
        margin = int(os.environ["CAPPED_MARGIN_MB"]) * 2**20
        if "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cuda":
            device = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_per_process_memory_fraction(margin / torch.cuda.get_device_properties(device).total_memory,
                                                       device)
        else:
            cap = _address_space_bytes() + margin
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.argv[0] = "seqbench"
    seqbench.harness.cli.app()
