"""The UK Carbon Intensity API (National Grid ESO): Great Britain's national and regional intensity, no key.

Region ids: ``national`` (Great Britain), a region number ``1``-``17`` (13 is London), or ``postcode:BS7`` (an
outward postcode). Values are half-hourly, in g CO2/kWh. Only the national series has actuals; regional values are
forecasts, so a regional zone's cache holds forecasts only. The API does not say when a forecast was made; it
revises them every half hour, so the issue time recorded is the half hour the answer was fetched in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.carbon.providers.base import (
    ACTUAL,
    FORECAST,
    IntensityPoint,
    checked_intensity,
    floor_time,
    parse_time,
    require,
    within,
)
from scheduler.carbon.providers.http import HttpClient
from scheduler.errors import BadResponse, ConfigError

PUBLIC_URL = "https://api.carbonintensity.org.uk"
NATIONAL = "national"
PERIOD_S = 30 * 60
REGION_IDS = range(1, 18)


class UkCarbonProvider:
    """Great Britain, nationally or by region id or postcode (see the module docstring for region ids)."""

    source = "ukcarbon"

    def __init__(self, http: HttpClient):
        self._http = http

    def __repr__(self) -> str:
        return f"UkCarbonProvider({self._http.base_url!r})"

    def actuals(self, region: str, as_of: datetime, window_s: float) -> list[IntensityPoint]:
        if regional_path(region) is not None:
            return []  # the API publishes no regional actuals
        start = as_of - timedelta(seconds=window_s)
        items = self._periods(self._http.get_json(f"/intensity/{_path_time(start)}/{_path_time(as_of)}"))
        points = []
        for i, item in enumerate(items):
            at = parse_time(self._http.provider, require(self._http.provider, item, "from", f"data[{i}]"), "from")
            intensity = require(self._http.provider, item, "intensity", f"data[{i}]")
            actual = require(self._http.provider, intensity, "actual", f"data[{i}].intensity")
            # A half hour's actual is published after it ends; until then it is null.
            if actual is not None and at <= as_of:
                value = checked_intensity(self._http.provider, actual, "intensity.actual")
                points.append(IntensityPoint(at, value, ACTUAL, min(as_of, at + timedelta(seconds=PERIOD_S))))
        return within(points, start, as_of)

    def forecast(self, region: str, as_of: datetime, horizon_s: float) -> list[IntensityPoint]:
        regional = regional_path(region)
        path = f"/intensity/{_path_time(as_of)}/fw48h" if regional is None else (
            f"/regional/intensity/{_path_time(as_of)}/fw48h/{regional}")
        payload = self._http.get_json(path)
        if regional is not None:
            payload = _region_block(self._http.provider, payload)
        issued_at = floor_time(as_of, PERIOD_S)
        points = []
        for i, item in enumerate(self._periods(payload)):
            at = parse_time(self._http.provider, require(self._http.provider, item, "from", f"data[{i}]"), "from")
            intensity = require(self._http.provider, item, "intensity", f"data[{i}]")
            value = checked_intensity(self._http.provider,
                                      require(self._http.provider, intensity, "forecast", f"data[{i}].intensity"),
                                      "intensity.forecast")
            points.append(IntensityPoint(at, value, FORECAST, issued_at))
        return within(points, as_of, as_of + timedelta(seconds=horizon_s))

    def _periods(self, payload: object) -> list:
        data = require(self._http.provider, payload, "data", "response")
        if not isinstance(data, list):
            raise BadResponse(self._http.provider, "response: 'data' should be a list of half-hour periods")
        return data


def regional_path(region: str) -> str | None:
    """The API path suffix for ``region`` (``regionid/13``), None for the national series; ConfigError if bad."""
    region = region.strip()
    if region.lower() in ("", NATIONAL, "gb"):
        return None
    if region.isdigit():
        if int(region) not in REGION_IDS:
            raise ConfigError(f"UK Carbon Intensity region ids are 1-17, not {region}")
        return f"regionid/{int(region)}"
    postcode = region.split(":", 1)[1] if region.lower().startswith("postcode:") else region
    return f"postcode/{postcode.strip().upper()}"


def _region_block(provider: str, payload: object) -> object:
    """The one region's ``{regionid, shortname, data: [...]}`` (the API wraps it in an object or a 1-list)."""
    block = require(provider, payload, "data", "regional response")
    if isinstance(block, list):
        if len(block) != 1:
            raise BadResponse(provider, f"regional response: expected one region, got {len(block)}")
        block = block[0]
    return block


def _path_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%MZ")
