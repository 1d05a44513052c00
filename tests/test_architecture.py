"""The direction of dependencies in architecture.md, enforced.

The rules are import-linter contracts in pyproject.toml ([tool.importlinter]): layers (scheduler above workers
and policies, which are independent; scheduler's own parts in layers), no import cycles inside scheduler/ or
policies/, what policies, workers and the client may not import. ``lint-imports`` checks them from the command
line too. What imports cannot show (a policy calling ``open(`` or reading the clock) is checked on the source.
"""

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def contract(kind, **fields):
    return [c for c in CONTRACTS if c["type"] == kind and all(c.get(k) == v for k, v in fields.items())]


def test_the_import_contracts_hold():
    lint_imports = pathlib.Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_contracts_state_the_rules_of_architecture_md():
    # Guards the configuration itself: weakening a rule is a visible change to this test, not a quiet edit.
    assert contract("layers", layers=["scheduler", "workers | policies"])
    assert contract("acyclic_siblings", ancestors=["scheduler", "policies"])
    [pure] = contract("forbidden", source_modules=["policies"])
    assert {"ray", "sqlalchemy", "requests", "httpx", "torch", "pynvml", "fastapi", "apscheduler", "time",
            "datetime", "random", "os", "pathlib", "socket"} <= set(pure["forbidden_modules"])
    [workers] = contract("forbidden", source_modules=["workers"])
    assert {"sqlalchemy", "alembic", "fastapi"} <= set(workers["forbidden_modules"])
    [client] = contract("forbidden", source_modules=["scheduler.client"])
    assert {"ray", "torch", "sqlalchemy", "fastapi"} <= set(client["forbidden_modules"])


def test_policies_never_open_files_or_read_the_clock():
    for path in (ROOT / "policies").rglob("*.py"):
        source = path.read_text()
        for needle in ("open(", "time.time(", "datetime.now(", "perf_counter("):
            assert needle not in source, f"{path.name} uses {needle}"
