"""Gangs: how a job of N GPUs is laid out on the nodes of one zone.

A job runs as one gang, all of it in one zone and all of it at once: K GPUs on each of N / K nodes, with K
dividing N, as torchrun wants the same local world size on every node. A job that gives ``gpus_per_node`` = K
gets exactly that shape. One that leaves it None gets the fewest nodes that fit now: one node when one has N
free GPUs, else K on each of N / K nodes for the largest K dividing N that has enough nodes with K free (so
8 GPUs go on one node, else 4 + 4, else 2 x 4, else 1 x 8). A zone can never take a job when no shape it may
have finds enough nodes of K GPUs there, busy or not.

A pool without nodes (the simulator's ``gpus = N`` zone) has no node boundaries: any job that fits in its free
count fits, whatever its shape.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Mapping


@lru_cache(maxsize=1024)
def shapes(gpus: int, gpus_per_node: int | None) -> tuple[int, ...]:
    """The GPUs per node a job may take, best first: ``gpus_per_node`` alone when given (none when it does not
    divide ``gpus``), else every divisor of ``gpus`` from ``gpus`` (one node) down to 1 (``gpus`` nodes)."""
    if gpus_per_node is not None:
        return (gpus_per_node,) if 1 <= gpus_per_node <= gpus and gpus % gpus_per_node == 0 else ()
    return tuple(k for k in range(gpus, 0, -1) if gpus % k == 0)


def fit(counts: Iterable[int], gpus: int, gpus_per_node: int | None) -> int | None:
    """The GPUs per node of the first shape that ``counts`` (GPUs per node: free now, or in all) have room for:
    K such that at least ``gpus / K`` nodes have K; None when no shape fits."""
    counts = sorted(counts, reverse=True)
    for k in shapes(gpus, gpus_per_node):
        nodes = gpus // k
        if nodes <= len(counts) and counts[nodes - 1] >= k:
            return k
    return None


def first_nodes(free: Mapping[str, int], gpus: int, per_node: int) -> list[str]:
    """The first ``gpus / per_node`` nodes, in listed order, with ``per_node`` free (first fit: a one-node job
    takes the first node it fits on)."""
    need = gpus // per_node
    nodes = [node for node, count in free.items() if count >= per_node]
    return nodes[:need] if len(nodes) >= need else []


def describe(gpus: int, per_node: int) -> str:
    """A shape in words: "8 free GPUs on one node", "4 free GPUs on each of 2 nodes"."""
    if per_node >= gpus:
        return "a free GPU" if gpus == 1 else f"{gpus} free GPUs on one node"
    return f"{per_node} free GPU{'s' if per_node > 1 else ''} on each of {gpus // per_node} nodes"
