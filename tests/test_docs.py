"""The documentation that ships with the code: docs/ builds strictly, and no shipped file points at the team's
notes in a folder beside the repository, which users never have."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What a user gets: the README, the docs, and the three packages.
SHIPPED = ("README.md", "docs", "scheduler", "workers", "policies")
#: Built or cached files that are not part of the source.
NOT_SOURCE = ("__pycache__",)
OUTSIDE = "../" + "shared"  # spelled in two parts so this file does not match its own check


def test_docs_build_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]' brings it and mkdocs-material)")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # quiet material's notice about MkDocs 2
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    for page in ("index", "simulation", "benchmarks", "operating"):
        built = tmp_path / "site" / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.is_file(), f"{built.relative_to(tmp_path)} was not built"


def shipped_files() -> list[Path]:
    files = []
    for name in SHIPPED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if not any(part in NOT_SOURCE for part in p.parts)]
    return files


def test_shipped_files_exist():
    names = {p.relative_to(ROOT).parts[0] for p in shipped_files()}
    assert names == set(SHIPPED), f"missing from the checkout: {set(SHIPPED) - names}"


def test_no_shipped_file_points_outside_the_repository():
    offenders = []
    for path in shipped_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files (images) cannot hold a path a reader follows
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, f"shipped files point at {OUTSIDE}, which users do not have:\n" + "\n".join(offenders)


def test_the_check_finds_a_pointer(tmp_path, monkeypatch):
    """The search above must be able to fail: a file under a shipped folder that names the path is reported."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(f"see {OUTSIDE}/docs/notes.md\n", encoding="utf-8")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "SHIPPED", ("docs",))
    with pytest.raises(AssertionError, match="docs/page.md:1"):
        test_no_shipped_file_points_outside_the_repository()
