"""Emissions integrate intensity over a run's power samples, not average power x average intensity."""

from datetime import datetime, timedelta, timezone

import pytest

from scheduler.carbon.signal import IntensityReading, SyntheticSignal, cleanest_window, integrate_emissions


class StepSignal:
    """100 g/kWh (an actual) before t=100 s, 500 g/kWh (a forecast) from then on."""

    def intensity_g_per_kwh(self, zone, at_s):
        return 100.0 if at_s < 100 else 500.0

    def reading(self, zone, at_s):
        basis = "actual" if at_s < 100 else "forecast"
        return IntensityReading(zone, datetime.fromtimestamp(at_s, timezone.utc), self.intensity_g_per_kwh(zone, at_s),
                                f"test-{basis}", basis)


def test_energy_is_charged_at_the_intensity_when_it_was_used():
    # 3.6 MJ (1 kWh) before t=100, 7.2 MJ (2 kWh) after: 1 x 100 + 2 x 500 = 1100 g
    samples = [(50.0, 1.8e6), (100.0, 3.6e6), (150.0, 7.2e6), (200.0, 10.8e6)]
    result = integrate_emissions(samples, 10.8e6, StepSignal(), "DE", started_s=0.0)
    assert result.emissions_g == pytest.approx(1100.0)
    assert result.intensity_g_per_kwh == pytest.approx(1100.0 / 3.0)
    # provenance: both sources, and the least trusted basis used
    assert result.source == "test-actual+test-forecast" and result.basis == "forecast"
    # average x average would say 3 kWh x 300 g/kWh = 900 g
    assert result.emissions_g != pytest.approx(900.0)


def test_energy_after_the_last_sample_is_charged_at_its_intensity():
    result = integrate_emissions([(150.0, 3.6e6)], 7.2e6, StepSignal(), "DE", started_s=120.0)
    assert result.emissions_g == pytest.approx(1000.0)


def test_no_energy_means_no_emissions_but_an_intensity():
    result = integrate_emissions([], 0.0, StepSignal(), "DE", started_s=10.0)
    assert result.emissions_g == 0.0 and result.intensity_g_per_kwh == 100.0 and result.basis == "actual"


def test_synthetic_signal_cycles_daily_and_is_compressible():
    signal = SyntheticSignal()
    assert signal.source == "synthetic"
    de = [signal.intensity_g_per_kwh("DE", h * 3600.0) for h in range(24)]
    assert max(de) - min(de) == pytest.approx(220.0, rel=0.01)
    assert signal.intensity_g_per_kwh("DE", 0.0) == pytest.approx(signal.intensity_g_per_kwh("DE", 86400.0))
    fast = SyntheticSignal(seconds_per_hour=10.0)
    assert fast.intensity_g_per_kwh("FR", 240.0) == pytest.approx(signal.intensity_g_per_kwh("FR", 86400.0))
    assert signal.intensity_g_per_kwh("FR", 0.0) < signal.intensity_g_per_kwh("DE", 0.0)


def readings(values, step_s=3600.0):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return [IntensityReading("DE", t0 + timedelta(seconds=i * step_s), v, "test", "forecast")
            for i, v in enumerate(values)]


@pytest.mark.parametrize("values,duration_h,start_index,mean", [
    ([300, 100, 100, 300], 2, 1, 100.0),        # the dip
    ([300, 100, 200, 50], 1, 3, 50.0),          # the last hour counts (it holds for one step)
    ([300, 100, 200, 50], 2, 2, 125.0),         # 2 h: 200+50 beats 100+200
    ([100, 200], 3, None, None),                # longer than the forecast
])
def test_cleanest_window_against_hand_computed_answers(values, duration_h, start_index, mean):
    series = readings(values)
    window = cleanest_window(series, duration_h * 3600.0)
    if start_index is None:
        assert window is None
        return
    assert window.start == series[start_index].at
    assert window.end - window.start == timedelta(hours=duration_h)
    assert window.mean_g_per_kwh == pytest.approx(mean)


def test_synthetic_forecast_and_status():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    signal = SyntheticSignal(clock=lambda: now)
    forecast = signal.forecast("DE")
    assert len(forecast) == 49 and forecast[0].at == now and forecast[-1].at == now + timedelta(hours=48)
    assert {r.basis for r in forecast} == {"synthetic"}
    assert signal.status("DE").state == "ok"
