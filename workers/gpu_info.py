"""Who and where a worker is: its node, zone and GPUs, whether they are logical, and their power range."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

#: The Ray node label that names a node's electricity-grid zone (set with ``ray start --labels``).
ZONE_LABEL = "wattsched.io/zone"
#: Where a container's memory limit is read (cgroup v2, then v1); "max" or a huge v1 figure means none.
CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def describe_worker(worker_id: str, gpu_type: str, zone: str | None, logical_zone: str | None) -> dict[str, Any]:
    """The worker's ids, node, zone, GPUs and the GPU's power range (W), from inside its Ray actor.

    The zone is the node's label, else ``logical_zone`` for a logical GPU, else ``zone``; ``gpu_type`` is the
    model a logical GPU's simulated meter imitates.
    """
    import ray

    from workers.meters import factory

    ctx = ray.get_runtime_context()
    labels = ctx.get_node_labels() or {}
    gpu_ids = list(ray.get_gpu_ids())
    # Logical: Ray declares GPUs that NVML does not have (no GPU at all, or more declared than present).
    physical = factory.physical_gpu_count()
    logical = not gpu_ids or not all(isinstance(i, int) and 0 <= i < physical for i in map(as_index, gpu_ids))
    info = {
        "worker_id": worker_id,
        "node_id": ctx.get_node_id(),
        "hostname": socket.gethostname(),
        "zone": labels.get(ZONE_LABEL) or (logical_zone if logical else None) or zone,
        "gpu_ids": gpu_ids,
        "logical": logical,
        "memory_bytes": node_memory_bytes(),
    }
    info.update(gpu_power_info(gpu_ids, logical, gpu_type))
    return info


def node_memory_bytes(limits: tuple[str, ...] = CGROUP_MEMORY_LIMITS) -> int | None:
    """The memory the jobs of this node share, in bytes: its physical memory, or its container's limit when that
    is lower; None when the system does not say."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    for path in limits:
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw))
    return total


def as_index(gpu_id) -> int | str:
    """Ray reports GPU ids as ints or as strings (UUIDs when CUDA_VISIBLE_DEVICES holds them)."""
    try:
        return int(gpu_id)
    except (TypeError, ValueError):
        return gpu_id


def gpu_power_info(gpu_ids: list, logical: bool, gpu_type: str) -> dict[str, Any]:
    """The GPU's name and power range (W): from NVML for a physical GPU, from the GPU type table otherwise.

    idle_power_w is a nominal figure from the table (NVML has no idle reading); None for a model not in it.
    """
    from workers.meters.gpu_types import GPU_TYPES, lookup_gpu_type

    if logical or not gpu_ids:
        spec = lookup_gpu_type(gpu_type)
        return {"gpu_name": spec.name, "max_power_w": float(spec.max_w), "idle_power_w": float(spec.idle_w)}
    from workers.meters import nvml

    info = nvml.gpu_info(as_index(gpu_ids[0]))
    name = info["name"].decode() if isinstance(info["name"], bytes) else str(info["name"])
    # NVML says "NVIDIA A100-SXM4-40GB"; the table's key is the model part. Longest key first: -80GB before -8.
    spec = next((GPU_TYPES[k] for k in sorted(GPU_TYPES, key=len, reverse=True) if k.lower() in name.lower()), None)
    return {
        "gpu_name": name,
        "max_power_w": float(info["max_power_w"]),
        "idle_power_w": float(spec.idle_w) if spec else None,
    }
