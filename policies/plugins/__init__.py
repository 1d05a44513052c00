"""The built-in plugins, registered by name so a profile can be assembled from configuration."""

from __future__ import annotations

from typing import Any, Mapping

from policies.framework import Profile
from policies.plugins.capacity import ArrivalOrder, FullPower, NodeCapacity, PowerBudget, ZoneOrder
from policies.plugins.carbon import CarbonCap, CarbonOverRun, CarbonPlanner, CarbonWindow, UrgencyFirst
from policies.plugins.holds import DeadlineHolds
from policies.plugins.preemption import Preempt
from policies.plugins.pressure import QueuePressure
from policies.registry import Registry


def plugin_registry() -> Registry:
    """A registry of every built-in plugin class by its ``name``."""
    registry = Registry(kind="plugin")
    for plugin in (ArrivalOrder, FullPower, NodeCapacity, PowerBudget, ZoneOrder,
                   CarbonPlanner, UrgencyFirst, CarbonOverRun, CarbonWindow, CarbonCap, Preempt, DeadlineHolds,
                   QueuePressure):
        registry.register(plugin.name, plugin)
    return registry


def assemble(name: str, *, queue_sort: str, cap_chooser: str, filters: tuple[str, ...] = (),
             scorers: tuple[tuple[str, float], ...] = (), pre_filters: tuple[str, ...] = (),
             permits: tuple[str, ...] = (), preemptors: tuple[str, ...] = (),
             config: Mapping[str, Mapping[str, Any]] | None = None) -> Profile:
    """A profile from plugin names; ``config`` maps a plugin name to the keyword arguments it is built with."""
    registry, config = plugin_registry(), config or {}

    def make(plugin: str):
        return registry.create(plugin, **config.get(plugin, {}))

    return Profile(name=name, queue_sort=make(queue_sort), cap_chooser=make(cap_chooser),
                   filters=tuple(map(make, filters)), scorers=tuple((make(p), w) for p, w in scorers),
                   pre_filters=tuple(map(make, pre_filters)), permits=tuple(map(make, permits)),
                   preemptors=tuple(map(make, preemptors)))
