"""Typed settings for the daemon, read lazily from ``WATTSCHED_*`` environment variables.

Every field says what it is and what its default means. Nothing is read at import time: call
``Settings.from_env()`` where the settings are needed, and pass them down.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from scheduler.errors import ConfigError

ENV_PREFIX = "WATTSCHED_"
#: Who may submit ``command`` jobs (the user's own code, run as the workers' OS user), weakest first.
COMMAND_JOBS = ("off", "loopback", "admins", "all")


def default_data_dir() -> Path:
    """The user's data directory for wattsched (database file, job outputs, the local daemon's address)."""
    if os.environ.get("WATTSCHED_DATA_DIR"):
        return Path(os.environ["WATTSCHED_DATA_DIR"])
    import platformdirs

    return Path(platformdirs.user_data_dir("wattsched"))


@dataclass(frozen=True)
class Settings:
    """How one daemon runs. Build with ``from_env()``; override fields with ``dataclasses.replace``."""

    #: Where the SQLite database, job outputs and daemon.json live.
    data_dir: Path = field(default_factory=default_data_dir)
    #: SQLAlchemy URL; empty means a SQLite file ``wattsched.db`` in data_dir.
    database_url: str = ""
    #: Seconds to wait for a new PostgreSQL connection (at least 2, libpq's floor; half of it for a pooled one
    #: to answer the check made before each use); past it the API answers 503 and the daemon retries later.
    db_connect_timeout_s: float = 3.0
    #: Seconds one PostgreSQL statement may run: the server cancels it, and the daemon gives up on a connection
    #: that has not answered a second after that.
    db_statement_timeout_s: float = 10.0
    #: Seconds a request waits for a free connection of the engine's pool before it is answered 503.
    db_pool_timeout_s: float = 5.0
    #: Seconds a SQLite write waits for another writer's lock before it is answered 503.
    db_busy_timeout_s: float = 10.0
    #: Address the REST API listens on; loopback only by default.
    host: str = "127.0.0.1"
    #: Port of the REST API; 0 picks a free one (tests).
    port: int = 8765
    #: Ray address to connect to; empty starts a local Ray instance (the embedded default).
    ray_address: str = ""
    #: Logical GPUs to declare when starting a local Ray on a machine without GPUs.
    logical_gpus: int = 2
    #: GPU model the simulated meter imitates for logical GPUs (see workers.meters.gpu_types).
    logical_gpu_type: str = "A100-SXM4-40GB"
    #: Zones of the logical GPUs of the embedded default, assigned round-robin (empty: all in ``default_zone``, as a
    #: real node without a zone label; a job's GPUs share one zone, so spreading two GPUs over two zones means no
    #: two-GPU job can ever start).
    logical_zones: tuple[str, ...] = ()
    #: Zone of a GPU whose node carries no ``wattsched.io/zone`` label.
    default_zone: str = "DE"
    #: Name of the scheduling policy (see policies.builtin).
    policy: str = "fifo"
    #: Options of the policy, as JSON in WATTSCHED_POLICY_OPTIONS; for carbon-aware, e.g. {"min_stretch_s": 300}
    #: (the shortest stretch an interruptible job runs before it may be suspended again).
    policy_options: dict = field(default_factory=dict)
    #: Seconds between scheduling ticks; submits and finishes also tick at once.
    tick_interval_s: float = 5.0
    #: Seconds between the daemon's syncs of the GPU workers with the cluster's nodes: a node that joins (or a
    #: lost one) is noticed within this long. Each sync asks Ray for its nodes and probes every worker.
    node_sync_s: float = 30.0
    #: Seconds a daemon's leader lease lasts: a standby on the same database takes over this long after the
    #: leader's last renewal (its death, or its losing the database).
    leader_lease_s: float = 10.0
    #: Seconds between the leader's renewals of its lease (and a standby's attempts to take it over).
    leader_renew_s: float = 3.0
    #: Seconds between power samples taken by the workers' meters.
    sample_interval_s: float = 0.5
    #: At most this many power samples are kept in the database per run (downsampled).
    max_samples_per_run: int = 600
    #: torch threads for each job process; several jobs share the cores of one node.
    torch_threads: int = 1
    #: Energy meter mode for GPUs: auto (NVML where present, else simulated), nvml or simulated.
    meter_mode: str = "auto"
    #: Power caps on physical GPUs are only worked out and logged unless this is false (setting them needs root).
    power_cap_dry_run: bool = True
    #: Cluster-wide limit on the summed GPU draw (W) that the policy keeps to, counting each job at its kind's
    #: estimated draw and its cap; 0 means no limit.
    power_budget_w: float = 0.0
    #: PROFILES.csv (the simulator's format: profile,cap_fraction,speed,power_fraction) of how jobs run under
    #: power caps; a profile named after a job kind (diffusion-train) lets the policy cap that kind's jobs.
    power_profiles: str = ""
    #: TOML/JSON file mapping zones to carbon providers (see scheduler/carbon_providers/config.py); empty uses
    #: the built-in synthetic signal.
    carbon_config: str = ""
    #: Seconds between refreshes of every zone's carbon signal from its provider.
    carbon_refresh_s: float = 300.0
    #: Who may submit ``command`` jobs, which run arbitrary code as the workers' OS user: ``loopback`` (the
    #: default: the local user's and admins' tokens, only while the API listens on a loopback address),
    #: ``admins`` (admin tokens, on any address), ``all`` (every token) or ``off``.
    command_jobs: str = "loopback"
    #: Folders under which the paths of job specs (a dataset, a checkpoint, a command's cwd) may point, as
    #: WATTSCHED_PATH_ROOTS=/data/datasets:/scratch (absolute, separated by ':'). Empty: the local user's home
    #: directory for the local user's token on a daemon listening on loopback only, else none. Each user's own
    #: jobs' directories are always allowed; the data directory and the database never (scheduler.store.paths).
    path_roots: tuple[str, ...] = field(default=(), metadata={"separator": os.pathsep})
    #: The secret of a first admin token, made for user ``admin`` at start when no admin token exists (a fresh
    #: database behind a daemon listening beyond loopback, as in docker/compose.yaml). Never shown.
    admin_token: str = field(default="", repr=False)
    #: A file holding that secret (a Docker or Kubernetes secret), read when WATTSCHED_ADMIN_TOKEN is not set.
    admin_token_file: str = ""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'wattsched.db'}"

    @property
    def jobs_dir(self) -> Path:
        """Where each job's working directory (checkpoints, images, logs) is created."""
        return self.data_dir / "jobs"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        """Settings from ``WATTSCHED_<FIELD>`` variables, then keyword overrides; bad values name the variable."""
        env = os.environ if environ is None else environ
        base = cls()
        values = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name not in env or f.name == "data_dir":
                continue
            raw = env[name]
            current = getattr(base, f.name)
            try:
                if isinstance(current, bool):
                    values[f.name] = raw.lower() in ("1", "true", "yes", "on")
                elif isinstance(current, int):
                    values[f.name] = int(raw)
                elif isinstance(current, float):
                    values[f.name] = float(raw)
                elif isinstance(current, dict):
                    values[f.name] = json.loads(raw)
                    if not isinstance(values[f.name], dict):
                        raise ValueError
                elif isinstance(current, tuple):
                    separator = f.metadata.get("separator", ",")
                    values[f.name] = tuple(z.strip() for z in raw.split(separator) if z.strip())
                else:
                    values[f.name] = raw
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a valid {type(current).__name__}") from None
        settings = replace(base, **values)
        settings = replace(settings, **overrides) if overrides else settings
        if settings.command_jobs not in COMMAND_JOBS:
            raise ConfigError(f"{ENV_PREFIX}COMMAND_JOBS={settings.command_jobs!r} must be one of "
                              f"{', '.join(COMMAND_JOBS)}")
        relative = [r for r in settings.path_roots if not os.path.isabs(r)]
        if relative:
            raise ConfigError(f"{ENV_PREFIX}PATH_ROOTS: {relative[0]!r} is not an absolute path; give folders such "
                              "as /data/datasets, separated by ':'")
        if settings.power_budget_w < 0:
            raise ConfigError(f"{ENV_PREFIX}POWER_BUDGET_W={settings.power_budget_w:g} must be >= 0 (0: no limit)")
        for name in ("db_connect_timeout_s", "db_statement_timeout_s", "db_pool_timeout_s", "db_busy_timeout_s",
                     "node_sync_s"):
            if not getattr(settings, name) > 0:  # unbounded waits are what made the API hang
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(settings, name):g} must be > 0")
        return settings
