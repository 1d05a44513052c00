"""SQLAlchemy 2 models: the daemon's record of jobs, runs, energy, carbon, nodes and users.

The daemon is the only writer (workers report through the Ray controller). Times are stored as UTC; units are
in the column names.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints, so Alembic's batch mode on SQLite and PostgreSQL agree on what to alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone, so it is stored naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    """Someone who submits jobs. Roles: ``admin`` sees all jobs, ``user`` only their own."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="user")
    created_at: Mapped[datetime]
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    """A bearer token, stored only as its SHA-256 hash."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    user: Mapped[User] = relationship(back_populates="tokens")


class Node(Base):
    """A Ray node that has (logical or physical) GPUs, and the grid zone it draws power from."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Ray node id
    hostname: Mapped[str] = mapped_column(String(255), default="")
    zone: Mapped[str] = mapped_column(String(64))
    alive: Mapped[bool] = mapped_column(Boolean, default=True)
    # What its workers report: its physical memory, or its container's limit when lower; None until reported
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    gpus: Mapped[list[Gpu]] = relationship(back_populates="node")


class Gpu(Base):
    """One GPU of a node, served by one worker actor. ``logical`` GPUs have no hardware (simulated meter)."""

    __tablename__ = "gpus"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # the worker id
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    index: Mapped[int]
    name: Mapped[str] = mapped_column(String(100), default="")
    logical: Mapped[bool] = mapped_column(Boolean, default=False)
    max_power_w: Mapped[float | None] = mapped_column(Float)
    idle_power_w: Mapped[float | None] = mapped_column(Float)
    node: Mapped[Node] = relationship(back_populates="gpus")


class Job(Base):
    """A unit of work a user submitted; its state follows scheduler.store.job_state."""

    __tablename__ = "jobs"
    # One job per (user, client-chosen key): a retried submission finds the job it created the first time.
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key", name="uq_jobs_user_id_idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    gpus: Mapped[int] = mapped_column(Integer, default=1)
    zones: Mapped[list[Any]] = mapped_column(default=list)  # allowed zones; empty = any
    deadline_at: Mapped[datetime | None]
    interruptible: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")  # why it is in its state, for people
    # While it waits: the policy's status code (policies.status.Code) and the plugin that said it; None otherwise
    wait_code: Mapped[str | None] = mapped_column(String(40))
    wait_plugin: Mapped[str | None] = mapped_column(String(64))
    # How its processes are laid out and stopped (scheduler.store.launch)
    gpus_per_node: Mapped[int | None] = mapped_column(Integer)  # None: the fewest nodes that fit
    launch: Mapped[str] = mapped_column(String(16), default="per-gpu")  # per-gpu | per-node processes
    stop_signal: Mapped[str] = mapped_column(String(16), default="SIGTERM")
    grace_s: Mapped[float] = mapped_column(Float, default=120.0)  # from the stop signal to SIGKILL
    memory_limit_gib: Mapped[float | None] = mapped_column(Float)  # per process; None: no limit
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime] = mapped_column(index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # latest progress the job reported
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    workdir: Mapped[str] = mapped_column(Text, default="")
    not_before_at: Mapped[datetime | None]  # do not start before then (Slurm's --begin)
    time_limit_s: Mapped[float | None] = mapped_column(Float)  # wall-clock limit of the job, None = none
    held: Mapped[bool] = mapped_column(Boolean, default=False)  # held by the user: never started until released
    depends_on: Mapped[list[Any]] = mapped_column(default=list)  # job ids that must succeed first
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # SHA-256 of the submission, for key reuse
    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id")
    runs: Mapped[list[Run]] = relationship(back_populates="job", order_by="Run.attempt")
    user: Mapped[User | None] = relationship()


class JobEvent(Base):
    """One state change of a job, with the reason a user can read."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    job: Mapped[Job] = relationship(back_populates="events")


class Run(Base):
    """One attempt or resumed segment of a job on one node, at one power cap."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    node_id: Mapped[str] = mapped_column(String(64))
    zone: Mapped[str] = mapped_column(String(64), index=True)
    gpu_ids: Mapped[list[Any]]  # worker ids of the GPUs used
    power_cap_w: Mapped[float | None] = mapped_column(Float)
    # The cap step it ran at (policies.snapshot.CapStep): cap_speed x full speed, drawing cap_power_fraction x
    # full power; 1 and 1 at full power. Kept, not looked up in the power profiles, so the fifo counterfactual
    # (at full power) is the same after a restart or a change of profiles.
    cap_speed: Mapped[float] = mapped_column(Float, default=1.0)
    cap_power_fraction: Mapped[float] = mapped_column(Float, default=1.0)
    # How its worker applied the cap (workers.events.CapMode): applied, dry-run or simulated; None when no cap was
    # asked or the run ended before saying. Only a cap in force (applied, simulated) is credited in the fifo
    # counterfactual: a dry run's GPU ran at its default limit.
    power_cap_mode: Mapped[str | None] = mapped_column(String(16))
    # The limit in force (the enforced limit read back, or the simulated meter's), or a dry run's would-be limit.
    power_cap_limit_w: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # When the policy planned to suspend it (an interruptible job's clean stretch ends), None = no plan. Kept so
    # that a daemon that takes over (a restart, a standby) arms the suspension again (scheduler.store.timers).
    planned_suspend_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(20))  # scheduler.store.job_state.RunStatus
    exit_code: Mapped[int | None]
    message: Mapped[str | None] = mapped_column(Text)
    # A gang's per-node breakdown as its controller reported it at the run's end, however it ended
    # (scheduler.cluster.gang.NODES_KEY); None for a run on one node, or one stored before it was kept.
    nodes: Mapped[list[Any] | None]
    job: Mapped[Job] = relationship(back_populates="runs")
    energy: Mapped[RunEnergy | None] = relationship(back_populates="run", uselist=False)
    samples: Mapped[list[PowerSample]] = relationship(back_populates="run", order_by="PowerSample.at")


class RunEnergy(Base):
    """The energy and emissions of one run, each figure with how it was obtained."""

    __tablename__ = "run_energy"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True)
    gpu_energy_j: Mapped[float] = mapped_column(Float)
    cpu_energy_j: Mapped[float] = mapped_column(Float)
    gpu_method: Mapped[str] = mapped_column(String(32))  # nvml-counter, nvml-power-poll, simulated, ...
    cpu_method: Mapped[str] = mapped_column(String(32))  # rapl, estimate, ...
    avg_power_w: Mapped[float] = mapped_column(Float)
    peak_power_w: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    intensity_g_per_kwh: Mapped[float | None] = mapped_column(Float)  # energy-weighted mean over the run
    emissions_g: Mapped[float | None] = mapped_column(Float)
    carbon_source: Mapped[str | None] = mapped_column(String(64))  # e.g. "synthetic"
    carbon_basis: Mapped[str | None] = mapped_column(String(16))  # actual | forecast | synthetic
    # What the run would have emitted under the fifo counterfactual (started at submission, full power);
    # None until the scheduler computes it.
    counterfactual_emissions_g: Mapped[float | None] = mapped_column(Float)
    run: Mapped[Run] = relationship(back_populates="energy")


class PowerSample(Base):
    """A downsampled point of a run's power draw; emissions integrate intensity over these."""

    __tablename__ = "power_samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    gpu_power_w: Mapped[float] = mapped_column(Float)
    cpu_power_w: Mapped[float] = mapped_column(Float)
    gpu_energy_j: Mapped[float] = mapped_column(Float)  # cumulative since the run started
    cpu_energy_j: Mapped[float] = mapped_column(Float)
    run: Mapped[Run] = relationship(back_populates="samples")


class CarbonIntensity(Base):
    """A carbon-intensity value of a zone from one source: an actual, or a forecast issued at ``issued_at``."""

    __tablename__ = "carbon_intensity"
    __table_args__ = (
        UniqueConstraint("zone", "at", "source", "basis", "issued_at", name="uq_carbon_intensity_point"),
        Index("ix_carbon_intensity_zone_at", "zone", "at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    zone: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    intensity_g_per_kwh: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(64))
    basis: Mapped[str] = mapped_column(String(16))  # actual | forecast | synthetic
    issued_at: Mapped[datetime]


class LeaderLease(Base):
    """Which daemon schedules: the holder of the row named ``scheduler`` until ``expires_at`` (it renews it every
    few seconds; another daemon takes it over once it has expired). See scheduler.store.lease."""

    __tablename__ = "leader_lease"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
