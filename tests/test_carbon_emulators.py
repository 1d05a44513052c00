"""The real provider code against local emulators of the three APIs over real sockets on loopback.

Each provider is driven through the refresh job and the signal, as the daemon drives it: normal answers, every
failure mode (the zone degrades with its reason and keeps a value), recovery, 429 + Retry-After, timeouts, a
killed server, token reuse, and bad credentials reported once. Sleeps are injected; only the timeout test waits
(for a 0.2 s client timeout).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock
from carbon_emulators import ElectricityMapsEmulator, UkCarbonEmulator, WattTimeEmulator, grid_g_per_kwh
from sqlalchemy import func, select

from scheduler.store.carbon_cache import CarbonCache
from scheduler.carbon.providers.config import CarbonConfig
from scheduler.carbon.providers.http import HttpClient, RequestsTransport, RetryPolicy
from scheduler.carbon.providers.refresh import refresh_zones
from scheduler.carbon.providers.signal import ProviderSignal, SignalPolicy, ZoneFeed, build_signal
from scheduler.carbon.providers.watttime import WattTimeProvider
from scheduler.store.engine import make_engine, make_session_factory, upgrade
from scheduler.store.models import CarbonIntensity

T0 = datetime(2026, 3, 2, 12, 7, tzinfo=timezone.utc)
EM_TOKEN = "em-secret-token"
WT_PASSWORD = "wt-secret-password"


class Sleeps(list):
    """An injected sleep that records what it was asked to wait."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'carbon.db'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def transport():
    transport = RequestsTransport()
    yield transport
    transport.close()


@pytest.fixture
def emulators(clock):
    running = {"em": ElectricityMapsEmulator(clock).start(), "wt": WattTimeEmulator(clock).start(),
               "uk": UkCarbonEmulator(clock).start()}
    yield running
    for emulator in running.values():
        emulator.stop()


@pytest.fixture
def secrets_env(tmp_path):
    (tmp_path / "wt.password").write_text(WT_PASSWORD + "\n")
    return {"WATTSCHED_EM_TOKEN": EM_TOKEN}


def config_for(emulators, tmp_path, environ) -> CarbonConfig:
    return CarbonConfig.from_mapping({
        "providers": {
            "em": {"kind": "electricitymaps", "base_url": emulators["em"].url, "token_env": "WATTSCHED_EM_TOKEN",
                   "timeout_s": 0.2},
            "em-direct": {"kind": "electricitymaps", "base_url": emulators["em"].url,
                          "token_env": "WATTSCHED_EM_TOKEN", "emission_factor": "direct"},
            "wt": {"kind": "watttime", "base_url": emulators["wt"].url, "username": "alice",
                   "password_file": "wt.password", "timeout_s": 0.2},
            "uk": {"kind": "ukcarbon", "base_url": emulators["uk"].url, "timeout_s": 0.2},
        },
        "zones": {
            "DE": {"provider": "em", "region": "DE"},
            "DE-direct": {"provider": "em-direct", "region": "DE"},
            "CAISO": {"provider": "wt", "region": "CAISO_NORTH"},
            "GB": {"provider": "uk", "region": "national"},
            "GB-LON": {"provider": "uk", "region": "13"},
            "GB-BS7": {"provider": "uk", "region": "postcode:BS7"},
        },
    }, environ=environ, base_dir=tmp_path)


@pytest.fixture
def signal(emulators, tmp_path, secrets_env, sessions, clock, transport):
    sleeps = Sleeps()
    signal = build_signal(config_for(emulators, tmp_path, secrets_env), sessions, clock, transport=transport,
                          sleep=sleeps)
    signal.sleeps = sleeps
    return signal


ZONE_EMULATOR = {"DE": "em", "CAISO": "wt", "GB": "uk", "GB-LON": "uk"}


def test_every_provider_fills_the_cache_and_the_signal_reads_it(signal, clock):
    outcomes = {o.zone: o for o in refresh_zones(signal, clock)}
    assert all(o.ok and o.stored > 0 for o in outcomes.values()), outcomes
    now_s = clock().timestamp()
    hour = clock().replace(minute=0)
    de = signal.reading("DE", now_s)
    assert (de.source, de.basis, de.intensity_g_per_kwh) == ("electricitymaps:lifecycle", "actual",
                                                             round(grid_g_per_kwh(hour)))
    direct = signal.reading("DE-direct", now_s)
    assert direct.source == "electricitymaps:direct"
    assert direct.intensity_g_per_kwh == round(grid_g_per_kwh(hour) * 0.8)
    caiso = signal.reading("CAISO", now_s)
    five_min = clock().replace(minute=5)
    assert caiso.basis == "actual" and caiso.source == "watttime:co2_moer"
    assert caiso.intensity_g_per_kwh == pytest.approx(grid_g_per_kwh(five_min), rel=1e-4)  # lbs/MWh -> g/kWh
    gb = signal.reading("GB", now_s - 1800)
    assert gb.basis == "actual" and gb.intensity_g_per_kwh == round(grid_g_per_kwh(hour - timedelta(minutes=30))) + 3
    london = signal.reading("GB-LON", now_s)
    assert london.basis == "forecast" and london.intensity_g_per_kwh == round(grid_g_per_kwh(hour)) - 130
    assert signal.reading("GB-BS7", now_s).intensity_g_per_kwh == round(grid_g_per_kwh(hour)) - 110
    tomorrow = signal.reading("DE", now_s + 20 * 3600)
    assert tomorrow.basis == "forecast"
    assert tomorrow.intensity_g_per_kwh == round(grid_g_per_kwh(hour + timedelta(hours=20)))
    statuses = {s.zone: s for s in signal.statuses()}
    assert all(s.state == "ok" for s in statuses.values()), statuses
    assert statuses["DE"].age_s == pytest.approx(7 * 60)
    assert 0 <= statuses["CAISO"].signal_index_percent <= 100
    forecast = signal.forecast("GB", horizon_s=48 * 3600)
    assert len(forecast) >= 96 and all(r.basis == "forecast" for r in forecast)


FAILURES = [
    ("error500", "unavailable"), ("html", "bad-response"), ("malformed", "bad-response"),
    ("truncated", "bad-response"), ("missing_fields", "bad-response"), ("wrong_units", "bad-response"),
    ("stale", "stale"),
]


@pytest.mark.parametrize("mode,kind", FAILURES)
@pytest.mark.parametrize("zone", ["DE", "CAISO", "GB"])
def test_a_failing_provider_degrades_its_zone_and_recovers(signal, emulators, clock, zone, mode, kind):
    assert refresh_zones(signal, clock, [zone])[0].ok
    good = signal.reading(zone, clock().timestamp())
    emulators[ZONE_EMULATOR[zone]].mode = mode
    clock.advance(minutes=30)
    outcome = refresh_zones(signal, clock, [zone])[0]
    assert outcome.error.startswith(kind), outcome
    status = signal.status(zone)
    assert status.state == "degraded" and status.reason.startswith(kind)
    assert "using cached actuals" in status.reason and status.age_s is not None
    later = signal.reading(zone, clock().timestamp())  # still answers, from the cache
    assert later.basis in ("actual", "forecast") and later.intensity_g_per_kwh > 0
    assert abs(later.intensity_g_per_kwh - good.intensity_g_per_kwh) < 150
    emulators[ZONE_EMULATOR[zone]].mode = "ok"
    assert refresh_zones(signal, clock, [zone])[0].skipped.startswith("backing off")
    clock.advance(minutes=2)
    assert refresh_zones(signal, clock, [zone])[0].ok
    assert signal.status(zone).state == "ok"


def test_a_killed_emulator_degrades_and_a_restarted_one_recovers(signal, emulators, clock):
    refresh_zones(signal, clock, ["GB"])
    emulators["uk"].stop()
    clock.advance(minutes=5)
    outcome = refresh_zones(signal, clock, ["GB"])[0]
    assert outcome.error.startswith("unavailable") and "cannot connect" in outcome.error
    assert signal.sleeps == [1.0, 2.0]  # three attempts, exponential backoff, no real waiting
    assert signal.reading("GB", clock().timestamp()).basis == "actual"
    emulators["uk"].start()
    clock.advance(minutes=5)
    assert refresh_zones(signal, clock, ["GB"])[0].ok


def test_slow_answers_time_out(signal, emulators, clock):
    emulators["em"].mode = "slow"
    outcome = refresh_zones(signal, clock, ["DE"])[0]
    assert outcome.error.startswith("unavailable") and "no answer within 0.2 s" in outcome.error
    assert signal.status("DE").reason.startswith("unavailable")


def test_429_waits_for_retry_after_then_succeeds(signal, emulators, clock):
    emulators["wt"].rate_limited, emulators["wt"].retry_after = 2, "7"
    assert refresh_zones(signal, clock, ["CAISO"])[0].ok
    assert signal.sleeps == [7.0, 7.0]


def test_a_long_retry_after_is_honoured_across_refreshes(signal, emulators, clock):
    emulators["uk"].rate_limited, emulators["uk"].retry_after = 1, "600"
    outcome = refresh_zones(signal, clock, ["GB"])[0]
    assert outcome.error.startswith("rate-limited") and signal.sleeps == []
    clock.advance(minutes=9)
    assert refresh_zones(signal, clock, ["GB"])[0].skipped
    clock.advance(minutes=2)
    assert refresh_zones(signal, clock, ["GB"])[0].ok


def test_watttime_token_is_reused_and_renewed_before_it_expires(signal, emulators, clock):
    for minutes in (0, 10, 10, 5):  # at 0, 10, 20 and 25 minutes
        clock.advance(minutes=minutes)
        assert refresh_zones(signal, clock, ["CAISO"])[0].ok
    assert emulators["wt"].logins == 2  # at 0 min, and at 25 min when the token had 5 min left
    assert all(h.get("authorization", "").startswith("Bearer ") for p, h in emulators["wt"].requests
               if not p.startswith("/login"))


def test_watttime_relogs_once_when_a_token_is_revoked(signal, emulators, clock):
    refresh_zones(signal, clock, ["CAISO"])
    emulators["wt"].tokens.clear()
    assert refresh_zones(signal, clock, ["CAISO"])[0].ok
    assert emulators["wt"].logins == 2


def test_bad_credentials_are_reported_once_and_not_retried(signal, emulators, clock, tmp_path, caplog):
    emulators["wt"].password = "rotated"
    with caplog.at_level(logging.INFO):
        first = refresh_zones(signal, clock, ["CAISO"])[0]
        sent = len(emulators["wt"].requests)
        for _ in range(3):
            clock.advance(hours=1)
            assert refresh_zones(signal, clock, ["CAISO"])[0].skipped.startswith("credentials were rejected")
    assert first.error.startswith("bad-credentials")
    assert len(emulators["wt"].requests) == sent == 1  # one login, no retries
    assert [r.levelname for r in caplog.records if "CAISO" in r.getMessage()] == ["ERROR"]
    status = signal.status("CAISO")
    assert status.state == "degraded" and "bad-credentials" in status.reason
    (tmp_path / "wt.password").write_text("rotated")  # the operator fixes the file; no restart needed
    assert refresh_zones(signal, clock, ["CAISO"])[0].ok
    assert signal.status("CAISO").state == "ok"


def test_secrets_never_appear_in_errors_logs_or_reprs(signal, emulators, clock, caplog):
    for emulator in emulators.values():
        emulator.mode = "bad_credentials"
    with caplog.at_level(logging.DEBUG):
        outcomes = refresh_zones(signal, clock)
    text = " ".join([caplog.text, repr(signal.feeds), *(o.error for o in outcomes),
                     *(s.reason for s in signal.statuses())])
    assert "bad-credentials" in text
    assert EM_TOKEN not in text and WT_PASSWORD not in text


def test_cached_data_survives_a_restart(emulators, tmp_path, secrets_env, clock, transport):
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    engine = make_engine(url)
    upgrade(engine)
    config = config_for(emulators, tmp_path, secrets_env)
    refresh_zones(build_signal(config, make_session_factory(engine), clock, transport=transport), clock, ["DE"])
    engine.dispose()
    for emulator in emulators.values():
        emulator.stop()
    engine = make_engine(url)
    restarted = build_signal(config, make_session_factory(engine), clock, transport=transport, sleep=Sleeps())
    assert restarted.reading("DE", clock().timestamp()).basis == "actual"
    assert restarted.status("DE").state == "ok"  # nothing failed yet in this process, and the data is fresh
    clock.advance(minutes=10)
    refresh_zones(restarted, clock, ["DE"])
    assert restarted.status("DE").state == "degraded"
    engine.dispose()


def test_refreshing_again_stores_nothing_new(signal, sessions, clock):
    refresh_zones(signal, clock, ["DE"])
    with sessions() as session:
        rows = session.scalar(select(func.count()).select_from(CarbonIntensity))
    assert refresh_zones(signal, clock, ["DE"])[0].stored == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(CarbonIntensity)) == rows


def test_watttime_signal_index_is_a_percentile_not_an_intensity(emulators, clock, transport, secrets_env,
                                                                tmp_path, sessions):
    provider = WattTimeProvider(HttpClient("wt", emulators["wt"].url, transport, retry=RetryPolicy(attempts=1)),
                                "alice", config_for(emulators, tmp_path, secrets_env).providers["wt"].password,
                                clock)
    index = provider.signal_index("CAISO_NORTH", clock())
    assert type(index).__name__ == "SignalIndexPoint" and not hasattr(index, "intensity_g_per_kwh")
    signal = ProviderSignal({"CAISO": ZoneFeed("CAISO", provider, "CAISO_NORTH")}, CarbonCache(sessions), clock,
                            SignalPolicy())
    refresh_zones(signal, clock)
    with sessions() as session:
        values = session.scalars(select(CarbonIntensity.intensity_g_per_kwh)).all()
    assert values and index.percent not in values  # never stored among intensities
