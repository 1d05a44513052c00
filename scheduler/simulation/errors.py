"""The simulator's exceptions; every input error names the file, the line and the field.

::

    WattschedError (scheduler.errors)
    ├── CarbonTraceError (scheduler.carbon.trace_file)   a carbon trace file is malformed
    └── SimulationError
        ├── InputError          CLUSTER.toml, JOBS.csv or PROFILES.csv is malformed or inconsistent
        └── ForecastPeek        a policy asked for an actual value after the virtual now

A policy's decision that breaks the cluster's rules raises ``scheduler.errors.PolicyViolation``, from the
scheduling core the simulator shares with the daemon.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.errors import PolicyViolation, WattschedError  # noqa: F401  (PolicyViolation: raised here too)


class SimulationError(WattschedError):
    """Base of the simulator's errors."""


class InputError(SimulationError):
    """An input file cannot be used; ``path``, ``line`` (1-based, header = 1) and ``field`` say where."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, problem: str):
        where = f"{path}" + (f", line {line}" if line is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.field, self.problem = str(path), line, field, problem


class ForecastPeek(SimulationError):
    pass

