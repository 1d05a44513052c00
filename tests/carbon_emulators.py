"""Local HTTP emulators of Electricity Maps v3, WattTime v3 and the UK Carbon Intensity API, for tests.

Each emulator is a real HTTP server on 127.0.0.1 (a random port) in a background thread, answering in its API's
exact shape from a deterministic daily cycle (:func:`grid_g_per_kwh`) around the emulator's own clock. Switch
``mode`` to make it fail the way real APIs do:

``ok`` | ``error500`` | ``html`` (an HTML page with status 200, as proxies send) | ``malformed`` (not JSON) |
``truncated`` (valid JSON cut off half-way) | ``missing_fields`` (JSON without the value fields) |
``wrong_units`` | ``stale`` (values two days old) | ``bad_credentials`` (401) | ``slow`` (holds the answer for
``slow_s`` or until stopped).

``rate_limited`` > 0 makes the next that many requests answer 429 with ``Retry-After: retry_after``. ``stop()``
kills the server (connection refused); ``start()`` brings it back on the same port. ``requests`` records each
request's path and headers (tests assert on token reuse and on what was sent).
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

STALE_SHIFT = timedelta(days=2)


def grid_g_per_kwh(at: datetime) -> float:
    """The emulated grid: 300 g/kWh on average, 100 above it at 18:00 UTC, 100 below at 06:00."""
    hour = at.hour + at.minute / 60
    return round(300.0 + 100.0 * math.cos(2 * math.pi * (hour - 18.0) / 24.0), 3)


def floor_to(at: datetime, step_s: int) -> datetime:
    return datetime.fromtimestamp(int(at.timestamp()) // step_s * step_s, tz=timezone.utc)


def iso_ms(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class Emulator:
    """The server, the failure switches and the request log; subclasses answer the API's routes."""

    def __init__(self, clock: Callable[[], datetime]):
        self.clock = clock
        self.mode = "ok"
        self.rate_limited = 0
        self.retry_after = "1"
        self.slow_s = 5.0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Emulator:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                status, headers, body = emulator.answer(self.path, {k.lower(): v for k, v in self.headers.items()})
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args):
                pass

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill the server: further connections are refused."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def answer(self, raw_path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((raw_path, headers))
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 429, {"Retry-After": self.retry_after, "Content-Type": "application/json"}, \
                b'{"error": "rate limit exceeded"}'
        if self.mode == "slow":
            self._release.wait(self.slow_s)
        if self.mode == "error500":
            return 500, {"Content-Type": "application/json"}, b'{"error": "internal server error"}'
        if self.mode == "html":
            return 200, {"Content-Type": "text/html"}, (
                b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
                b"<body><h1>Bad Gateway</h1></body></html>")
        if self.mode == "malformed":
            return 200, {"Content-Type": "application/json"}, b"{'data': [1, 2,"
        if self.mode == "bad_credentials":
            return 401, {"Content-Type": "application/json"}, b'{"message": "invalid credentials"}'
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        status, payload = self.route(split.path, query, headers)
        body = json.dumps(payload).encode()
        if self.mode == "truncated" and status == 200:
            body = body[: len(body) // 2]
        return status, {"Content-Type": "application/json"}, body

    def now(self) -> datetime:
        return self.clock() - (STALE_SHIFT if self.mode == "stale" else timedelta(0))

    def route(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, object]:
        raise NotImplementedError

    def paths(self) -> list[str]:
        return [urlsplit(p).path for p, _ in self.requests]


class ElectricityMapsEmulator(Emulator):
    """``/v3/carbon-intensity/{latest,history,forecast}`` with an ``auth-token`` header; hourly values."""

    def __init__(self, clock, token: str = "em-secret-token", zones=("DE", "FR")):
        super().__init__(clock)
        self.token = token
        self.zones = set(zones)

    def value(self, zone: str, at: datetime, factor: str) -> float:
        value = grid_g_per_kwh(at) * (0.8 if factor == "direct" else 1.0) + (0 if zone == "DE" else -200)
        return round(value * (1000 if self.mode == "wrong_units" else 1))

    def item(self, zone: str, at: datetime, factor: str) -> dict:
        if self.mode == "missing_fields":
            return {"zone": zone, "datetime": iso_ms(at)}
        return {"zone": zone, "carbonIntensity": self.value(zone, at, factor), "datetime": iso_ms(at),
                "updatedAt": iso_ms(min(self.now(), at + timedelta(minutes=50))),
                "createdAt": iso_ms(at - timedelta(days=2)), "emissionFactorType": factor,
                "isEstimated": at >= floor_to(self.now(), 3600) - timedelta(hours=2),
                "estimationMethod": "TIME_SLICER_AVERAGE" if at >= floor_to(self.now(), 3600) else None}

    def route(self, path, query, headers):
        if headers.get("auth-token") != self.token:
            return 401, {"message": "Invalid authentication credentials"}
        zone, factor = query.get("zone", ""), query.get("emissionFactorType", "lifecycle")
        if zone not in self.zones:
            return 404, {"error": f"Zone '{zone}' does not exist"}
        hour = floor_to(self.now(), 3600)
        if path == "/v3/carbon-intensity/latest":
            return 200, self.item(zone, hour, factor)
        if path == "/v3/carbon-intensity/history":
            return 200, {"zone": zone, "history": [self.item(zone, hour - timedelta(hours=23 - i), factor)
                                                   for i in range(24)]}
        if path == "/v3/carbon-intensity/forecast":
            hours = int(query.get("horizonHours", "24"))
            forecast = [{"carbonIntensity": self.value(zone, hour + timedelta(hours=i), factor),
                         "datetime": iso_ms(hour + timedelta(hours=i))} for i in range(hours + 1)]
            if self.mode == "missing_fields":
                forecast = [{"datetime": f["datetime"]} for f in forecast]
            return 200, {"zone": zone, "forecast": forecast, "updatedAt": iso_ms(hour)}
        return 404, {"error": "not found"}


class WattTimeEmulator(Emulator):
    """``/login`` (HTTP Basic -> 30-minute token) and ``/v3/{forecast,historical,signal-index}``; 5-minute MOERs."""

    def __init__(self, clock, username: str = "alice", password: str = "wt-secret-password"):
        super().__init__(clock)
        self.username, self.password = username, password
        self.tokens: dict[str, datetime] = {}  # token -> expiry
        self.logins = 0

    def moer_lbs_per_mwh(self, at: datetime) -> float:
        return round(grid_g_per_kwh(at) / 0.4536, 3)

    def series(self, start: datetime, end: datetime) -> list[dict]:
        at, points = floor_to(start, 300), []
        while at <= end:
            if at >= start:
                points.append({"point_time": at.isoformat(), "value": self.moer_lbs_per_mwh(at)})
            at += timedelta(minutes=5)
        return points

    def meta(self, region: str, signal_type: str, units: str, generated_at: datetime | None = None) -> dict:
        meta = {"data_point_period_seconds": 300, "region": region, "warnings": [], "signal_type": signal_type,
                "units": units, "model": {"date": "2024-10-01", "type": "binned_regression"}}
        if generated_at is not None:
            meta.update(generated_at_period_seconds=300, generated_at=generated_at.isoformat())
        return meta

    def route(self, path, query, headers):
        if path == "/login":
            expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if headers.get("authorization") != expected:
                return 401, {"error": "unauthorized"}
            token = secrets.token_hex(16)
            self.tokens[token] = self.clock() + timedelta(minutes=30)
            self.logins += 1
            return 200, {"token": token}
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.tokens or self.clock() >= self.tokens[bearer]:
            return 401, {"error": "token expired or invalid"}
        region, signal_type = query.get("region", ""), query.get("signal_type", "co2_moer")
        units = "kg_co2_per_mwh" if self.mode == "wrong_units" else "lbs_co2_per_mwh"
        now = floor_to(self.now(), 300)
        if path == "/v3/forecast":
            data = self.series(now, now + timedelta(hours=int(query.get("horizon_hours", "24"))))
            payload = {"data": data, "meta": self.meta(region, signal_type, units, now)}
        elif path == "/v3/historical":
            start, end = datetime.fromisoformat(query["start"]), datetime.fromisoformat(query["end"])
            shift = self.clock() - self.now()
            payload = {"data": self.series(start - shift, end - shift), "meta": self.meta(region, signal_type, units)}
        elif path == "/v3/signal-index":
            percent = round(100 * (grid_g_per_kwh(now) - 200) / 200)
            payload = {"data": [{"point_time": now.isoformat(), "value": percent}],
                       "meta": self.meta(region, signal_type, "percentile")}
        else:
            return 404, {"error": "not found"}
        if self.mode == "missing_fields":
            payload["data"] = [{"point_time": d["point_time"]} for d in payload["data"]]
        return 200, payload


class UkCarbonEmulator(Emulator):
    """``/intensity/{from}/{to}``, ``/intensity/{from}/fw48h`` and the regional fw48h by region id or postcode."""

    REGIONS = {13: "London", 11: "South West England"}
    POSTCODES = {"BS7": 11, "SW1": 13}

    def value(self, at: datetime, regionid: int | None = None) -> int:
        value = grid_g_per_kwh(at) - (0 if regionid is None else 10 * regionid)
        return round(value * (1000 if self.mode == "wrong_units" else 1))

    def period(self, at: datetime, regionid: int | None = None) -> dict:
        end = at + timedelta(minutes=30)
        intensity = {"forecast": self.value(at, regionid), "index": "moderate"}
        if regionid is None:
            intensity["actual"] = self.value(at) + 3 if end <= self.now() else None
        if self.mode == "missing_fields":
            intensity = {"index": "moderate"}
        item = {"from": at.strftime("%Y-%m-%dT%H:%MZ"), "to": end.strftime("%Y-%m-%dT%H:%MZ"),
                "intensity": intensity}
        if regionid is not None:
            item["generationmix"] = [{"fuel": "gas", "perc": 40.1}, {"fuel": "wind", "perc": 30.2}]
        return item

    def periods(self, start: datetime, end: datetime, regionid: int | None = None) -> list[dict]:
        shift = self.clock() - self.now()
        at, items = floor_to(start - shift, 1800), []
        while at < end - shift:
            items.append(self.period(at, regionid))
            at += timedelta(minutes=30)
        return items

    def route(self, path, query, headers):
        parts = [p for p in path.split("/") if p]
        try:
            if parts[0] == "intensity" and len(parts) == 3:
                start = datetime.fromisoformat(parts[1])
                end = start + timedelta(hours=48) if parts[2] == "fw48h" else datetime.fromisoformat(parts[2])
                return 200, {"data": self.periods(start, end)}
            if parts[:2] == ["regional", "intensity"] and parts[3] == "fw48h":
                start = datetime.fromisoformat(parts[2])
                kind, key = parts[4], parts[5]
                regionid = int(key) if kind == "regionid" else self.POSTCODES[key.upper()]
                block = {"regionid": regionid, "dnoregion": f"DNO {regionid}",
                         "shortname": self.REGIONS.get(regionid, f"Region {regionid}"),
                         "data": self.periods(start, start + timedelta(hours=48), regionid)}
                if kind == "postcode":
                    block["postcode"] = key.upper()
                return 200, {"data": block}
        except (IndexError, KeyError, ValueError):
            return 400, {"error": {"code": "400 Bad Request", "message": "Please enter a valid date/region"}}
        return 404, {"error": "not found"}
