"""A constant intensity, for offline use, tests, and zones whose grid nobody publishes.

It is a configured assumption, not a measurement: its source label is ``static``, which travels with every
emissions figure computed from it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.carbon.providers.base import ACTUAL, FORECAST, IntensityPoint, floor_time

STEP_S = 3600.0


class StaticProvider:
    """``value_g_per_kwh`` at every time, as hourly points (so it caches and charts like any other source)."""

    source = "static"

    def __init__(self, value_g_per_kwh: float):
        if value_g_per_kwh < 0:
            raise ValueError("a static intensity must be >= 0 g/kWh")
        self.value_g_per_kwh = float(value_g_per_kwh)

    def __repr__(self) -> str:
        return f"StaticProvider({self.value_g_per_kwh:g} g/kWh)"

    def actuals(self, region: str, as_of: datetime, window_s: float) -> list[IntensityPoint]:
        now = floor_time(as_of, STEP_S)
        # One point: the value in force now. Earlier hours would repeat it; the cache needs only the newest.
        return [IntensityPoint(now, self.value_g_per_kwh, ACTUAL, now)]

    def forecast(self, region: str, as_of: datetime, horizon_s: float) -> list[IntensityPoint]:
        start = floor_time(as_of, STEP_S)
        steps = int((as_of + timedelta(seconds=horizon_s) - start).total_seconds() // STEP_S) + 1
        return [IntensityPoint(start + timedelta(seconds=i * STEP_S), self.value_g_per_kwh, FORECAST, start)
                for i in range(steps)]
