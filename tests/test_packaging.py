"""The distribution's extras: the base install is the client and the CLI, and a command of an absent extra says
which extra to install. A missing package is simulated in a subprocess with a ``None`` entry in ``sys.modules``,
which makes importing it raise ``ModuleNotFoundError`` as an absent package does."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

from scheduler.cli.extras import COMMAND_EXTRAS, PACKAGES, missing_extra, naming_missing_extras
from scheduler.errors import MissingExtra

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Distribution names whose import name differs from the distribution's.
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL", "nvidia-ml-py": "pynvml",
                "prometheus-client": "prometheus_client"}


def requirement_names(requirements):
    names = (re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements)
    return {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in names}


def run_without(blocked, code, tmp_path):
    """Run ``code`` in a fresh interpreter in which the ``blocked`` packages cannot be imported."""
    prelude = f"import sys\nfor name in {sorted(blocked)!r}:\n    sys.modules[name] = None\n"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WATTSCHED_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_the_extras_table_is_what_pyproject_lists():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra, packages in PACKAGES.items():
        assert requirement_names(extras[extra]) == packages, extra
    assert set(extras) == set(PACKAGES) | {"all", "dev"}
    assert extras["all"] == [f"wattsched[{','.join(PACKAGES)}]"]
    assert requirement_names(PYPROJECT["project"]["dependencies"]) == {"requests", "platformdirs"}
    assert all(extra in PACKAGES for extras_of in COMMAND_EXTRAS.values() for extra in extras_of)


def test_the_client_and_the_cli_work_without_any_extra(tmp_path):
    every_extra = set().union(*PACKAGES.values()) | {"pydantic", "starlette", "diffusers"}
    code = ("import scheduler.client\n"
            "from scheduler.cli.commands import main\n"
            "for argv in (['--help'], ['submit', '--help'], ['history', '--help'], ['simulate', '--help']):\n"
            "    assert main(argv) == 0, argv\n"
            "print(sorted(m for m in sys.modules if m.partition('.')[0] in "
            f"{sorted(every_extra)!r} and sys.modules[m] is not None))\n")
    done = run_without(every_extra, code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv, blocked, expected", [
    (["daemon"], {"ray"}, "wattsched daemon needs the daemon extra: pip install 'wattsched[daemon]' "
                          "(ray is not installed)"),
    (["simulate", "--cluster", "c.toml", "--jobs", "j.csv", "--policy", "fifo"], {"numpy", "numba"},
     "wattsched simulate needs the simulate extra: pip install 'wattsched[simulate]'"),
    (["db", "upgrade"], {"sqlalchemy"}, "wattsched db needs the daemon extra: pip install 'wattsched[daemon]'"),
])
def test_a_command_without_its_extra_says_which_to_install(argv, blocked, expected, tmp_path):
    code = f"from scheduler.cli.commands import main\nsys.exit(main({json.dumps(argv)}))\n"
    done = run_without(blocked, code, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"wattsched: error: {expected}"), done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_needing_two_extras_names_both():
    error = missing_extra("demo", ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert isinstance(error, MissingExtra)
    assert str(error) == ("wattsched demo needs the daemon and worker extras: pip install 'wattsched[daemon,worker]' "
                          "(torch is not installed)")


def test_a_package_of_another_extra_names_that_extra():
    error = missing_extra("token", ModuleNotFoundError("No module named 'psycopg'", name="psycopg"))
    assert str(error).startswith("wattsched token needs the postgres extra: pip install 'wattsched[postgres]'")


def test_a_missing_module_of_no_extra_keeps_its_traceback():
    with pytest.raises(ModuleNotFoundError):
        with naming_missing_extras("daemon"):
            raise ModuleNotFoundError("No module named 'scheduler.nothing'", name="scheduler.nothing")
