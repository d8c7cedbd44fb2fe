"""What runs record in MLflow, named once: the tags the runner and the sweep write, and the
report, the schedule and a resumed sweep read (README, Looking at the runs, lists them)."""

# tags of every run
STATUS = "status"  # ok, diverged, interrupted, oom, failed; in sweeps also pending, running, timeout, skipped
ERROR = "error"  # why a run did not end ok (one line, at most 5,000 characters)
CONFIG_HASH = "config_hash"  # what the run computes (RunConfig.hash): finds a sweep's finished cells
TASK, MODALITY, MODEL, SIZE, SEQ_LEN = "task", "modality", "model", "size", "seq_len"
CHECKPOINT = "checkpoint"  # the run's last checkpoint file
RESTARTS = "restarts"  # how often a reopened run started again at step 0
EVAL_OOM_FROM = "eval_oom_from"  # the first evaluation length that ran out of memory
EVAL_CHUNK = "eval_chunk"  # eval_chunk/<L>: the chunk a streamed evaluation at length L ran in
FAILED_RANK = "failed_rank"  # the data-parallel rank whose own failure ended the run
NONDETERMINISTIC_OPS = "nondeterministic_ops"  # a --deterministic run's ops that had no deterministic version
PARENT = "mlflow.parentRunId"  # a sweep child's parent run (MLflow's own tag)
HOST, PID = "host", "pid"  # the machine and process training the run (finds runs whose process is gone)

# tags of a sweep's parent run, and of its children's scheduling
SWEEP = "seqbench.sweep"  # "true" on a sweep's parent run
SWEEP_HASH = "sweep_hash"  # the sweep's identity (task and its children's config hashes)
SEED = "seed"  # a sweep child's seed, where the sweep runs each cell with several
MODELS, LENGTHS = "models", "lengths"  # what the sweep covers
SLOT, LAUNCHED = "sweep_slot", "sweep_launched_ms"  # where and when a child started

# metrics
TRAIN_LOSS = "train_loss"
TRAIN_SECONDS, EVAL_SECONDS = "train_seconds", "eval_seconds"
TRAIN_TOKENS_PER_S = "train_tokens_per_s"
PEAK_MEMORY_MB = "peak_memory_mb"


def run_name(task: str, model_label: str, length_label: str, seed: str | None = None) -> str:
    """A run's name: model and length first ("mamba-256 · induction-heads"), so that names stay
    apart where the MLflow UI truncates them; a seed where a sweep runs several ("mamba-256/s1 · ...")."""
    return f"{model_label}-{length_label}{f'/s{seed}' if seed is not None else ''} · {task}"


def at_length(name: str, length: int) -> str:
    """A metric or tag name per evaluation length: accuracy/4096 (MLflow allows no '@')."""
    return f"{name}/{length}"
