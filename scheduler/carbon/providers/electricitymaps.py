"""Electricity Maps v3: latest, last-24-hour history and forecast of a zone's carbon intensity.

Authentication is one ``auth-token`` header. Lifecycle (LCA) and direct emission factors give different numbers
for the same hour, so the chosen factor is part of the source label (``electricitymaps:lifecycle``) and the
cache never mixes them; an answer in the other factor than the one asked is a BadResponse.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.carbon.providers.base import (
    ACTUAL,
    FORECAST,
    IntensityPoint,
    reveal,
    checked_intensity,
    parse_time,
    require,
    within,
)
from scheduler.carbon.providers.config import Secret
from scheduler.carbon.providers.http import HttpClient
from scheduler.errors import BadResponse

PUBLIC_URL = "https://api.electricitymaps.com"
EMISSION_FACTORS = ("lifecycle", "direct")


class ElectricityMapsProvider:
    """Electricity Maps zones (``DE``, ``US-CAL-CISO``); the region id is the zone code."""

    def __init__(self, http: HttpClient, token: Secret, emission_factor: str = "lifecycle"):
        if emission_factor not in EMISSION_FACTORS:
            raise ValueError(f"emission_factor must be one of {EMISSION_FACTORS}, not {emission_factor!r}")
        self._http = http
        self._token = token
        self.emission_factor = emission_factor
        self.source = f"electricitymaps:{emission_factor}"

    def __repr__(self) -> str:
        return f"ElectricityMapsProvider({self._http.base_url!r}, {self.emission_factor!r}, token={self._token!r})"

    def credentials_fingerprint(self) -> str:
        return self._token.fingerprint()

    def latest(self, region: str, as_of: datetime) -> IntensityPoint:
        """The zone's current value (often an estimate, revised later in the history)."""
        payload = self._get("/v3/carbon-intensity/latest", region)
        return self._point(payload, "latest", as_of)

    def history(self, region: str, as_of: datetime) -> list[IntensityPoint]:
        """The hourly values of the last 24 hours that were known at ``as_of``."""
        payload = self._get("/v3/carbon-intensity/history", region)
        items = require(self._http.provider, payload, "history", "history response")
        if not isinstance(items, list):
            raise BadResponse(self._http.provider, "history response: 'history' should be a list")
        points = [self._point(item, f"history[{i}]", as_of)
                  for i, item in enumerate(items) if not _is_gap(item)]
        return [p for p in points if p.at <= as_of]

    def actuals(self, region: str, as_of: datetime, window_s: float) -> list[IntensityPoint]:
        by_time = {p.at: p for p in self.history(region, as_of)}
        latest = self.latest(region, as_of)
        if latest.at <= as_of:
            by_time[latest.at] = latest  # the latest value supersedes the history's copy of that hour
        return within(list(by_time.values()), as_of - timedelta(seconds=window_s), as_of)

    def forecast(self, region: str, as_of: datetime, horizon_s: float) -> list[IntensityPoint]:
        hours = max(1, int(-(-horizon_s // 3600)))
        payload = self._get("/v3/carbon-intensity/forecast", region, {"horizonHours": str(hours)})
        provider = self._http.provider
        items = require(provider, payload, "forecast", "forecast response")
        if not isinstance(items, list):
            raise BadResponse(provider, "forecast response: 'forecast' should be a list")
        issued_at = min(as_of, parse_time(provider, payload.get("updatedAt", as_of.isoformat()), "updatedAt"))
        points = [IntensityPoint(parse_time(provider, require(provider, item, "datetime", f"forecast[{i}]"),
                                            "datetime"),
                                 checked_intensity(provider, require(provider, item, "carbonIntensity",
                                                                     f"forecast[{i}]"), "carbonIntensity"),
                                 FORECAST, issued_at)
                  for i, item in enumerate(items) if not _is_gap(item)]
        return within(points, as_of, as_of + timedelta(seconds=horizon_s))

    def _get(self, path: str, region: str, extra: dict[str, str] | None = None) -> object:
        params = {"zone": region, "emissionFactorType": self.emission_factor, **(extra or {})}
        return self._http.get_json(path, params, headers={"auth-token": reveal(self._http.provider, self._token)})

    def _point(self, item: object, where: str, as_of: datetime) -> IntensityPoint:
        provider = self._http.provider
        at = parse_time(provider, require(provider, item, "datetime", where), "datetime")
        value = checked_intensity(provider, require(provider, item, "carbonIntensity", where), "carbonIntensity")
        factor = item.get("emissionFactorType", self.emission_factor)
        if factor != self.emission_factor:
            raise BadResponse(provider, f"{where}: asked for {self.emission_factor} emission factors, "
                              f"got {factor!r}")
        updated = item.get("updatedAt")
        issued_at = as_of if updated is None else min(as_of, parse_time(provider, updated, "updatedAt"))
        return IntensityPoint(at, value, ACTUAL, max(issued_at, min(at, as_of)))


def _is_gap(item: object) -> bool:
    """Electricity Maps reports hours it has no value for with ``carbonIntensity: null``."""
    return isinstance(item, dict) and "carbonIntensity" in item and item["carbonIntensity"] is None
