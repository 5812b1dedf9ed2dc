"""The import boundaries of pyproject's [tool.importlinter] hold, and a planted forbidden import breaks
them (the check is real, not a configuration that accepts everything)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                              "sys.exit(lint_imports_command())", "--config", str(ROOT / "pyproject.toml")]


def _copy_sources(dest: Path) -> None:
    for package in ("contracts", "services"):
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "static", "*.yaml", "*.txt", "*.json"))


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(LINT, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_its_boundaries_and_a_planted_import_breaks_them(tmp_path):
    clean = _lint(ROOT)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    _copy_sources(tmp_path)
    (tmp_path / "services" / "tuning" / "planted.py").write_text("from services.serving import api\n")
    (tmp_path / "services" / "lib" / "common" / "planted.py").write_text("import services.registry.models\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "services do not import each other (they talk through events) BROKEN" in broken.stdout, broken.stdout
    assert "services.tuning.planted -> services.serving.api" in broken.stdout
    assert "common is infrastructure: it imports no service, library or app BROKEN" in broken.stdout
