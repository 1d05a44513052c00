"""The client's public API is what ``scheduler.client`` exports: every public name its modules define, and no
more (as httpx's test_exported_members keeps its API honest)."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys

import scheduler.client

MODULES = ("scheduler.client.client", "scheduler.client.errors", "scheduler.client.models")


def defined_in(name: str) -> set[str]:
    """The public classes, functions and constants a module defines at its top level (not those it imports)."""
    names = set()
    for node in ast.parse(inspect.getsource(importlib.import_module(name))).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def test_every_public_name_of_the_modules_is_exported_once():
    defined = [n for m in MODULES for n in defined_in(m)]
    assert len(defined) == len(set(defined))  # one home per name
    assert set(defined) == set(scheduler.client.__all__)


def test_every_exported_name_is_the_object_of_its_module():
    for name in scheduler.client.__all__:
        homes = [importlib.import_module(m) for m in MODULES if name in defined_in(m)]
        assert getattr(scheduler.client, name) is getattr(homes[0], name), name


def test_star_import_gives_the_public_api_only():
    namespace: dict = {}
    exec("from scheduler.client import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(scheduler.client.__all__)


def test_every_module_of_the_client_stays_light():
    for module in ("scheduler.client", *MODULES):
        code = (f"import {module}, sys; heavy = {{'torch', 'ray', 'sqlalchemy', 'fastapi', 'numpy'}} & "
                "set(sys.modules); assert not heavy, heavy")
        subprocess.run([sys.executable, "-c", code], check=True)
