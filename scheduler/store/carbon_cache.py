"""The carbon-intensity cache: providers' actuals and forecasts in the ``carbon_intensity`` table (the store is the
only writer of the database; the carbon providers read and fill the cache through this).

Every query takes an explicit ``as_of``: it sees only rows issued at or before it, so asking "what did we know
at 10:00?" after a restart, or from a replay, gives the answer we had then. Rows are never updated in place: a
revised actual, or a new forecast, is a new row with a later ``issued_at``.

- an actual is stored only when it is new or its value changed (refreshing every few minutes re-reads the same
  24 hours of history; storing it each time would grow the table without adding anything);
- a forecast is stored as a batch with its issue time; the same batch fetched twice is stored once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from scheduler.store.models import CarbonIntensity

#: The two bases of a cached value (``CarbonIntensity.basis``): a provider's value for a past time, or a forecast.
ACTUAL = "actual"
FORECAST = "forecast"

#: The coarsest step of any provider's series (Electricity Maps is hourly): a point covers at most this long.
MAX_STEP_S = 3600.0
_POINT_KEY = ["zone", "at", "source", "basis", "issued_at"]


class IntensityPoint(Protocol):
    """What the cache keeps of a provider's point (``scheduler.carbon.providers.base.IntensityPoint``)."""

    at: datetime
    intensity_g_per_kwh: float
    basis: str
    issued_at: datetime


@dataclass(frozen=True)
class CachedIntensity:
    """One cached value: g CO2e/kWh at ``at`` for ``zone``, from ``source``, ``actual`` or ``forecast``."""

    zone: str
    at: datetime
    intensity_g_per_kwh: float
    source: str
    basis: str
    issued_at: datetime


class CarbonCache:
    """Reads and writes the carbon_intensity table through ``sessions`` (scheduler.store.engine.make_session_factory)."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def store(self, zone: str, source: str, points: Sequence[IntensityPoint]) -> int:
        """Keep a provider's points for ``zone``; returns how many rows were new."""
        if not points:
            return 0
        with self._sessions.begin() as session:
            rows = [_row(zone, source, p) for p in points if p.basis == FORECAST]
            rows += self._changed_actual_rows(session, zone, source, [p for p in points if p.basis == ACTUAL])
            if not rows:
                return 0
            statement = _insert_ignoring_duplicates(session).returning(CarbonIntensity.id)
            return len(session.execute(statement, rows).all())

    def actual_at(self, zone: str, at: datetime, as_of: datetime, source: str | None = None
                  ) -> CachedIntensity | None:
        """The freshest actual in force at ``at``: the latest one at or before it, as known at ``as_of``."""
        query = (select(CarbonIntensity).where(CarbonIntensity.zone == zone, CarbonIntensity.basis == ACTUAL,
                                               CarbonIntensity.at <= at, CarbonIntensity.issued_at <= as_of)
                 .order_by(CarbonIntensity.at.desc(), CarbonIntensity.issued_at.desc()).limit(1))
        return self._one(_by_source(query, source))

    def actual_series(self, zone: str, start: datetime, end: datetime, as_of: datetime, source: str | None = None
                      ) -> list[tuple[datetime, float]]:
        """Every actual for a time in ``[start, end]``, as known at ``as_of`` (a revised one at its latest value),
        ordered by time: one query for a whole history, where ``actual_at`` would cost one per point. Only actuals:
        a gap in them stays a gap (no forecast is read in its place)."""
        query = _by_source(select(CarbonIntensity.at, CarbonIntensity.intensity_g_per_kwh).where(
            CarbonIntensity.zone == zone, CarbonIntensity.basis == ACTUAL, CarbonIntensity.at >= start,
            CarbonIntensity.at <= end, CarbonIntensity.issued_at <= as_of), source)
        latest_by_time: dict[datetime, float] = {}
        with self._sessions() as session:
            # Ordered by issue time within a time, so a revised actual overwrites the earlier value of its time.
            for at, value in session.execute(query.order_by(CarbonIntensity.at, CarbonIntensity.issued_at)):
                latest_by_time[at] = value
        return list(latest_by_time.items())

    def first_actual_at(self, zone: str, as_of: datetime, source: str | None = None) -> datetime | None:
        """The time of ``zone``'s earliest actual known at ``as_of``: where its actual history begins."""
        query = _by_source(select(CarbonIntensity.at).where(
            CarbonIntensity.zone == zone, CarbonIntensity.basis == ACTUAL, CarbonIntensity.issued_at <= as_of),
            source)
        with self._sessions() as session:
            return session.execute(query.order_by(CarbonIntensity.at).limit(1)).scalar_one_or_none()

    def forecast_at(self, zone: str, at: datetime, as_of: datetime, source: str | None = None,
                    max_step_s: float = MAX_STEP_S) -> CachedIntensity | None:
        """The value at ``at`` of the latest-issued forecast (issued by ``as_of``) that covers ``at``.

        A forecast covers ``at`` when one of its points lies in ``(at - max_step_s, at]``.
        """
        query = (select(CarbonIntensity).where(
            CarbonIntensity.zone == zone, CarbonIntensity.basis == FORECAST, CarbonIntensity.at <= at,
            CarbonIntensity.at > at - timedelta(seconds=max_step_s), CarbonIntensity.issued_at <= as_of)
                 .order_by(CarbonIntensity.issued_at.desc(), CarbonIntensity.at.desc()).limit(1))
        return self._one(_by_source(query, source))

    def forecast_series(self, zone: str, as_of: datetime, horizon_s: float, source: str | None = None
                        ) -> list[CachedIntensity]:
        """The latest forecast issued by ``as_of``: its points from the one in force at ``as_of`` to the horizon."""
        latest = _by_source(select(CarbonIntensity.issued_at).where(
            CarbonIntensity.zone == zone, CarbonIntensity.basis == FORECAST, CarbonIntensity.issued_at <= as_of,
            CarbonIntensity.at > as_of - timedelta(seconds=MAX_STEP_S)), source)
        latest = latest.order_by(CarbonIntensity.issued_at.desc()).limit(1)
        with self._sessions() as session:
            issued_at = session.execute(latest).scalar_one_or_none()
            if issued_at is None:
                return []
            query = _by_source(select(CarbonIntensity).where(
                CarbonIntensity.zone == zone, CarbonIntensity.basis == FORECAST,
                CarbonIntensity.issued_at == issued_at,
                CarbonIntensity.at > as_of - timedelta(seconds=MAX_STEP_S),
                CarbonIntensity.at <= as_of + timedelta(seconds=horizon_s)), source)
            rows = [_cached(r) for r in session.scalars(query.order_by(CarbonIntensity.at))]
        in_force = [r for r in rows if r.at <= as_of][-1:]
        return in_force + [r for r in rows if r.at > as_of]

    def hourly_profile(self, zone: str, as_of: datetime, days: float = 7.0, source: str | None = None
                       ) -> dict[int, float]:
        """Mean actual intensity per UTC hour of day over the ``days`` before ``as_of`` (hours with data only).

        This is the zone's own history-based forecast for when its provider fails: the same hour on recent days
        predicts a grid's daily cycle better than holding the last value flat.
        """
        query = _by_source(select(CarbonIntensity.at, CarbonIntensity.intensity_g_per_kwh).where(
            CarbonIntensity.zone == zone, CarbonIntensity.basis == ACTUAL,
            CarbonIntensity.at > as_of - timedelta(days=days), CarbonIntensity.at <= as_of,
            CarbonIntensity.issued_at <= as_of), source)
        latest_by_time: dict[datetime, float] = {}
        with self._sessions() as session:
            # Ordered by issue time, so a revised actual overwrites the earlier value of its time.
            for at, value in session.execute(query.order_by(CarbonIntensity.issued_at)):
                latest_by_time[at] = value
        by_hour: dict[int, list[float]] = defaultdict(list)
        for at, value in latest_by_time.items():
            by_hour[at.hour].append(value)
        return {hour: sum(values) / len(values) for hour, values in by_hour.items()}

    def prune_forecasts(self, before: datetime) -> int:
        """Delete forecast rows for times before ``before`` (actuals have replaced them); returns the count."""
        with self._sessions.begin() as session:
            result = session.execute(delete(CarbonIntensity).where(CarbonIntensity.basis == FORECAST,
                                                                   CarbonIntensity.at < before))
            return result.rowcount or 0

    def _changed_actual_rows(self, session: Session, zone: str, source: str,
                             actuals: list[IntensityPoint]) -> list[dict]:
        if not actuals:
            return []
        known: dict[datetime, float] = {}
        query = (select(CarbonIntensity.at, CarbonIntensity.intensity_g_per_kwh)
                 .where(CarbonIntensity.zone == zone, CarbonIntensity.source == source,
                        CarbonIntensity.basis == ACTUAL, CarbonIntensity.at >= min(p.at for p in actuals),
                        CarbonIntensity.at <= max(p.at for p in actuals))
                 .order_by(CarbonIntensity.issued_at))
        for at, value in session.execute(query):
            known[at] = value
        return [_row(zone, source, p) for p in actuals
                if p.at not in known or abs(known[p.at] - p.intensity_g_per_kwh) > 1e-9]

    def _one(self, query) -> CachedIntensity | None:
        with self._sessions() as session:
            row = session.scalars(query).first()
            return None if row is None else _cached(row)


def _by_source(query, source: str | None):
    return query if source is None else query.where(CarbonIntensity.source == source)


def _row(zone: str, source: str, point: IntensityPoint) -> dict:
    return {"zone": zone, "at": point.at, "intensity_g_per_kwh": point.intensity_g_per_kwh, "source": source,
            "basis": point.basis, "issued_at": point.issued_at}


def _cached(row: CarbonIntensity) -> CachedIntensity:
    return CachedIntensity(row.zone, row.at, row.intensity_g_per_kwh, row.source, row.basis, row.issued_at)


def _insert_ignoring_duplicates(session: Session):
    """An INSERT that skips rows already stored (the same forecast fetched twice), on SQLite and PostgreSQL."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(CarbonIntensity).on_conflict_do_nothing(index_elements=_POINT_KEY)
    if dialect == "sqlite":
        return sqlite.insert(CarbonIntensity).on_conflict_do_nothing(index_elements=_POINT_KEY)
    return insert(CarbonIntensity)
