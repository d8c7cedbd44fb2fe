"""Name -> implementation lookup for tasks, models and modalities.

Built-ins and third-party plugins are found the same way: a name maps to a lazy target
"module:attribute", imported only when asked for. Plugins register through the entry-point
groups `seqbench.tasks`, `seqbench.models` and `seqbench.modalities` of their own distribution:

    [project.entry-points."seqbench.tasks"]
    my-task = "my_package.tasks:MyTask"
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from seqbench.core.errors import SeqbenchError

KINDS = ("tasks", "models", "modalities")

BUILTINS: dict[str, dict[str, str]] = {
    "tasks": {
        "induction-heads": "seqbench.tasks.synthetic:InductionHeads",
        "selective-copying": "seqbench.tasks.synthetic:SelectiveCopying",
        "mqar": "seqbench.tasks.synthetic:MQAR",
        "lm": "seqbench.tasks.language_modeling:LanguageModeling",
        "species": "seqbench.tasks.classification:Species",
        "spoken-digits": "seqbench.tasks.classification:SpokenDigits",
        "speed": "seqbench.tasks.speed:Speed",
        "mad-recall": "seqbench.tasks.mad:InContextRecall",
        "mad-noisy-recall": "seqbench.tasks.mad:NoisyInContextRecall",
        "mad-fuzzy-recall": "seqbench.tasks.mad:FuzzyInContextRecall",
        "mad-selective-copying": "seqbench.tasks.mad:MadSelectiveCopying",
        "mad-compression": "seqbench.tasks.mad:Compression",
        "mad-memorization": "seqbench.tasks.mad:Memorization",
    },
    "models": {
        "mamba": "seqbench.models.mamba:build_mamba",
        "transformer": "seqbench.models.transformer:build_transformer",
        "transformer-abs": "seqbench.models.transformer:build_transformer_abs",
        "transformer-xpos": "seqbench.models.transformer:build_transformer_xpos",
        "transformer++": "seqbench.models.transformer:build_transformer_pp",
        "hyena": "seqbench.models.hyena:build_hyena",
        "hybrid": "seqbench.models.hybrid:build_hybrid",
    },
    "modalities": {
        "tokens": "seqbench.modalities.tokens:TokenModality",
        "text": "seqbench.modalities.text:TextModality",
        "audio": "seqbench.modalities.audio:AudioModality",
        "dna": "seqbench.modalities.dna:DNAModality",
    },
}


class UnknownNameError(SeqbenchError):
    """A name that no built-in or plugin provides."""


@dataclass
class Registry:
    """The names of one kind (tasks, models or modalities) and their lazy targets."""

    kind: str
    targets: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.targets)

    def target(self, name: str) -> str:
        if name not in self.targets:
            raise UnknownNameError(self._unknown_message(name))
        return self.targets[name]

    def load(self, name: str) -> Any:
        """Import and return the object registered under `name`."""
        module_name, _, attribute = self.target(name).partition(":")
        module = importlib.import_module(module_name)
        obj = module
        for part in attribute.split(".") if attribute else []:
            obj = getattr(obj, part)
        return obj

    def _unknown_message(self, name: str) -> str:
        singular = self.kind[:-1] if self.kind != "modalities" else "modality"
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {singular} {name!r}.{hint} Choices: {', '.join(self.names())}"


def _plugin_targets(kind: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=f"seqbench.{kind}")}


def registry(kind: str) -> Registry:
    """The registry of `kind`: built-ins, then entry-point plugins (a plugin may not shadow a built-in)."""
    if kind not in KINDS:
        raise SeqbenchError(f"unknown kind {kind!r}; choices: {', '.join(KINDS)}")
    targets = dict(_plugin_targets(kind))
    targets.update(BUILTINS[kind])
    return Registry(kind, targets)


def load(kind: str, name: str) -> Any:
    """Shortcut: `load("tasks", "induction-heads")` returns the task class."""
    return registry(kind).load(name)
