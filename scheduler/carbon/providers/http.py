"""The HTTP layer the API providers share: one request/response shape, a transport seam, and one client.

The transport is the only part that does I/O (:class:`RequestsTransport` over ``requests``); tests and users can
swap in :class:`MockTransport`, which answers from a plain function. :class:`HttpClient` adds what every provider
needs and translates every HTTP failure into the provider errors of :mod:`.base`, here and nowhere else:

- a timeout on every request; connection failures, timeouts and 5xx are retried with exponential backoff;
- HTTP 429 waits for ``Retry-After`` (seconds or an HTTP date) when that is short, else raises RateLimited;
- 401/403 raise BadCredentials at once (retrying a rejected token only gets an account locked);
- HTML error pages, malformed or truncated JSON become BadResponse.

Sleeping and the clock are injected, so tests never wait for a backoff. Header values (tokens) never appear in a
message: errors name the provider, the path and the status only.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping, Protocol

from scheduler.clock import Clock, utc_now
from scheduler.errors import BadCredentials, BadResponse, ProviderUnavailable, RateLimited


@dataclass(frozen=True)
class HttpRequest:
    """One GET or POST. ``headers`` and ``basic_auth`` may hold secrets: nothing here ever prints them."""

    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class HttpResponse:
    """A status, headers (keys lower-cased) and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one request. Raises ``TimeoutError`` when no answer came in time, ``ConnectionError`` otherwise."""

    def send(self, request: HttpRequest) -> HttpResponse: ...


class RequestsTransport:
    """The real transport, over one pooled ``requests.Session``."""

    def __init__(self) -> None:
        import requests

        self._requests = requests
        self._session = requests.Session()

    def send(self, request: HttpRequest) -> HttpResponse:
        requests = self._requests
        try:
            response = self._session.request(
                request.method, request.url, params=dict(request.params), headers=dict(request.headers),
                auth=request.basic_auth, timeout=request.timeout_s, allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise TimeoutError(type(exc).__name__) from None
        except requests.RequestException as exc:
            # The exception text can repeat the URL but never headers; keep only its class name to be safe.
            raise ConnectionError(type(exc).__name__) from None
        return HttpResponse(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                            response.content)

    def close(self) -> None:
        self._session.close()


class MockTransport:
    """A transport that answers from ``handler(request) -> HttpResponse`` (which may raise TimeoutError)."""

    def __init__(self, handler: Callable[[HttpRequest], HttpResponse]):
        self._handler = handler

    def send(self, request: HttpRequest) -> HttpResponse:
        return self._handler(request)


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
    """A JSON HttpResponse, for MockTransport handlers."""
    return HttpResponse(status, {"content-type": "application/json", **(headers or {})},
                        json.dumps(payload).encode())


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request tries: ``attempts`` in all, waiting ``base_backoff_s`` x 2^n (capped) between them."""

    attempts: int = 3
    base_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    #: A 429 asking us to wait longer than this is not waited out inside a request: RateLimited is raised and
    #: the refresher comes back later.
    max_retry_after_s: float = 60.0

    def backoff_s(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.base_backoff_s * 2 ** attempt)


class HttpClient:
    """JSON over HTTP for one provider, with timeouts, retries and error translation (see the module docstring)."""

    def __init__(self, provider: str, base_url: str, transport: Transport, *, timeout_s: float = 10.0,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep,
                 clock: Clock = utc_now):
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._transport = transport
        self._timeout_s = timeout_s
        self._retry = retry
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"HttpClient({self.provider!r}, {self.base_url!r})"

    def get_json(self, path: str, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None, basic_auth: tuple[str, str] | None = None) -> Any:
        """The decoded JSON body of ``GET base_url + path``; raises only provider errors."""
        request = HttpRequest("GET", self.base_url + path, dict(params or {}), dict(headers or {}), basic_auth,
                              self._timeout_s)
        failure: ProviderUnavailable | None = None
        wait_s = 0.0  # before the next attempt: the backoff, or what a 429's Retry-After asked for
        for attempt in range(self._retry.attempts):
            if attempt:
                self._sleep(wait_s)
            wait_s = self._retry.backoff_s(attempt)
            try:
                response = self._transport.send(request)
            except TimeoutError:
                failure = ProviderUnavailable(self.provider, f"GET {path}: no answer within {self._timeout_s:g} s")
                continue
            except OSError as exc:  # ConnectionError and friends
                failure = ProviderUnavailable(self.provider, f"GET {path}: cannot connect ({exc})")
                continue
            if response.status == 429:
                retry_after_s = self._retry_after_s(response)
                message = f"GET {path}: rate limited (HTTP 429, Retry-After {retry_after_s:g} s)"
                if retry_after_s > self._retry.max_retry_after_s:
                    raise RateLimited(self.provider, message, retry_after_s)
                failure = RateLimited(self.provider, message, retry_after_s)
                wait_s = max(wait_s, retry_after_s)
                continue
            if response.status >= 500:
                failure = ProviderUnavailable(self.provider, f"GET {path}: HTTP {response.status}"
                                              f"{_snippet(response)}")
                continue
            return self._decode(path, response)
        assert failure is not None
        raise failure

    def _decode(self, path: str, response: HttpResponse) -> Any:
        if response.status in (401, 403):
            raise BadCredentials(self.provider, f"GET {path}: HTTP {response.status}, credentials rejected; "
                                 "check the configured token")
        if response.status >= 400:
            raise BadResponse(self.provider, f"GET {path}: HTTP {response.status}{_snippet(response)}")
        if response.status != 200:
            raise BadResponse(self.provider, f"GET {path}: unexpected HTTP {response.status}")
        content_type = response.headers.get("content-type", "")
        text = response.body.decode("utf-8", errors="replace")
        if "html" in content_type or text.lstrip()[:1] == "<":
            raise BadResponse(self.provider, f"GET {path}: an HTML page{_snippet(response)} instead of JSON")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadResponse(self.provider, f"GET {path}: malformed or truncated JSON ({exc.msg} at "
                              f"character {exc.pos} of {len(text)})") from None

    def _retry_after_s(self, response: HttpResponse) -> float:
        value = response.headers.get("retry-after", "").strip()
        if not value:
            return self._retry.base_backoff_s
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when: datetime = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return self._retry.base_backoff_s
        return max(0.0, (when - self._clock()).total_seconds())


def _snippet(response: HttpResponse) -> str:
    """A short, tag-free excerpt of an error body (a page title or an API message), for people."""
    text = response.body.decode("utf-8", errors="replace")
    title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())[:120]
    return f" ({text})" if text else ""
