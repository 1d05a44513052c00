"""What the latency benchmarks share: polling for a condition, and how their figures are summarised."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

#: How often a benchmark looks whether what it times has happened (its figures' resolution).
POLL_S = 0.002


def until(predicate, timeout_s: float = 120.0):
    """predicate()'s first true value, looked at every POLL_S; TimeoutError after timeout_s."""
    give_up_at = time.monotonic() + timeout_s
    while time.monotonic() < give_up_at:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError("condition not met in time")


def summary(values: list[float]) -> str:
    """Median, min and max of durations in seconds, shown in milliseconds."""
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"


def load_average() -> str:
    """The 1-minute load average, to print beside each figure ("?" where /proc is not there)."""
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
