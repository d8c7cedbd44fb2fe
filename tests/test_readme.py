"""The README's commands, verbatim, in a fresh clone of the repository.

Every `seqbench ...` line of the README's bash blocks is read from the README itself (continuation
lines joined, comments dropped) and run as written from the root of a `git clone` of this
checkout, with the data sets served by a loopback mirror of the shared data (tests/data_mirror.py)
into an empty data cache:

* `seqbench run` and `seqbench sweep` get `--dry-run` appended: the command resolves in full (its
  data set downloaded and read, its config file loaded, the config checked, every model built)
  and prints its plan, but trains nothing (the README's runs take minutes to hours);
* the quick ones run whole: `list`, `--version`, `data list|get|path`, `bench ... --replot`;
* what needs a GPU (`bench` measurements) or stands for the reader's own machines (placeholders
  such as RUN_ID or MLFLOW_HOST, a cluster's /shared path) is listed, not run.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import data_mirror
from seqbench.harness.cli import app
from seqbench.modalities import catalog

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\b(RUN_ID|NAME|HOST|MLFLOW_HOST|DBHOST)\b|(^|\s)/shared/")

pytestmark = pytest.mark.skipif(not data_mirror.SHARED.is_dir(),
                                reason=f"shared real data not found at {data_mirror.SHARED} (set SEQBENCH_SHARED_DATA)")


def readme_commands(text: str) -> list[str]:
    """The `seqbench` commands of the README's ```bash blocks, one string each."""
    commands, in_bash, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash, pending = line.strip() == "```bash", ""
            continue
        if not in_bash:
            continue
        line = re.sub(r"\s+#.*$", "", pending + line.strip())
        if line.endswith("\\"):
            pending = line[:-1].strip() + " "
            continue
        pending = ""
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("seqbench "):
                # `list tasks|models|modalities` stands for three commands
                alternatives = re.fullmatch(r"seqbench list ([\w|]+)", part)
                commands += ([f"seqbench list {kind}" for kind in alternatives.group(1).split("|")]
                             if alternatives else [part])
    return commands


def how_to_check(command: str) -> str:
    """'dry-run', 'run', or why the test leaves the command alone."""
    words = shlex.split(command)
    if PLACEHOLDER.search(command):
        return "stands for the reader's own store, hosts or run"
    if words[1] in ("run", "sweep"):
        return "dry-run"
    if words[1] == "bench" and "--replot" not in words:
        return "measures a GPU"
    return "run"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of this checkout's HEAD: what a new user has (no results of their own)."""
    folder = tmp_path_factory.mktemp("fresh") / "seqbench"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(folder)], check=True)
    return folder


def test_the_readme_has_the_commands_this_test_checks():
    commands = readme_commands((REPO / "README.md").read_text())
    checks = [how_to_check(c) for c in commands]
    assert commands[0] == "seqbench run induction-heads --model mamba --seq-len 256"  # the first command
    assert checks.count("dry-run") >= 20 and checks.count("run") >= 6, list(zip(commands, checks))


def test_every_readme_command_runs_verbatim_in_a_fresh_clone(clone, tmp_path, monkeypatch):
    (clone / "corpus.txt").write_bytes((data_mirror.SHARED / "text/tinyshakespeare.txt").read_bytes()[:200_000])
    monkeypatch.chdir(clone)  # the README's relative paths (configs/, results/, ./corpus.txt)
    monkeypatch.setenv("SEQBENCH_DATA", str(tmp_path / "data-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    commands = readme_commands((REPO / "README.md").read_text())
    failures, checked, left = [], 0, []
    cli = CliRunner()
    with data_mirror.serving() as mirror:
        monkeypatch.setenv(catalog.MIRROR_ENV, mirror.url)
        for command in commands:
            check = how_to_check(command)
            if check not in ("run", "dry-run"):
                left.append(f"{command}  ({check})")
                continue
            args = shlex.split(command)[1:] + (["--dry-run"] if check == "dry-run" else [])
            result = cli.invoke(app, args)
            checked += 1
            print(f"[{result.exit_code}] {command}")
            if result.exit_code != 0:
                failures.append(f"{command}\n  exit {result.exit_code}: {(result.stderr or result.output)[-800:]}")
            elif check == "dry-run":
                assert "dry run: nothing trained or recorded" in result.stdout, command
        print("left alone:\n  " + "\n  ".join(left))
    assert not failures, "README commands that fail:\n" + "\n".join(failures)
    assert not list(clone.glob("*.db")) and not (clone / ".seqbench").exists()  # the dry runs recorded nothing
    assert checked >= 26
