"""Refreshing the carbon cache from the providers: the function the daemon's APScheduler job calls.

Each call asks every due zone's provider for its recent actuals and its forecast, as of the clock's time, stores
them, and records the outcome in the signal's per-zone health. A failing zone is retried with exponential
backoff across calls (or after the provider's Retry-After); a zone whose credentials were refused is not asked
again until the credentials change (a corrected token file is picked up by the next call), and the refusal is
logged once. Nothing a provider does makes this function raise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy.exc import SQLAlchemyError

from scheduler.carbon.providers.base import ACTUAL, IntensityPoint
from scheduler.carbon.providers.signal import ProviderSignal, ZoneFeed, ZoneHealth
from scheduler.clock import Clock
from scheduler.errors import BadCredentials, ProviderError, RateLimited, StaleData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshOutcome:
    """What one zone's refresh did: rows stored, the failure (``kind: message``) or why it was skipped."""

    zone: str
    stored: int = 0
    error: str = ""
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.skipped


def refresh_zones(signal: ProviderSignal, clock: Clock, zones: Iterable[str] | None = None) -> list[RefreshOutcome]:
    """Refresh ``zones`` (default: all the signal's zones) as of ``clock()``; never raises for a provider."""
    outcomes = [refresh_zone(signal, zone, clock) for zone in (signal.zones if zones is None else zones)]
    try:
        signal.cache.prune_forecasts(clock() - timedelta(seconds=signal.policy.keep_forecasts_s))
    except SQLAlchemyError as exc:
        log.warning("could not prune old carbon forecasts: %s", exc.__class__.__name__)
    return outcomes


def refresh_zone(signal: ProviderSignal, zone: str, clock: Clock) -> RefreshOutcome:
    """Refresh one zone (see the module docstring)."""
    feed, health, now = signal.feeds[zone], signal.health(zone), clock()
    fingerprint = _credentials_fingerprint(feed)
    if health.rejected_credentials is not None and health.rejected_credentials == fingerprint:
        return RefreshOutcome(zone, skipped="credentials were rejected; waiting for new ones")
    if health.next_attempt_at is not None and now < health.next_attempt_at:
        return RefreshOutcome(zone, skipped=f"backing off until {health.next_attempt_at.isoformat()}")
    health.last_attempt_at = now
    stored = 0
    try:
        actuals = feed.provider.actuals(feed.region, now, signal.policy.history_window_s)
        stored += signal.cache.store(zone, feed.provider.source, actuals)
        forecast = feed.provider.forecast(feed.region, now, signal.policy.horizon_s)
        stored += signal.cache.store(zone, feed.provider.source, forecast)
        _check_fresh(feed, actuals, forecast, now, signal.policy.stale_after_s)
    except ProviderError as exc:
        _record_failure(signal, feed, health, exc, now, fingerprint)
        return RefreshOutcome(zone, stored, f"{exc.kind}: {exc}")
    except SQLAlchemyError as exc:
        message = f"cache: could not store values ({exc.__class__.__name__})"
        log.warning("carbon zone %s: %s", zone, message)
        health.error_kind, health.error = "cache", message
        return RefreshOutcome(zone, stored, message)
    _refresh_signal_index(feed, health, now)
    if health.error:
        log.info("carbon zone %s recovered (%s)", zone, feed.provider.source)
    health.last_success_at, health.failures, health.next_attempt_at = now, 0, None
    health.error_kind, health.error, health.rejected_credentials = "", "", None
    return RefreshOutcome(zone, stored)


def _check_fresh(feed: ZoneFeed, actuals: list[IntensityPoint], forecast: list[IntensityPoint], now: datetime,
                 stale_after_s: float) -> None:
    """StaleData when the provider answered with nothing, or with actuals too old to describe the grid now."""
    source = feed.provider.source
    if not actuals and not forecast:
        raise StaleData(source, f"no values for region {feed.region!r}")
    newest = max((p.at for p in actuals if p.basis == ACTUAL), default=None)
    if newest is not None and (now - newest).total_seconds() > stale_after_s:
        raise StaleData(source, f"newest actual for region {feed.region!r} is from {newest.isoformat()}, "
                        f"{(now - newest).total_seconds() / 3600:.1f} h ago")


def _record_failure(signal: ProviderSignal, feed: ZoneFeed, health: ZoneHealth, exc: ProviderError,
                    now: datetime, fingerprint: str | None) -> None:
    first = not health.error
    health.failures += 1
    health.error_kind, health.error = exc.kind, f"{exc.kind}: {exc}"
    if isinstance(exc, BadCredentials) and fingerprint is not None:
        health.rejected_credentials = fingerprint
        log.error("carbon zone %s: %s; not retrying until the credentials change", feed.zone, exc)
        return
    delay_s = min(signal.policy.retry_max_s, signal.policy.retry_base_s * 2 ** (health.failures - 1))
    if isinstance(exc, RateLimited):
        delay_s = max(delay_s, exc.retry_after_s)
    health.next_attempt_at = now + timedelta(seconds=delay_s)
    # Log the change to degraded once, not every retry; the status carries the current reason.
    if first:
        log.warning("carbon zone %s degraded: %s", feed.zone, exc)


def _refresh_signal_index(feed: ZoneFeed, health: ZoneHealth, now: datetime) -> None:
    """Providers with a relative signal index (WattTime) get it shown in status; its failure degrades nothing."""
    signal_index = getattr(feed.provider, "signal_index", None)
    if signal_index is None:
        return
    try:
        health.signal_index = signal_index(feed.region, now)
    except ProviderError as exc:
        log.info("carbon zone %s: no signal index (%s)", feed.zone, exc)


def _credentials_fingerprint(feed: ZoneFeed) -> str | None:
    fingerprint = getattr(feed.provider, "credentials_fingerprint", None)
    return None if fingerprint is None else fingerprint()
