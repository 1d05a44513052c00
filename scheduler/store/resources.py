"""Whether a submitted job can run at all on this cluster: its kind accepts its GPUs and launch, and the memory
its kind estimates it needs fits the largest node. Checked on submit, so that a job that could never run is
refused then (400, naming the field and the figures), not failed when it starts or left waiting for ever."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scheduler.errors import InvalidRequest
from scheduler.store.launch import Launch
from workers.errors import SpecError
from workers.kinds.base import JobKind
from workers.kinds.memory import GIB


def check_resources(kind: JobKind, spec: Mapping[str, Any], gpus: int, launch: Launch,
                    largest_node_bytes: Callable[[], int | None]) -> None:
    """Raise InvalidRequest when ``kind`` refuses ``spec`` on ``gpus`` GPUs launched as ``launch`` says, or when
    one of its processes is estimated to need more memory than the largest node has (``largest_node_bytes()``,
    asked only for a kind that estimates; None: no node has said, and nothing is refused for it)."""
    try:
        kind.check_launch(spec, gpus, launch.mode)
    except SpecError as exc:
        raise InvalidRequest(str(exc), exc.field) from None
    estimate = kind.memory_bytes(spec, gpus)
    if estimate is None:
        return
    node_memory_bytes = largest_node_bytes()
    if node_memory_bytes is not None and estimate > node_memory_bytes:
        raise InvalidRequest(
            f"spec: a process of this {kind.name} job is estimated to need {estimate / GIB:.1f} GiB of memory, more "
            f"than the largest node has ({node_memory_bytes / GIB:.1f} GiB); make the model, its batch or the "
            f"images it keeps smaller", "spec")
