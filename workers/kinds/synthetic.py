"""The ``synthetic`` kind: a paced load that checkpoints, for testing a setup (and wattsched's own tests).

A job does ``steps`` steps of ``step_s`` seconds each (it sleeps: no GPU, no torch, hardly any CPU), writes a
checkpoint every ``checkpoint_every`` steps and when asked to stop, and resumes from it: it goes through the
life of an interruptible training job in seconds. A unit of work is one step.

Its workdir holds ``synthetic-checkpoint.json``: ``{"step": steps done}``, written atomically.

Steps are paced by the wall clock: a process paused for a while (as a logical GPU's power cap paces its job)
loses only what is left of the step it was sleeping in, so it does not slow down as a computing job would.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.errors import JobFailed
from workers.kinds.base import JobContext, JobKind
from workers.kinds.memory import MIB, PYTHON_RUNTIME_BYTES
from workers.kinds.progress import Pacer, ShouldStop
from workers.kinds.spec_fields import default_of, integer, number, parse_fields, spec_field, to_dict, validate_fields

NAME = "synthetic"
CHECKPOINT_FILE = "synthetic-checkpoint.json"
#: The longest a stop request waits inside one step's sleep, in seconds (a step may be long).
STOP_POLL_S = 0.05


@dataclass(frozen=True)
class SyntheticSpec:
    """A paced synthetic load.

    steps: total steps of the job, counted across resumes.
    step_s: seconds each step takes (slept); 0 runs the steps as fast as the loop goes.
    checkpoint_every: write a checkpoint every this many steps (and always at the end or on stop).
    memory_mib: MiB the job holds (allocated and written) while it steps, to try out memory limits; 0 for none.
    """

    steps: int = spec_field(100, integer(1, 10_000_000))
    step_s: float = spec_field(0.05, number(0, 3600))
    checkpoint_every: int = spec_field(10, integer(1, 10_000_000))
    memory_mib: int = spec_field(0, integer(0, 1024 * 1024))

    def __post_init__(self) -> None:
        validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


class Synthetic(JobKind):
    """The synthetic load; interruptible (it resumes from its checkpoint) and torch-free."""

    name = NAME
    interruptible = True
    #: The interpreter and workers' own imports.
    startup_s = 0.5

    def parse(self, spec: Any) -> SyntheticSpec:
        return parse_fields(SyntheticSpec, self.name, spec)

    def validate(self, spec: Any) -> dict[str, Any]:
        return self.parse(spec).to_dict()

    def work_units(self, spec: Mapping[str, Any]) -> float:
        return float(spec.get("steps", default_of(SyntheticSpec, "steps")))

    def nominal_s_per_unit(self, spec: Mapping[str, Any]) -> float:
        # The spec says how long a step takes.
        return float(spec.get("step_s", default_of(SyntheticSpec, "step_s")))

    def units_done(self, spec: Mapping[str, Any], result: Mapping[str, Any] | None) -> float | None:
        if result and result.get("steps_this_run") is not None:
            return float(result["steps_this_run"])
        return self.work_units(spec)

    def memory_bytes(self, spec: Mapping[str, Any], gpus: int = 1) -> int | None:
        """What it holds (``memory_mib``) and the interpreter."""
        return spec.get("memory_mib", 0) * MIB + PYTHON_RUNTIME_BYTES

    def run(self, spec: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        return run_synthetic(self.parse(spec), context)


def run_synthetic(spec: SyntheticSpec, context: JobContext) -> dict[str, Any]:
    """Step until spec.steps are done (counting earlier runs) or the job is asked to stop.

    Reports ``{"step", "total"}`` on the first and last step and at most every 0.5 s. Returns ``stopped``,
    ``steps_done``, ``total_steps``, ``resumed_from_step``, ``steps_this_run`` and ``checkpoint`` (its path).
    """
    workdir = Path(context.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = workdir / CHECKPOINT_FILE
    # A checkpoint beyond the spec's steps (the job was resubmitted shorter) counts as done.
    start = step = min(read_checkpoint(checkpoint), spec.steps)
    held = _hold_memory(spec.memory_mib)  # noqa: F841  (held while the job steps)
    saved = start
    pacer = Pacer()
    while step < spec.steps and not context.should_stop():
        if not _sleep_unless_stopped(spec.step_s, context.should_stop):
            break
        step += 1
        if step % spec.checkpoint_every == 0:
            saved = _write_checkpoint(checkpoint, step)
        if pacer.due(last_step=step == spec.steps):
            context.report({"step": step, "total": spec.steps})
    if step != saved or not checkpoint.exists():
        _write_checkpoint(checkpoint, step)
    return {
        "stopped": step < spec.steps,
        "steps_done": step,
        "total_steps": spec.steps,
        "resumed_from_step": start,
        "steps_this_run": step - start,
        "checkpoint": str(checkpoint),
    }


def read_checkpoint(path: Path) -> int:
    """Steps done according to a synthetic job's checkpoint; 0 when there is none."""
    try:
        step = json.loads(path.read_text())["step"]
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobFailed(f"the checkpoint {str(path)!r} cannot be read ({exc}); delete it to start over") from None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise JobFailed(f"the checkpoint {str(path)!r} holds step {step!r}; delete it to start over")
    return step


def _hold_memory(mib: int) -> bytearray:
    """``mib`` MiB allocated and written to (so the pages are really the process's)."""
    held = bytearray(mib * MIB)
    for offset in range(0, len(held), 4096):
        held[offset] = 1
    return held


def _write_checkpoint(path: Path, step: int) -> int:
    # Renamed into place, so a kill mid-write leaves the previous checkpoint, never half of one.
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    temporary.write_text(json.dumps({"step": step}))
    os.replace(temporary, path)
    return step


def _sleep_unless_stopped(duration_s: float, should_stop: ShouldStop) -> bool:
    """Sleep ``duration_s``, looking at ``should_stop`` meanwhile; False if it turned True (the step is not done)."""
    end_s = time.monotonic() + duration_s
    while (left_s := end_s - time.monotonic()) > 0:
        time.sleep(min(left_s, STOP_POLL_S))
        if should_stop():
            return False
    return True
