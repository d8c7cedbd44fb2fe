"""Run configuration: what the user asked for, resolved against the task's paper defaults."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace

from seqbench.core.errors import SeqbenchError

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

MAX_LENGTH = 1 << 40
"""The longest length (or token count) accepted: far beyond any device's memory, and far enough
below 2^63 that offsets into a batch of such sequences still fit int64 indexing."""
MAX_INDEX = (1 << 63) - 1  # tensors are indexed with int64: no batch may hold more elements


def parse_length(text: str | int) -> int:
    """'4096', '1k' (1024), '64K', '1m' (2^20), '2^10' -> int in 1..MAX_LENGTH (2^40).
    SeqbenchError on anything else."""
    if isinstance(text, int):
        value = text
    else:
        s = text.strip().lower()
        power = re.fullmatch(r"2\^(\d+)", s)
        match = re.fullmatch(r"(\d+)\s*([kmg]?)", s)
        if power:
            exponent = int(power.group(1))
            value = 1 << exponent if exponent <= 64 else MAX_LENGTH + 1  # 2^999999 is not worth computing
        elif match:
            value = int(match.group(1)) * _SUFFIX[match.group(2)]
        else:
            raise SeqbenchError(f"cannot read length {text!r}; use an integer, 1k/64k/1m or 2^N")
    if value < 1:
        raise SeqbenchError(f"length must be >= 1, got {value}")
    check_length(value, text)
    return value


def check_length(value: int, text: str | int | None = None) -> None:
    """SeqbenchError when `value` is above MAX_LENGTH: no machine holds such a sequence, and its
    offsets would overflow the int64 indices tensors use."""
    if value > MAX_LENGTH:
        shown = text.strip() if isinstance(text, str) else (f"2^{value.bit_length() - 1}"
                                                             if value & (value - 1) == 0 else f"{value:,}")
        raise SeqbenchError(f"length {shown} is beyond what this machine can address; lengths up to "
                            f"2^40 ({MAX_LENGTH:,}) are accepted")


def parse_lengths(text: str) -> list[int]:
    """'256,1k,1m' -> [256, 1024, 1048576] (order kept, duplicates dropped)."""
    values = [parse_length(part) for part in text.split(",") if part.strip()]
    if not values:
        raise SeqbenchError(f"no lengths in {text!r}")
    return list(dict.fromkeys(values))


def format_length(n: int) -> str:
    """1024 -> '1k', 1048576 -> '1m', 300 -> '300'."""
    for suffix, size in (("m", 1 << 20), ("k", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


# Fields that do not change what a run computes: left out of the config hash.
_NOT_HASHED = {"tracking_uri", "experiment", "resume", "checkpoint_dir", "checkpoint_every", "checkpoint_minutes",
               "log_every", "progress", "run_name", "train_step", "eval_chunk", "loss_by_position", "deterministic"}


@dataclass
class RunConfig:
    """One run. Fields left as None take the task's defaults in `resolve`."""

    task: str
    model: str = "mamba"
    size: str | None = None
    modality: str | None = None
    data: str | None = None
    seq_len: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    grad_clip: float | None = None
    seq_warmup_start: int | None = None
    seq_warmup_every: int = 0
    seed: int = 0
    device: str = "auto"
    eval_every: int | None = None
    eval_lengths: list[int] | None = None
    eval_samples: int = 256
    eval_tokens: int | None = None
    eval_chunk: int | None = None  # streamed evaluation: None auto (after an OOM), 0 never, N chunks above N
    loss_by_position: bool = False  # also log the loss per power-of-two bin of positions, per length
    model_kwargs: dict = field(default_factory=dict)
    task_kwargs: dict = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment: str | None = None
    checkpoint_dir: str = ".seqbench/checkpoints"
    checkpoint_every: int = 0  # steps between periodic checkpoints; 0: every checkpoint_minutes
    checkpoint_minutes: float = 5.0  # wall time between periodic checkpoints (when checkpoint_every is 0)
    resume: bool = False
    log_every: int = 10
    run_name: str | None = None
    world_size: int = 1  # data-parallel processes (torchrun); batch_size is per process
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU; or bf16, fp32
    train_step: str = "auto"  # auto: captured (one CUDA graph) where possible, else eager
    deterministic: bool = False  # PyTorch's deterministic algorithms (harness.determinism)

    def resolve(self, task, device_type: str) -> "RunConfig":
        """Fill every None from the task's defaults and check the values; returns a new config."""
        d = task.defaults
        model_kwargs = d.model_defaults(self.model)
        if self.size:
            from seqbench.models.presets import preset

            model_kwargs = preset(self.model, self.size)
        model_kwargs.update(self.model_kwargs)
        seq_len = d.seq_len if self.seq_len is None else self.seq_len
        eval_lengths = self.eval_lengths
        if eval_lengths is None:
            eval_lengths = list(d.eval_lengths) or [seq_len]
            if device_type != "cuda":  # a CPU run stays quick: a smoke run, not the paper's length scan
                eval_lengths = [n for n in eval_lengths if n <= CPU_EVAL_LENGTH_FACTOR * seq_len] + [seq_len]
        resolved = replace(
            self,
            modality=task.modality,
            seq_len=seq_len,
            steps=d.steps if self.steps is None else self.steps,
            batch_size=d.batch_size if self.batch_size is None else self.batch_size,
            lr=d.lr if self.lr is None else self.lr,
            weight_decay=d.weight_decay if self.weight_decay is None else self.weight_decay,
            schedule=self.schedule or d.schedule,
            warmup_steps=d.warmup_steps if self.warmup_steps is None else self.warmup_steps,
            grad_clip=d.grad_clip if self.grad_clip is None else self.grad_clip,
            eval_every=d.eval_every if self.eval_every is None else self.eval_every,
            eval_lengths=sorted(set(eval_lengths)),
            eval_tokens=self.eval_tokens or (1 << 24 if device_type == "cuda" else 1 << 18),
            model_kwargs=model_kwargs,
            experiment=self.experiment or task.name,
        )
        resolved.validate()
        from seqbench.models import check_model_settings

        check_model_settings(self.model, resolved.model_kwargs)
        task.check_seq_len(resolved.seq_len)
        for n in resolved.eval_lengths:
            task.check_eval_len(n)
        return resolved

    def validate(self) -> None:
        from seqbench.core.devices import PRECISIONS
        from seqbench.harness.train_step import STEP_MODES

        checks = [
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.train_step in STEP_MODES,
             f"--train-step must be one of {', '.join(STEP_MODES)}, got {self.train_step!r}"),
            (self.steps is not None and self.steps > 0, f"--steps must be > 0, got {self.steps}"),
            (self.batch_size is not None and self.batch_size > 0, f"--batch-size must be > 0, got {self.batch_size}"),
            (self.lr is not None and self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine, got {self.schedule!r}"),
            (self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device!r}"),
            (self.eval_samples > 0, f"--eval-samples must be > 0, got {self.eval_samples}"),
            (self.log_every > 0, f"--log-every must be > 0, got {self.log_every}"),
            (self.eval_chunk is None or self.eval_chunk >= 0,
             f"--eval-chunk must be a length, 0 (never) or auto, got {self.eval_chunk}"),
            (self.seq_warmup_start is None or (0 < self.seq_warmup_start <= (self.seq_len or 0)
                                               and self.seq_warmup_every > 0),
             f"--seq-warmup-start must be in 1..seq_len with --seq-warmup-every > 0, "
             f"got {self.seq_warmup_start} and {self.seq_warmup_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SeqbenchError(message)
        for n in [self.seq_len or 1, *(self.eval_lengths or [])]:
            check_length(n)
        global_batch = self.batch_size * max(1, self.world_size)
        if (self.seq_len or 1) * global_batch > MAX_INDEX:
            raise SeqbenchError(f"--seq-len {format_length(self.seq_len)} × batch {global_batch:,} is more tokens "
                                f"than int64 indexing addresses (2^63); use a shorter length or a smaller batch")

    def length_schedule(self, step: int) -> tuple[int, int]:
        """(length, batch) at `step`. With a sequence-length warmup the length starts at
        `seq_warmup_start` and doubles every `seq_warmup_every` steps up to `seq_len`, the batch
        shrinking so that each step sees the same number of tokens (DNA and audio protocols)."""
        if not self.seq_warmup_start:
            return self.seq_len, self.batch_size
        length = min(self.seq_len, self.seq_warmup_start << (step // self.seq_warmup_every))
        return length, max(1, self.batch_size * self.seq_len // length)

    def hash(self) -> str:
        """Stable 12-hex-digit id of what the run computes (used for checkpoints and resume)."""
        payload = {k: v for k, v in asdict(self).items() if k not in _NOT_HASHED}
        if self.world_size == 1:  # single-process hashes stay what they were before data parallelism
            del payload["world_size"]
        if self.precision == "auto":  # hashes stay what they were before the precision setting
            del payload["precision"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def to_params(self) -> dict[str, str]:
        """Flattened params for MLflow: model kwargs become model.<name>."""
        params: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("model_kwargs", "task_kwargs"):
                prefix = f.name.split("_")[0]
                params.update({f"{prefix}.{k}": str(v) for k, v in sorted(value.items())})
            elif f.name == "eval_lengths" and value is not None:
                params[f.name] = ",".join(format_length(n) for n in value)
            else:
                params[f.name] = str(value)
        params["config_hash"] = self.hash()
        return params


CPU_EVAL_LENGTH_FACTOR = 4
"""Without --eval-lengths, a CPU run evaluates the task's evaluation lengths up to this many times
its training length (and the training length itself); CUDA runs evaluate them all."""
