"""WattTime v3: marginal operating emissions rate (MOER) forecasts and history, and the 0-100 signal index.

WattTime logs in with HTTP Basic on ``/login`` and answers with a bearer token valid for 30 minutes; the token is
reused and renewed a few minutes before it runs out (and once more if the API rejects it early). MOERs come in
lbs CO2/MWh and are converted to g/kWh; any other unit is a BadResponse. The signal index is a percentile, not an
intensity, and is returned as a :class:`SignalIndexPoint`, never as an :class:`IntensityPoint`.

A MOER is the emission rate of the *marginal* generator, not the grid's average intensity; the source label
``watttime:co2_moer`` keeps that visible wherever the numbers go.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.carbon.providers.base import (
    ACTUAL,
    FORECAST,
    LBS_PER_MWH_TO_G_PER_KWH,
    IntensityPoint,
    SignalIndexPoint,
    checked_intensity,
    parse_time,
    require,
    reveal,
    within,
)
from scheduler.carbon.providers.config import Secret
from scheduler.carbon.providers.http import HttpClient
from scheduler.clock import Clock
from scheduler.errors import BadCredentials, BadResponse

PUBLIC_URL = "https://api.watttime.org"
TOKEN_LIFETIME_S = 30 * 60
#: Renew this long before the token expires, so a request never carries a token that dies on the way.
TOKEN_RENEW_MARGIN_S = 5 * 60
MOER_UNITS = "lbs_co2_per_mwh"
INDEX_UNITS = "percentile"


class WattTimeProvider:
    """WattTime balancing-authority regions (``CAISO_NORTH``); one login serves every zone of the account."""

    def __init__(self, http: HttpClient, username: str, password: Secret, clock: Clock,
                 signal_type: str = "co2_moer"):
        self._http = http
        self._username = username
        self._password = password
        self._clock = clock
        self.signal_type = signal_type
        self.source = f"watttime:{signal_type}"
        self._token: str | None = None
        self._token_expires_at: datetime | None = None
        self.logins = 0  # how many times we logged in (token reuse is observable)

    def __repr__(self) -> str:
        return f"WattTimeProvider({self._http.base_url!r}, user={self._username!r}, password={self._password!r})"

    def credentials_fingerprint(self) -> str:
        return self._password.fingerprint()

    def actuals(self, region: str, as_of: datetime, window_s: float) -> list[IntensityPoint]:
        start = as_of - timedelta(seconds=window_s)
        payload = self._get("/v3/historical", {"region": region, "signal_type": self.signal_type,
                                               "start": _iso(start), "end": _iso(as_of)})
        points = [IntensityPoint(at, value, ACTUAL, min(as_of, at)) for at, value in self._moers(payload)]
        return within([p for p in points if p.at <= as_of], start, as_of)

    def forecast(self, region: str, as_of: datetime, horizon_s: float) -> list[IntensityPoint]:
        hours = max(1, int(-(-horizon_s // 3600)))
        payload = self._get("/v3/forecast", {"region": region, "signal_type": self.signal_type,
                                             "horizon_hours": str(hours)})
        meta = require(self._http.provider, payload, "meta", "forecast response")
        generated_at = parse_time(self._http.provider, require(self._http.provider, meta, "generated_at", "meta"),
                                  "meta.generated_at")
        issued_at = min(as_of, generated_at)
        points = [IntensityPoint(at, value, FORECAST, issued_at) for at, value in self._moers(payload)]
        return within(points, as_of, as_of + timedelta(seconds=horizon_s))

    def signal_index(self, region: str, as_of: datetime) -> SignalIndexPoint:
        """Where the region's current MOER sits among its recent values, 0 (cleanest) to 100 (dirtiest)."""
        provider = self._http.provider
        payload = self._get("/v3/signal-index", {"region": region, "signal_type": self.signal_type})
        units = require(provider, require(provider, payload, "meta", "signal-index response"), "units", "meta")
        if units != INDEX_UNITS:
            raise BadResponse(provider, f"signal index in {units!r}, expected {INDEX_UNITS!r}")
        data = require(provider, payload, "data", "signal-index response")
        if not isinstance(data, list) or not data:
            raise BadResponse(provider, "signal-index response: 'data' should be a non-empty list")
        item = data[0]
        at = parse_time(provider, require(provider, item, "point_time", "data[0]"), "point_time")
        value = require(provider, item, "value", "data[0]")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise BadResponse(provider, f"signal index {value!r} is not a percentile in 0-100")
        return SignalIndexPoint(at, float(value), min(as_of, at))

    def _moers(self, payload: object) -> list[tuple[datetime, float]]:
        """``(point_time, g/kWh)`` pairs of a forecast or historical answer, checking its units."""
        provider = self._http.provider
        meta = require(provider, payload, "meta", "response")
        units = require(provider, meta, "units", "meta")
        if units == INDEX_UNITS:
            raise BadResponse(provider, "got the 0-100 signal index where MOERs in lbs/MWh were expected")
        if units != MOER_UNITS:
            raise BadResponse(provider, f"MOERs in {units!r}, expected {MOER_UNITS!r}")
        data = require(provider, payload, "data", "response")
        if not isinstance(data, list):
            raise BadResponse(provider, "response: 'data' should be a list")
        pairs = []
        for i, item in enumerate(data):
            at = parse_time(provider, require(provider, item, "point_time", f"data[{i}]"), "point_time")
            lbs_per_mwh = require(provider, item, "value", f"data[{i}]")
            if isinstance(lbs_per_mwh, (int, float)) and not isinstance(lbs_per_mwh, bool):
                lbs_per_mwh = lbs_per_mwh * LBS_PER_MWH_TO_G_PER_KWH
            pairs.append((at, checked_intensity(provider, lbs_per_mwh, f"data[{i}].value")))
        return pairs

    def _get(self, path: str, params: dict[str, str]) -> object:
        reusing = self._token_usable()
        try:
            return self._http.get_json(path, params, headers={"Authorization": f"Bearer {self._bearer()}"})
        except BadCredentials:
            if not reusing:
                raise  # the password, or a token just issued, was refused: asking again will not help
            # A reused token may have been revoked or expired early: log in once more; a second refusal stands.
            self._token = None
            return self._http.get_json(path, params, headers={"Authorization": f"Bearer {self._bearer()}"})

    def _token_usable(self) -> bool:
        if self._token is None or self._token_expires_at is None:
            return False
        return self._clock() < self._token_expires_at - timedelta(seconds=TOKEN_RENEW_MARGIN_S)

    def _bearer(self) -> str:
        if not self._token_usable():
            payload = self._http.get_json("/login", basic_auth=(self._username,
                                                                reveal(self._http.provider, self._password)))
            token = require(self._http.provider, payload, "token", "login response")
            if not isinstance(token, str) or not token:
                raise BadResponse(self._http.provider, "login response: 'token' should be a non-empty string")
            self.logins += 1
            self._token = token
            self._token_expires_at = self._clock() + timedelta(seconds=TOKEN_LIFETIME_S)
        return self._token


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")
