"""The cluster's nodes and GPUs in the database, as the controller reports them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.store.models import Gpu, Node


def record_inventory(sessions: sessionmaker[Session], inventory: Iterable[Mapping[str, Any]], now: datetime) -> None:
    """Mark every reported node alive and seen ``now``, and add nodes and GPUs seen for the first time."""
    with sessions.begin() as session:
        for item in inventory:
            node = session.get(Node, item["node_id"])
            if node is None:
                node = Node(id=item["node_id"], hostname=item.get("hostname", ""), zone=item["zone"],
                            first_seen_at=now, last_seen_at=now)
                session.add(node)
            node.alive, node.last_seen_at, node.zone = True, now, item["zone"]
            if item.get("memory_bytes"):
                node.memory_bytes = int(item["memory_bytes"])
            if session.get(Gpu, item["worker_id"]) is None:
                session.add(Gpu(id=item["worker_id"], node_id=item["node_id"],
                                index=(item.get("gpu_ids") or [0])[0], name=item.get("gpu_name", ""),
                                logical=bool(item.get("logical")), max_power_w=item.get("max_power_w"),
                                idle_power_w=item.get("idle_power_w")))


def largest_node_memory_bytes(sessions: sessionmaker[Session]) -> int | None:
    """The memory of the largest live node, as its workers reported it; None when no node has reported one."""
    with sessions() as session:
        return session.scalar(select(func.max(Node.memory_bytes)).where(Node.alive.is_(True)))
