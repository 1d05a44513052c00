"""The direction of dependencies in architecture.md, enforced."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "policies": {"ray", "sqlalchemy", "requests", "httpx", "torch", "pynvml", "fastapi", "apscheduler",
                 "scheduler", "workers", "time", "datetime", "random", "os", "pathlib", "socket"},
    "workers": {"scheduler", "policies", "sqlalchemy", "alembic", "fastapi"},
}


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_in_their_lane(package):
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in sorted((ROOT / package).rglob("*.py"))
                 for module, line in imported_modules(path) if module in FORBIDDEN[package]]
    assert offenders == []


def test_policies_never_open_files_or_read_the_clock():
    for path in (ROOT / "policies").rglob("*.py"):
        source = path.read_text()
        for needle in ("open(", "time.time(", "datetime.now(", "perf_counter("):
            assert needle not in source, f"{path.name} uses {needle}"
