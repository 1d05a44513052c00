"""Emissions integrate intensity over a run's power samples, not average power x average intensity."""

import pytest

from scheduler.carbon import SyntheticSignal, integrate_emissions


class StepSignal:
    """100 g/kWh before t=100 s, 500 g/kWh from then on."""

    source, basis = "test", "actual"

    def intensity_g_per_kwh(self, zone, at_s):
        return 100.0 if at_s < 100 else 500.0


def test_energy_is_charged_at_the_intensity_when_it_was_used():
    # 3.6 MJ (1 kWh) before t=100, 7.2 MJ (2 kWh) after: 1 x 100 + 2 x 500 = 1100 g
    samples = [(50.0, 1.8e6), (100.0, 3.6e6), (150.0, 7.2e6), (200.0, 10.8e6)]
    result = integrate_emissions(samples, 10.8e6, StepSignal(), "DE", started_s=0.0)
    assert result.emissions_g == pytest.approx(1100.0)
    assert result.intensity_g_per_kwh == pytest.approx(1100.0 / 3.0)
    # average x average would say 3 kWh x 300 g/kWh = 900 g
    assert result.emissions_g != pytest.approx(900.0)


def test_energy_after_the_last_sample_is_charged_at_its_intensity():
    result = integrate_emissions([(150.0, 3.6e6)], 7.2e6, StepSignal(), "DE", started_s=120.0)
    assert result.emissions_g == pytest.approx(1000.0)


def test_no_energy_means_no_emissions_but_an_intensity():
    result = integrate_emissions([], 0.0, StepSignal(), "DE", started_s=10.0)
    assert result.emissions_g == 0.0 and result.intensity_g_per_kwh == 100.0


def test_synthetic_signal_cycles_daily_and_is_compressible():
    signal = SyntheticSignal()
    assert signal.source == "synthetic"
    de = [signal.intensity_g_per_kwh("DE", h * 3600.0) for h in range(24)]
    assert max(de) - min(de) == pytest.approx(220.0, rel=0.01)
    assert signal.intensity_g_per_kwh("DE", 0.0) == pytest.approx(signal.intensity_g_per_kwh("DE", 86400.0))
    fast = SyntheticSignal(seconds_per_hour=10.0)
    assert fast.intensity_g_per_kwh("FR", 240.0) == pytest.approx(signal.intensity_g_per_kwh("FR", 86400.0))
    assert signal.intensity_g_per_kwh("FR", 0.0) < signal.intensity_g_per_kwh("DE", 0.0)
