"""One import namespace: everything seqbench installs lives under `seqbench`, and a user's own
`models/` or `tasks/` package does not shadow ours."""

import os
import pathlib
import subprocess
import sys
import textwrap
import tomllib

import seqbench

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_seqbench_gives_a_version():
    assert seqbench.__version__ and seqbench.__version__[0].isdigit()


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"seqbench": "."}
    folders = {"seqbench." + ".".join(init.parent.relative_to(ROOT).parts)
               for init in ROOT.glob("*/**/__init__.py")
               if not {"tests", "results", "build"} & set(init.relative_to(ROOT).parts)
               and not any(part.startswith(".") for part in init.relative_to(ROOT).parts)}
    assert set(config["packages"]) == {"seqbench"} | folders


def test_a_users_own_models_and_tasks_packages_do_not_shadow_seqbench(tmp_path):
    for name in ("models", "tasks", "harness", "kernels", "modalities"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name}')\n")
    script = textwrap.dedent("""
        import sys
        from seqbench.harness.runner import run
        from seqbench.models import build_model
        from seqbench.tasks import get_task
        from seqbench.kernels import selective_scan
        import seqbench.harness.cli
        assert not {"models", "tasks", "harness", "kernels", "modalities"} & set(sys.modules), sorted(sys.modules)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
