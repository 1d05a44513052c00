"""The in-tree policies by name: ``fifo`` (the baseline) and ``carbon-aware``.

``create_policy`` is what the daemon and the simulator call with the policy's name from configuration.
"""

from __future__ import annotations

from policies.carbon_aware import CarbonAwarePolicy
from policies.fifo import FifoPolicy
from policies.registry import Policy, Registry


def policy_registry() -> Registry:
    """A registry of the in-tree policies, the baseline first."""
    registry = Registry()
    registry.register(FifoPolicy.name, FifoPolicy)
    registry.register(CarbonAwarePolicy.name, CarbonAwarePolicy)
    return registry


def create_policy(name: str, **config) -> Policy:
    """The in-tree policy called ``name``, configured with ``config``; an unknown name lists the valid ones."""
    return policy_registry().create(name, **config)
