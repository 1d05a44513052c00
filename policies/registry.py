"""Policies registered by name, so configuration and the simulator can pick one with a string."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from policies.decisions import Decision
from policies.errors import DuplicatePolicy, UnknownPolicy
from policies.snapshot import Snapshot


class Policy(Protocol):
    """A pure decision function over a snapshot: no I/O, no clock, no randomness of its own."""

    name: str

    def decide(self, snapshot: Snapshot) -> Sequence[Decision]:
        """One decision for each waiting job it has an opinion on (unmentioned jobs keep their state)."""


PolicyFactory = Callable[..., Policy]


class Registry:
    """Named policy factories; a duplicate name is an error, an unknown one lists the valid names."""

    def __init__(self) -> None:
        self._factories: dict[str, PolicyFactory] = {}

    def register(self, name: str, factory: PolicyFactory) -> None:
        if name in self._factories:
            raise DuplicatePolicy(f"a policy named {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, **config) -> Policy:
        try:
            factory = self._factories[name]
        except KeyError:
            raise UnknownPolicy(f"unknown policy {name!r}; valid policies: {', '.join(self.names())}") from None
        return factory(**config)


def default_registry() -> Registry:
    """A registry holding the built-in policies."""
    from policies.fifo import FifoPolicy

    registry = Registry()
    registry.register(FifoPolicy.name, FifoPolicy)
    return registry


def create_policy(name: str, **config) -> Policy:
    """The built-in policy called ``name``, configured with ``config``."""
    return default_registry().create(name, **config)
