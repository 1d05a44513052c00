"""The small interface every carbon-intensity provider implements, and its values.

A provider turns one upstream (an HTTP API, a CSV trace, a configured constant) into :class:`IntensityPoint`
values for a provider-specific *region* (``DE`` for Electricity Maps, ``CAISO_NORTH`` for WattTime, ``13`` or
``postcode:BS7`` for the UK API). Every query takes an explicit ``as_of`` time: a provider never reads a clock to
decide what "now" is, and it never returns a point that was not known at ``as_of``.

Errors are translated at the provider boundary (HTTP, JSON, files), so callers only ever see
``scheduler.errors.ProviderError`` and its subclasses (the tree is drawn in ``scheduler.errors``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from scheduler.errors import BadCredentials, BadResponse, ConfigError
from scheduler.store.carbon_cache import ACTUAL, FORECAST  # noqa: F401  (a point's bases: what the cache keeps)

# The dirtiest grids average about 1,000 g/kWh and a pure-lignite plant about 1,200 (MOERs run somewhat higher);
# anything far above that is a unit mistake (lbs/MWh, kg/MWh reported as g/kWh), not a grid.
MAX_PLAUSIBLE_G_PER_KWH = 2500.0

LBS_PER_MWH_TO_G_PER_KWH = 0.4536  # 453.6 g per lb, 1,000 kWh per MWh


@dataclass(frozen=True)
class IntensityPoint:
    """One carbon-intensity value (g CO2e/kWh) holding from ``at`` until the next point of its series.

    ``basis`` is ``actual`` (the provider's best value for a past time) or ``forecast``; ``issued_at`` is when the
    provider produced it (a forecast's generation time; an actual's last update), never later than the as-of
    time of the query that returned it.
    """

    at: datetime
    intensity_g_per_kwh: float
    basis: str
    issued_at: datetime


@dataclass(frozen=True)
class SignalIndexPoint:
    """A relative 0-100 index (WattTime's percentile of the zone's recent MOERs): *not* an intensity.

    100 means the dirtiest of the recent past. It has no unit and must never be mixed into g/kWh figures, which is
    why it is its own type and is not stored in the intensity cache.
    """

    at: datetime
    percent: float
    issued_at: datetime


class CarbonProvider(Protocol):
    """What the cache refresher needs from a provider. ``source`` labels its values (in the cache and in status).

    ``actuals`` returns the provider's actual values in ``[as_of - window_s, as_of]`` (it may add the one in force
    at the window's start); ``forecast`` returns forecast points covering ``[as_of, as_of + horizon_s]``. Both
    return points sorted by time, raise only :class:`ProviderError`, and may return an empty list where the
    provider publishes no such values (the UK API has no regional actuals).
    """

    source: str

    def actuals(self, region: str, as_of: datetime, window_s: float) -> list[IntensityPoint]: ...

    def forecast(self, region: str, as_of: datetime, horizon_s: float) -> list[IntensityPoint]: ...


def parse_time(provider: str, text: object, field: str) -> datetime:
    """An aware UTC datetime from an API's ISO 8601 text; a naive time is taken as UTC (the APIs all speak UTC)."""
    if not isinstance(text, str):
        raise BadResponse(provider, f"field {field!r} should be an ISO 8601 time, not {type(text).__name__}")
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadResponse(provider, f"field {field!r} is not an ISO 8601 time: {text[:40]!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc)


def checked_intensity(provider: str, value: object, field: str) -> float:
    """``value`` as g/kWh, or :class:`BadResponse` when it is missing, not a number or implausible (wrong units)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadResponse(provider, f"field {field!r} should be a number, not {value!r:.40}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or number > MAX_PLAUSIBLE_G_PER_KWH:
        raise BadResponse(provider, f"field {field!r} = {number:g} is not a plausible intensity in g/kWh "
                          "(wrong units?)")
    return number


def require(provider: str, mapping: object, key: str, where: str) -> object:
    """``mapping[key]``, or :class:`BadResponse` naming what is missing (a partial or reshaped answer)."""
    if not isinstance(mapping, dict):
        raise BadResponse(provider, f"{where} should be a JSON object, not {type(mapping).__name__}")
    if key not in mapping:
        raise BadResponse(provider, f"{where} has no field {key!r} (partial or changed response)")
    return mapping[key]


def floor_time(at: datetime, step_s: float) -> datetime:
    """``at`` rounded down to a multiple of ``step_s`` since the Unix epoch (UTC)."""
    seconds = math.floor(at.timestamp() / step_s) * step_s
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def within(points: list[IntensityPoint], start: datetime, end: datetime) -> list[IntensityPoint]:
    """The points of a piecewise-constant series that hold somewhere in ``[start, end]``, sorted by time.

    That is the points in the window plus the last one before it, whose value is in force at ``start``.
    """
    ordered = sorted(points, key=lambda p: p.at)
    before = [p for p in ordered if p.at < start]
    inside = [p for p in ordered if start <= p.at <= end]
    return before[-1:] + inside


def reveal(provider: str, secret) -> str:
    """A :class:`~.config.Secret`'s value; a missing secret is BadCredentials (it says where to put it)."""
    try:
        return secret.reveal()
    except ConfigError as exc:
        raise BadCredentials(provider, str(exc)) from None
