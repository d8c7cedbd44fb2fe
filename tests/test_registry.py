"""Registry: built-ins and entry-point plugins by name, lazy imports, helpful errors."""

import sys
import textwrap

import pytest

from seqbench.core.registry import UnknownNameError, registry


def test_builtins_are_listed():
    assert "induction-heads" in registry("tasks").names()
    assert "mamba" in registry("models").names()
    assert "tokens" in registry("modalities").names()


def test_load_returns_the_class():
    from seqbench.tasks.synthetic import InductionHeads

    assert registry("tasks").load("induction-heads") is InductionHeads


def test_unknown_name_lists_choices_and_closest_match():
    with pytest.raises(UnknownNameError) as info:
        registry("tasks").target("induction-head")
    message = str(info.value)
    assert "Did you mean 'induction-heads'?" in message
    assert "Choices: induction-heads" in message
    assert "\n" not in message


def test_unknown_name_without_close_match_has_no_guess():
    with pytest.raises(UnknownNameError) as info:
        registry("models").target("zzzz")
    assert "Did you mean" not in str(info.value)
    assert "mamba" in str(info.value)


def test_entry_point_plugin_is_found_and_imported_lazily(tmp_path, monkeypatch):
    """A third-party distribution registers a task through the `seqbench.tasks` group."""
    (tmp_path / "my_plugin_pkg.py").write_text(textwrap.dedent("""
        from seqbench.tasks.synthetic import InductionHeads

        class BigVocabInduction(InductionHeads):
            name = "big-vocab-induction"

            def __init__(self, modality=None, data=None, seed=0):
                super().__init__(modality, data, seed, vocab=64)
    """))
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[seqbench.tasks]\nbig-vocab-induction = my_plugin_pkg:BigVocabInduction\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    tasks = registry("tasks")
    assert "big-vocab-induction" in tasks.names()
    assert "my_plugin_pkg" not in sys.modules  # listing does not import
    task_cls = tasks.load("big-vocab-induction")
    assert task_cls().vocab_size == 64
    sys.modules.pop("my_plugin_pkg", None)
