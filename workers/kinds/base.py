"""What every job kind knows about its jobs, behind one interface that the scheduler and the job process ask.

The scheduler validates a submission with ``validate``, estimates a job's length from ``work_units``,
``nominal_s_per_unit`` and ``startup_s`` (until runs of the kind have been seen), and lets a user mark a job
interruptible only if the kind is. The job process calls ``run``. Neither keeps tables per kind.

The life of a job, as a kind sees it:

- launch: ``run(spec, context)`` in a child process of the worker (``workers.job_process``), with the spec as
  ``validate`` returned it and the job's working directory, which is the same across every run of the job;
- progress: ``context.report({"step": units done, "total": units of the job, ...})``, where ``total`` is
  ``work_units(spec)`` (a test holds each built-in kind to that);
- stop: ``context.should_stop()`` turns True on SIGTERM (suspend, preemption, cancel, time limit); an
  interruptible kind then writes a checkpoint into the workdir and returns ``{"stopped": True, ...}``;
- resume: the next run gets the same spec and workdir and continues from the checkpoint it finds there.

Implementations must import cheaply (no torch at module level): the scheduler imports every registered kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from workers.kinds.progress import Report, ShouldStop, never_stop, no_report
from workers.kinds.spec_paths import check_at_launch

#: How a spec refers to another job, e.g. a sampling job's ``"checkpoint": "job:<id>"`` (that job's workdir).
JOB_REF_PREFIX = "job:"


@dataclass(frozen=True)
class ReferencedJob:
    """Another job that a spec refers to, as the scheduler knows it: kind, normalised spec, working directory."""

    id: str
    kind: str
    spec: Mapping[str, Any]
    workdir: str


#: Finds a job a spec refers to by its id; None when there is no such job.
FindJob = Callable[[str], "ReferencedJob | None"]


@dataclass(frozen=True)
class JobContext:
    """What a running job gets besides its spec: where it works and how it talks to its process.

    workdir: the job's working directory, the same for every run of the job (checkpoints live there).
    report: progress callback; should_stop: poll that turns True when the job is asked to stop.
    """

    workdir: Path
    report: Report = no_report
    should_stop: ShouldStop = never_stop


class JobKind(ABC):
    """One kind of job (``diffusion-train``, ``synthetic``, ...): its spec, its work, and how it runs.

    name: the kind's registered name, as users submit it.
    interruptible: True if a job of the kind, asked to stop, checkpoints and later resumes without losing work;
        only such kinds may be submitted with ``interruptible=True`` (suspended for cleaner power or preempted).
    startup_s: nominal seconds a job process of the kind spends before its first unit of work (interpreter,
        imports, loading), before any run of the kind has been seen.
    """

    name: ClassVar[str]
    interruptible: ClassVar[bool] = False
    startup_s: ClassVar[float]
    #: True if a job launched ``per-gpu`` on several GPUs runs one process per GPU with torchrun's environment
    #: (``workers.launcher``); False: one process sees all the node's GPUs.
    process_per_gpu: ClassVar[bool] = False

    @abstractmethod
    def validate(self, spec: Any) -> dict[str, Any]:
        """The user's spec checked and normalised (every default filled in, JSON-able).

        Raises SpecError naming the field (``spec``, ``spec.<name>``) and what it accepts. Pure: where a spec's
        paths may point is the scheduler's to check (``paths``), and what they hold is checked by ``run``, since
        the scheduler may not see that file system.
        """

    def resolve(self, spec: dict[str, Any], find_job: FindJob) -> dict[str, Any]:
        """The normalised spec with its references to other jobs (``"job:<id>"``) resolved, as the scheduler
        stores it; called on submit, after ``validate``. Raises SpecError for a reference to no job.

        The default: a kind whose specs refer to no other job returns the spec as it is.
        """
        return spec

    def paths(self, spec: Mapping[str, Any]) -> dict[str, str]:
        """The spec's keys that name a file or folder on the workers (``dataset``, ``checkpoint``, ``cwd``), with
        their values, for a (resolved) spec: the scheduler lets them through only under the roots it allows and
        stores them resolved (``scheduler.store.paths``); ``run`` checks them again where the job runs
        (``workers.kinds.spec_paths.check_at_launch``). A relative path is under the job's own directory.

        The default: a kind whose specs name no path.
        """
        return {}

    def checked_spec(self, spec: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
        """The spec with each of its ``paths`` checked again where the job runs and made absolute (SpecError
        naming the field otherwise): ``run`` opens the paths of this spec only."""
        checked = dict(spec)
        for key, path in self.paths(spec).items():
            checked[key] = str(check_at_launch(f"spec.{key}", path, workdir))
        return checked

    def working_directory(self, spec: Mapping[str, Any], workdir: Path) -> Path:
        """Where the job's processes start: its own directory (a kind with ``argv`` may say otherwise)."""
        return workdir

    def argv(self, spec: Mapping[str, Any]) -> list[str] | None:
        """The command line of each of the job's processes; None (the default) runs ``workers.job_process``, which
        calls ``run`` and reports on its stdout. A kind that gives one (``command``) reports through its
        progress file instead."""
        return None

    def check_launch(self, spec: Mapping[str, Any], gpus: int, mode: str) -> None:
        """Whether a (normalised) spec can run on ``gpus`` GPUs launched ``mode`` (``per-gpu`` or ``per-node``,
        ``scheduler.store.launch``): checked on submit, so that a job that cannot run is refused then, not failed
        when it starts. Raises SpecError naming the field; pure, like ``validate``.

        The default: any spec runs on any number of GPUs, either way.
        """

    def memory_bytes(self, spec: Mapping[str, Any], gpus: int = 1) -> int | None:
        """An estimate of the memory (RAM) one process of a job with this spec holds at its peak, in bytes, when
        the job runs on ``gpus`` GPUs; None when the kind cannot tell (the default, so a new kind need not say).

        An estimate from the spec alone, not a measurement: the scheduler refuses on submit a job whose estimate
        exceeds the memory of the largest node, and a job's own memory limit (its launch's
        ``memory_limit_gib``) is what bounds what it really takes.
        """
        return None

    @abstractmethod
    def work_units(self, spec: Mapping[str, Any]) -> float:
        """Units of work of a job with this (normalised) spec: the ``total`` its progress reports will carry;
        None when the kind cannot know (``command``: only its progress lines say)."""

    @abstractmethod
    def nominal_s_per_unit(self, spec: Mapping[str, Any]) -> float:
        """Seconds per unit of work before any run of the kind has been seen (nominal, for one CPU thread)."""

    def units_done(self, spec: Mapping[str, Any], result: Mapping[str, Any] | None) -> float | None:
        """Units of work a run that finished with ``result`` did (what run-time estimates learn a rate from).

        The default: the whole job's work, which is right for kinds that always run from the start.
        """
        return self.work_units(spec)

    @abstractmethod
    def run(self, spec: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        """Run the job in this process until it is done or ``context.should_stop()``; returns a JSON-able result.

        The result has ``"stopped": bool`` (True when it stopped early on request). Called in the job's child
        process, so it may import heavy libraries. Raises SpecError or JobFailed when the job cannot run.
        """
