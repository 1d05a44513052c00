"""Named factories, and the ``Policy`` protocol they make: configuration and the simulator pick a policy, and a
profile its plugins, with a string.

This module knows no policy or plugin of its own: the in-tree plugins register in ``policies.plugins``, the
in-tree policies in ``policies.builtin`` (which is what ``create_policy`` asks).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from policies.decisions import Decision
from policies.errors import DuplicatePlugin, DuplicatePolicy, UnknownPlugin, UnknownPolicy
from policies.snapshot import Snapshot


class Policy(Protocol):
    """A pure decision function over a snapshot: no I/O, no clock, no randomness of its own."""

    name: str

    def decide(self, snapshot: Snapshot) -> Sequence[Decision]:
        """One decision for each waiting job it has an opinion on (unmentioned jobs keep their state)."""


_ERRORS = {"policy": (DuplicatePolicy, UnknownPolicy, "policies"), "plugin": (DuplicatePlugin, UnknownPlugin, "plugins")}


class Registry:
    """Named factories (of policies, or of plugins with ``kind="plugin"``); a duplicate name is an error, an
    unknown one lists the valid names."""

    def __init__(self, kind: str = "policy") -> None:
        self.kind = kind
        self._duplicate, self._unknown, self._plural = _ERRORS[kind]
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, factory: Callable[..., Any]) -> None:
        if name in self._factories:
            raise self._duplicate(f"a {self.kind} named {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        """The registered names, in the order they were registered (the baseline first)."""
        return list(self._factories)

    def create(self, name: str, **config) -> Any:
        try:
            factory = self._factories[name]
        except KeyError:
            raise self._unknown(f"unknown {self.kind} {name!r}; valid {self._plural}: "
                                f"{', '.join(self.names())}") from None
        return factory(**config)
