"""The simulator's input files (simulation.md): CLUSTER.toml, JOBS.csv and PROFILES.csv, validated on load."""

from __future__ import annotations

import csv
import math
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from policies import gang
from policies.snapshot import CapStep, PowerProfile
from scheduler.carbon.trace_file import load_carbon_trace
from scheduler.errors import InputError

JOB_COLUMNS = ("job_id", "submit_s", "duration_s", "gpus", "power_w", "deadline_s", "interruptible", "zones",
               "profile", "kind", "gpus_per_node")
REQUIRED_JOB_COLUMNS = JOB_COLUMNS[:5]
PROFILE_COLUMNS = ("profile", "cap_fraction", "speed", "power_fraction")


@dataclass(frozen=True)
class Zone:
    """One zone of the virtual cluster: its GPUs and its carbon trace on the simulation clock (s since start).

    gpus_per_node: None for a pool without node boundaries (``gpus = N``: any job that fits in the free count
    starts); else the zone is ``gpus / gpus_per_node`` nodes of that size, named ``node_ids``, and jobs are
    placed on them as gangs (``policies.gang``).
    """

    name: str
    gpus: int
    times_s: np.ndarray
    g_per_kwh: np.ndarray
    gpus_per_node: int | None = None

    @property
    def node_ids(self) -> tuple[str, ...]:
        """The nodes' names, ``NAME/0`` to ``NAME/(nodes - 1)`` (empty for a pool without nodes)."""
        if self.gpus_per_node is None:
            return ()
        return tuple(f"{self.name}/{i}" for i in range(self.gpus // self.gpus_per_node))

    def can_hold(self, gpus: int, gpus_per_node: int | None = None) -> bool:
        """Whether a job of ``gpus`` GPUs in that gang shape could ever run here."""
        if self.gpus_per_node is None:
            return gpus <= self.gpus
        nodes = self.gpus // self.gpus_per_node
        return gang.fit([self.gpus_per_node] * nodes, gpus, gpus_per_node) is not None


@dataclass(frozen=True)
class Cluster:
    """CLUSTER.toml: the start of the clock (Unix s), the zones in file order, and the optional power budget."""

    start_unix_s: float
    zones: tuple[Zone, ...]
    budget_w: float | None = None

    def zone(self, name: str) -> Zone:
        return next(z for z in self.zones if z.name == name)


@dataclass(frozen=True)
class Job:
    """One row of JOBS.csv. ``zones`` empty = any zone; ``deadline_s`` None = no flexibility; ``line`` for errors."""

    job_id: str
    submit_s: float
    duration_s: float
    gpus: int
    power_w: float
    deadline_s: float | None
    interruptible: bool
    zones: tuple[str, ...]
    profile: str
    kind: str
    line: int
    gpus_per_node: int | None = None  # the gang's shape (policies.gang); None: the fewest nodes that fit

    @property
    def effective_deadline_s(self) -> float:
        """The deadline to meet: an empty deadline means starting at submission."""
        return self.submit_s + self.duration_s if self.deadline_s is None else self.deadline_s

    @property
    def feasible(self) -> bool:
        """Whether the job can meet its deadline even alone (at full speed, from submission)."""
        return self.deadline_s is None or self.deadline_s - self.submit_s >= self.duration_s - 1e-6


def load_cluster(path: Path | str) -> Cluster:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, None, None, f"cannot read the file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, getattr(exc, "lineno", None), None, f"not valid TOML: {exc}") from None
    unknown = set(data) - {"start", "zones", "power"}
    if unknown:
        raise InputError(path, None, sorted(unknown)[0], "unknown key; expected start, zones, power")
    start_unix_s = _parse_start(path, data.get("start"))
    zones_data = data.get("zones")
    if not isinstance(zones_data, list) or not zones_data:
        raise InputError(path, None, "zones", "at least one [[zones]] table is required")
    zones = []
    for i, z in enumerate(zones_data):
        field = f"zones[{i}]"
        for key in ("name", "carbon"):
            if key not in z:
                raise InputError(path, None, f"{field}.{key}", "missing")
        extra = set(z) - {"name", "carbon", "gpus", "nodes", "gpus_per_node"}
        if extra:
            raise InputError(path, None, f"{field}.{sorted(extra)[0]}",
                             "unknown key; expected name, carbon, gpus, nodes, gpus_per_node")
        gpus, per_node = _zone_size(path, field, z)
        if any(other.name == z["name"] for other in zones):
            raise InputError(path, None, f"{field}.name", f"zone {z['name']!r} is listed twice")
        unix_s, values = load_carbon_trace(path.parent / str(z["carbon"]))
        zones.append(Zone(str(z["name"]), gpus, unix_s - start_unix_s, values, per_node))
    power = data.get("power", {})
    budget = power.get("budget_w") if isinstance(power, dict) else None
    if budget is not None and (not isinstance(budget, (int, float)) or budget <= 0):
        raise InputError(path, None, "power.budget_w", f"must be a number > 0, not {budget!r}")
    return Cluster(start_unix_s, tuple(zones), None if budget is None else float(budget))


def _zone_size(path: Path, field: str, z: dict) -> tuple[int, int | None]:
    """A zone's GPUs and GPUs per node: ``gpus`` alone (a pool without nodes), or ``nodes`` and ``gpus_per_node``
    (with ``gpus``, if given too, their product)."""
    for key in ("gpus", "nodes", "gpus_per_node"):
        if key in z and (not isinstance(z[key], int) or isinstance(z[key], bool) or z[key] < 1):
            raise InputError(path, None, f"{field}.{key}", f"must be a whole number >= 1, not {z[key]!r}")
    if "nodes" not in z and "gpus_per_node" not in z:
        if "gpus" not in z:
            raise InputError(path, None, f"{field}.gpus", "missing (give gpus, or nodes and gpus_per_node)")
        return z["gpus"], None
    for key, other in (("nodes", "gpus_per_node"), ("gpus_per_node", "nodes")):
        if key not in z:
            raise InputError(path, None, f"{field}.{key}", f"missing: {other} is given, so the zone has nodes")
    gpus = z["nodes"] * z["gpus_per_node"]
    if "gpus" in z and z["gpus"] != gpus:
        raise InputError(path, None, f"{field}.gpus", f"is {z['gpus']}, but {z['nodes']} nodes of "
                         f"{z['gpus_per_node']} GPUs make {gpus}")
    return gpus, z["gpus_per_node"]


def _parse_start(path: Path, start) -> float:
    if isinstance(start, datetime):
        at = start
    elif isinstance(start, str):
        try:
            at = datetime.fromisoformat(start)
        except ValueError:
            raise InputError(path, None, "start", f"not an ISO 8601 time: {start!r}") from None
    else:
        raise InputError(path, None, "start", "missing or not a time (e.g. start = \"2020-01-01T00:00:00Z\")")
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


def load_profiles(path: Path | str | None) -> dict[str, PowerProfile]:
    """PROFILES.csv as profiles by name, steps sorted from full power down; None gives no profiles."""
    if path is None:
        return {}
    path = Path(path)
    steps: dict[str, list[CapStep]] = {}
    for line, row in _rows(path, PROFILE_COLUMNS, PROFILE_COLUMNS):
        name = row["profile"].strip()
        if not name:
            raise InputError(path, line, "profile", "empty profile name")
        cap, speed, power = (_number(path, line, row, f, low=0.0, strict=True)
                             for f in ("cap_fraction", "speed", "power_fraction"))
        if cap > 1.0 or speed > 1.0 + 1e-9:
            raise InputError(path, line, "cap_fraction" if cap > 1.0 else "speed", "must be at most 1")
        if any(s.cap_fraction == cap for s in steps.get(name, ())):
            raise InputError(path, line, "cap_fraction", f"profile {name!r} lists cap {cap} twice")
        steps.setdefault(name, []).append(CapStep(cap, speed, power))
    profiles = {}
    for name, listed in steps.items():
        if not any(s.cap_fraction == 1.0 and s.speed == 1.0 and s.power_fraction == 1.0 for s in listed):
            raise InputError(path, None, "cap_fraction", f"profile {name!r} has no row 1,1,1 (full power)")
        profiles[name] = PowerProfile(name, tuple(sorted(listed, key=lambda s: -s.cap_fraction)))
    return profiles


def sweep_profile(path: Path | str, name: str) -> PowerProfile:
    """A power profile from a measured power-limit sweep (one row per workload and limit, with the columns
    dataset, network, batch_size, optimizer, power_limit, time_per_epoch, average_power, as Zeus publishes them):
    per limit, the median over workloads of speed and power relative to the highest limit."""
    rows = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    top = rows["power_limit"].max()
    ratios: dict[float, list[tuple[float, float]]] = {}
    for key in sorted({(r["dataset"], r["network"], r["batch_size"], r["optimizer"]) for r in rows}):
        mine = rows[(rows["dataset"] == key[0]) & (rows["network"] == key[1]) & (rows["batch_size"] == key[2])
                    & (rows["optimizer"] == key[3])]
        full = mine[mine["power_limit"] == top]
        if len(full) == 0:
            continue
        for r in mine:
            ratios.setdefault(float(r["power_limit"]), []).append(
                (full["time_per_epoch"][0] / r["time_per_epoch"], r["average_power"] / full["average_power"][0]))
    steps = [CapStep(1.0, 1.0, 1.0)]
    for limit, pairs in sorted(ratios.items()):
        if limit < top:
            speed, power = np.median(np.array(pairs), axis=0)
            steps.append(CapStep(round(limit / top, 4), float(min(speed, 1.0)), float(min(power, 1.0))))
    return PowerProfile(name, tuple(steps))


def load_jobs(path: Path | str, cluster: Cluster, profiles: dict[str, PowerProfile]) -> list[Job]:
    """JOBS.csv, checked against the cluster (zones, GPUs and nodes, power budget) and the profiles."""
    path = Path(path)
    sizes = {z.name: z for z in cluster.zones}
    jobs: list[Job] = []
    seen: set[str] = set()
    for line, row in _rows(path, JOB_COLUMNS, REQUIRED_JOB_COLUMNS):
        job_id = row["job_id"].strip()
        if not job_id or job_id in seen:
            raise InputError(path, line, "job_id", "empty" if not job_id else f"duplicate job id {job_id!r}")
        seen.add(job_id)
        submit = _number(path, line, row, "submit_s", low=0.0)
        duration = _number(path, line, row, "duration_s", low=0.0, strict=True)
        gpus = _whole(path, line, row, "gpus")
        power = _number(path, line, row, "power_w", low=0.0)
        deadline = None
        if (row.get("deadline_s") or "").strip():
            deadline = _number(path, line, row, "deadline_s")
            if deadline < submit:
                raise InputError(path, line, "deadline_s", f"deadline {deadline:g} is before submission {submit:g}")
        flag = (row.get("interruptible") or "0").strip() or "0"
        if flag not in ("0", "1"):
            raise InputError(path, line, "interruptible", f"must be 0 or 1, not {flag!r}")
        zones = tuple(z.strip() for z in (row.get("zones") or "").split("|") if z.strip())
        for zone in zones:
            if zone not in sizes:
                raise InputError(path, line, "zones", f"unknown zone {zone!r}; the cluster has {', '.join(sizes)}")
        per_node = None
        if (row.get("gpus_per_node") or "").strip():
            per_node = _whole(path, line, row, "gpus_per_node")
            if gpus % per_node:
                raise InputError(path, line, "gpus_per_node", f"{per_node} does not divide the job's {gpus} GPUs")
        allowed = [sizes[z] for z in (zones or tuple(sizes))]
        if gpus > max(z.gpus for z in allowed):
            raise InputError(path, line, "gpus", f"needs {gpus} GPUs, more than any allowed zone has")
        if not any(z.can_hold(gpus, per_node) for z in allowed):
            if per_node is None:
                shape = "on one node or the same number on each of several"
            else:
                shape = "on one node" if per_node == gpus else f"as {per_node} on each of {gpus // per_node} nodes"
            raise InputError(path, line, "gpus_per_node" if per_node else "gpus",
                             f"needs {gpus} GPUs {shape}: no allowed zone has nodes for that")
        profile = (row.get("profile") or "").strip()
        if profile and profile not in profiles:
            valid = ", ".join(profiles) or "none (pass --power-profiles)"
            raise InputError(path, line, "profile", f"unknown profile {profile!r}; known: {valid}")
        if cluster.budget_w is not None:
            lowest = min((s.power_fraction for s in profiles[profile].steps), default=1.0) if profile else 1.0
            if gpus * power * lowest > cluster.budget_w:
                raise InputError(path, line, "power_w", f"the job draws more than the whole {cluster.budget_w:g} W "
                                 "power budget even at its lowest cap")
        jobs.append(Job(job_id, submit, duration, gpus, power, deadline, flag == "1", zones, profile,
                        (row.get("kind") or "").strip(), line, per_node))
    return jobs


def _rows(path: Path, known: tuple[str, ...], required: tuple[str, ...]):
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(path, None, None, f"cannot read the file ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        for name in header:
            if name not in known:
                raise InputError(path, 1, name, f"unknown column; expected {', '.join(known)}")
        for name in required:
            if name not in header:
                raise InputError(path, 1, name, "required column is missing")
        for line, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise InputError(path, line, None, f"expected {len(header)} fields, found {len(cells)}")
            yield line, dict(zip(header, cells))


def _number(path: Path, line: int, row: dict, field: str, low: float | None = None, strict: bool = False) -> float:
    text = (row.get(field) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, line, field, f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(path, line, field, f"must be a finite number, not {text!r}")
    if low is not None and (value < low or (strict and value <= low)):
        raise InputError(path, line, field, f"must be {'>' if strict else '>='} {low:g}, not {text!r}")
    return value


def _whole(path: Path, line: int, row: dict, field: str) -> int:
    text = (row.get(field) or "").strip()
    if not text.isdigit() or int(text) < 1:
        raise InputError(path, line, field, f"must be a whole number >= 1, not {text!r}")
    return int(text)
