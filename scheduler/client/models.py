"""What the daemon's REST API answers, as frozen dataclasses: ``Job`` (with its ``Run``s and ``JobEnergy``),
``History`` (``HistoryRow``s and ``HistoryTotals``) and ``LogChunk``.

Parsed leniently on purpose: unknown fields are ignored (a newer daemon may add some) and missing optional ones
are None, so client and daemon can be upgraded one at a time. ``raw`` keeps the JSON as served.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from scheduler.store.job_state import TERMINAL


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    # The API speaks UTC; a time without an offset is UTC too, never local time.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _tuple(value: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(value or ())


def _build(cls, data: Mapping[str, Any], required: Sequence[str] = (), **convert: Callable[[Any], Any]):
    """An instance of the dataclass ``cls`` from ``data``: known fields only, each through its converter."""
    for name in required:
        if data.get(name) is None:
            raise KeyError(name)
    values = {}
    for f in fields(cls):
        if f.name == "raw":
            continue
        value = data.get(f.name)
        values[f.name] = convert[f.name](value) if f.name in convert else value
    return cls(**values, raw=dict(data))


@dataclass(frozen=True)
class JobEnergy:
    """Energy (joules and kWh) and emissions (grams CO2e) of a job's runs so far.

    ``methods`` says how the figures were obtained (``nvml-counter``, ``rapl``, ``estimate``, ``simulated``,
    ...); ``gpu_method`` and ``cpu_method`` say it per figure where the daemon reports them.
    """

    gpu_energy_j: float | None
    cpu_energy_j: float | None
    energy_j: float | None
    energy_kwh: float | None
    methods: tuple[str, ...]
    gpu_method: str | None
    cpu_method: str | None
    avg_power_w: float | None
    peak_power_w: float | None
    emissions_g: float | None
    intensity_g_per_kwh: float | None
    carbon_source: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobEnergy:
        return _build(cls, data, methods=_tuple)


@dataclass(frozen=True)
class Run:
    """One attempt or resumed segment of a job on a worker: where, on which GPUs, at which power cap (W)."""

    id: int
    attempt: int | None
    node_id: str | None
    zone: str | None
    gpu_ids: tuple[Any, ...]
    power_cap_w: float | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_status: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        return _build(cls, data, ("id",), gpu_ids=_tuple, started_at=_time, ended_at=_time)


@dataclass(frozen=True)
class Job:
    """A job as the daemon sees it: its request, its state and why, its runs and its energy so far."""

    id: str
    kind: str
    spec: dict[str, Any]
    gpus: int | None
    state: str
    reason: str | None
    zones: tuple[str, ...]
    deadline: datetime | None
    interruptible: bool
    cancel_requested: bool
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None
    result: Any
    error: str | None
    energy: JobEnergy | None
    runs: tuple[Run, ...]
    user: str | None = None
    priority: int | None = None
    not_before: datetime | None = None
    time_limit_s: float | None = None
    hold: bool = False
    depends_on: tuple[str, ...] = ()
    #: While it waits: the policy's status code ("Unschedulable", "Wait", "UnschedulableAndUnresolvable") and the
    #: plugin that decided (None when no policy has looked, or the job waits for its own constraints).
    wait_code: str | None = None
    wait_plugin: str | None = None
    unschedulable: bool = False
    gpus_per_node: int | None = None
    launch: str = "per-gpu"
    stop_signal: str = "SIGTERM"
    grace_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """Whether the job is over (succeeded, failed or cancelled)."""
        return self.state in TERMINAL  # JobState is a str Enum, so a plain string matches its member

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        return _build(
            cls, data, ("id", "kind", "state"),
            spec=lambda v: v or {}, zones=_tuple, interruptible=bool, cancel_requested=bool,
            deadline=_time, submitted_at=_time, started_at=_time, finished_at=_time, not_before=_time,
            hold=bool, depends_on=_tuple, unschedulable=bool,
            energy=lambda v: None if v is None else JobEnergy.from_dict(v),
            runs=lambda v: tuple(Run.from_dict(r) for r in v or ()),
        )


@dataclass(frozen=True)
class HistoryRow:
    """One job in the energy history: where and when it ran, its energy (J, kWh) and emissions (g CO2e)."""

    job_id: str
    kind: str | None
    state: str | None
    zone: str | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    gpu_energy_j: float | None
    cpu_energy_j: float | None
    energy_j: float | None
    energy_kwh: float | None
    methods: tuple[str, ...]
    emissions_g: float | None
    intensity_g_per_kwh: float | None
    carbon_source: str | None
    user: str | None = None
    counterfactual_emissions_g: float | None = None
    saving_g: float | None = None
    """Emissions saved against the job's fifo counterfactual (g CO2e); None where no counterfactual is known."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryRow:
        return _build(cls, data, ("job_id",), methods=_tuple, submitted_at=_time, started_at=_time,
                      finished_at=_time)


@dataclass(frozen=True)
class HistoryTotals:
    """Sums over the rows of a history query (joules, kWh, grams CO2e)."""

    jobs: int
    gpu_energy_j: float | None
    cpu_energy_j: float | None
    energy_j: float | None
    energy_kwh: float | None
    emissions_g: float | None
    saving_g: float | None = None
    saving_jobs: int | None = None
    #: The sums per way the energy was obtained (each a dict with ``methods`` and the keys above); the top-level
    #: sums are None when more than one method is present (``mixed_methods``): figures of different methods are
    #: never added up.
    by_method: tuple[dict[str, Any], ...] = ()
    mixed_methods: bool = False
    energy_unknown_jobs: int = 0
    emissions_unknown_jobs: int = 0
    saving_basis: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryTotals:
        return _build(cls, data, jobs=lambda v: int(v or 0), by_method=_tuple, mixed_methods=bool,
                      energy_unknown_jobs=lambda v: int(v or 0), emissions_unknown_jobs=lambda v: int(v or 0))


@dataclass(frozen=True)
class History:
    """The answer to a history query: one row per job, their totals, and (when grouped) per-group sums."""

    jobs: tuple[HistoryRow, ...]
    totals: HistoryTotals
    group_by: str | None = None
    groups: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method behind the totals, in first-seen order: a sum is only as measured as its parts."""
        return tuple(dict.fromkeys(m for row in self.jobs for m in row.methods))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        return _build(cls, data, ("jobs",), jobs=lambda v: tuple(HistoryRow.from_dict(r) for r in v),
                      totals=lambda v: HistoryTotals.from_dict(v or {}), groups=_tuple)


@dataclass(frozen=True)
class LogChunk:
    """Part of a job's log: ``text`` from byte ``offset`` up to ``next_offset``; ``complete`` once the job is
    over and everything was read."""

    job_id: str
    stream: str
    offset: int
    next_offset: int
    text: str
    state: str | None
    complete: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogChunk:
        return _build(cls, data, ("next_offset", "text"), complete=bool, text=lambda v: v or "")
