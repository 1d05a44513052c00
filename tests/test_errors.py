"""One exception tree per package, drawn in its errors module's docstring.

Every exception class of scheduler/, workers/ and policies/ lives in its package's errors module (the client,
which ships without the daemon, has its own: scheduler/client/errors.py), and the tree drawn in that module's
docstring is the tree of its classes: a class added, moved or re-parented without the drawing fails here.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ERROR_MODULES = ("scheduler.errors", "scheduler.client.errors", "workers.errors", "policies.errors")
BUILTIN_BASES = {"Exception", "BaseException", "ValueError", "RuntimeError", "KeyError", "LookupError", "OSError",
                 "TimeoutError", "TypeError", "ConnectionError"}


def classes_of(module):
    return {name: cls for name, cls in vars(module).items()
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == module.__name__}


def drawn_tree(docstring):
    """{class name: parent name} from the tree drawn after ``::`` (the root's parent: None)."""
    block = docstring.split("::", 1)[1]
    lines = [line for line in block.splitlines() if line.strip()]
    root = re.match(r"\s*(\w+)", lines[0])
    tree, stack = {root.group(1): None}, [(root.start(1), root.group(1))]
    for line in lines[1:]:
        found = re.search(r"── (\w+)", line)
        if not found:
            if not line.startswith(" ") or not re.match(r"[\s│]*[a-z(]", line):
                break  # the end of the drawing
            continue  # a description's second line
        column, name = found.start(1), found.group(1)
        while stack[-1][0] >= column:
            stack.pop()
        tree[name] = stack[-1][1]
        stack.append((column, name))
    return tree


@pytest.mark.parametrize("name", ERROR_MODULES)
def test_the_drawn_tree_is_the_tree_of_classes(name):
    module = importlib.import_module(name)
    actual = {cls_name: (None if cls.__bases__[0] in (Exception, BaseException) else cls.__bases__[0].__name__)
              for cls_name, cls in classes_of(module).items()}
    assert drawn_tree(module.__doc__) == actual


def test_every_exception_class_lives_in_its_package_errors_module():
    exception_names = BUILTIN_BASES | {n for m in ERROR_MODULES for n in classes_of(importlib.import_module(m))}
    error_files = {ROOT / (m.replace(".", "/") + ".py") for m in ERROR_MODULES}
    strays = []
    for package in ("scheduler", "workers", "policies"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in error_files:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {ast.unparse(b).rpartition(".")[2] for b in node.bases}
                    if bases & exception_names or node.name.endswith(("Error", "Exception")):
                        strays.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert strays == []
