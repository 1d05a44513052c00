"""The energy recorder, with scripted meters and a manual clock, and the downsampling helper."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from workers.errors import MeterError
from workers.meters.base import EnergyMeter, EnergyReading
from workers.meters.fake_nvml import ManualClock
from workers.meters.recorder import EnergyRecorder, PowerSample, downsample


class SteadyMeter(EnergyMeter):
    """Draws ``power_w`` (changeable) on the manual clock; opened before the recorder, with energy already used."""

    def __init__(self, method: str, power_w: float, clock: ManualClock, already_j: float = 1000.0) -> None:
        self.method = method
        self.power_w = power_w
        self._clock = clock
        self._energy_j = already_j
        self._last_s = clock()
        self.reads = 0
        #: Which reads (1 = the first) raise, to play a meter that fails for a while.
        self.failing_reads: set[int] = set()

    def read(self) -> EnergyReading:
        self.reads += 1
        if self.reads in self.failing_reads:
            raise MeterError("scripted failure")
        now = self._clock()
        self._energy_j += self.power_w * (now - self._last_s)
        self._last_s = now
        return EnergyReading(timestamp_s=now, energy_j=self._energy_j, power_w=self.power_w)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_s=1000.0)


@pytest.fixture
def meters(clock):
    return SteadyMeter("simulated", 300.0, clock), SteadyMeter("estimate", 20.0, clock)


def started_recorder(meters, clock) -> EnergyRecorder:
    """A started recorder whose thread never polls by itself, so the test drives every sample."""
    recorder = EnergyRecorder(*meters, interval_s=3600, clock=clock)
    recorder.start()
    return recorder


def test_samples_are_cumulative_since_start_and_drained_once(meters, clock):
    recorder = started_recorder(meters, clock)
    for _ in range(3):
        clock.advance(1)
        recorder.poll()

    samples = recorder.drain_samples()
    assert [s.timestamp_s for s in samples] == [1000, 1001, 1002, 1003]
    assert [s.gpu_energy_j for s in samples] == pytest.approx([0, 300, 600, 900])
    assert [s.cpu_energy_j for s in samples] == pytest.approx([0, 20, 40, 60])
    assert recorder.drain_samples() == []
    recorder.stop()


def test_stop_returns_totals_once_and_for_all(meters, clock):
    gpu, _ = meters
    recorder = started_recorder(meters, clock)
    clock.advance(1)
    gpu.power_w = 500.0
    recorder.poll()
    gpu.power_w = 300.0
    clock.advance(3)

    totals = recorder.stop()

    # GPU: 500 W for 1 s then 300 W for 3 s; CPU: 20 W for 4 s.
    assert totals.gpu_energy_j == pytest.approx(1400)
    assert totals.cpu_energy_j == pytest.approx(80)
    assert totals.avg_power_w == pytest.approx(1480 / 4)
    assert totals.peak_power_w == pytest.approx(520)
    assert (totals.gpu_method, totals.cpu_method) == ("simulated", "estimate")
    assert (totals.started_s, totals.ended_s, totals.duration_s) == (1000, 1004, 4)
    clock.advance(10)
    assert recorder.stop() is totals
    assert recorder.snapshot() is totals
    with pytest.raises(MeterError, match="stopped"):
        recorder.poll()


def test_snapshot_gives_the_energy_so_far(meters, clock):
    recorder = started_recorder(meters, clock)
    clock.advance(2)
    partial = recorder.snapshot()
    assert partial.gpu_energy_j == pytest.approx(600)
    assert partial.duration_s == 2
    clock.advance(2)
    assert recorder.stop().gpu_energy_j == pytest.approx(1200)


def test_recorder_must_be_started_once(meters, clock):
    recorder = EnergyRecorder(*meters, clock=clock)
    with pytest.raises(MeterError, match="start"):
        recorder.stop()
    recorder.start()
    with pytest.raises(MeterError, match="already started"):
        recorder.start()
    recorder.stop()


def test_a_failed_final_reading_ends_the_totals_at_the_last_sample(meters, clock, caplog):
    gpu, _ = meters
    recorder = started_recorder(meters, clock)
    clock.advance(1)
    recorder.poll()
    clock.advance(1)
    gpu.failing_reads = {gpu.reads + 1}
    with caplog.at_level(logging.WARNING):
        totals = recorder.stop()
    assert totals.gpu_energy_j == pytest.approx(300)
    assert "final energy reading failed" in caplog.text


def test_interval_is_shortened_to_what_the_meters_need(meters, clock):
    gpu, cpu = meters
    cpu.max_poll_interval_s = 0.1
    assert EnergyRecorder(gpu, cpu, interval_s=0.5, clock=clock).interval_s == 0.1


def test_samples_and_totals_cross_process_boundaries_as_plain_data(meters, clock):
    recorder = started_recorder(meters, clock)
    clock.advance(1)
    sample = recorder.poll()
    assert PowerSample(*sample.to_list()) == sample
    assert json.loads(json.dumps(sample.to_list())) == list(sample)
    totals = recorder.stop()
    assert json.loads(json.dumps(totals.to_dict()))["gpu_method"] == "simulated"


def test_the_thread_polls_on_its_own_and_rides_out_failing_reads(meters, clock, caplog):
    gpu, _ = meters
    gpu.failing_reads = {2, 3, 4}  # read 1 is start(); the thread's first three reads fail
    recorder = EnergyRecorder(*meters, interval_s=0.01, clock=clock)
    recorder.start()
    samples: list[PowerSample] = []
    deadline = time.monotonic() + 10
    with caplog.at_level(logging.INFO, logger="workers.meters"):
        while len(samples) < 3 and time.monotonic() < deadline:
            samples += recorder.drain_samples()
            time.sleep(0.01)
        recorder.stop()
    assert len(samples) >= 3
    assert caplog.text.count("energy meter read failed") == 1
    assert "recovered" in caplog.text
    assert "energy-recorder" not in [thread.name for thread in threading.enumerate()]


# --- downsample --------------------------------------------------------------------------------------------


def steady_samples(times, gpu_w: float = 100.0, cpu_w: float = 10.0) -> list[PowerSample]:
    start = times[0]
    return [PowerSample(t, gpu_w, cpu_w, gpu_w * (t - start), cpu_w * (t - start)) for t in times]


def test_downsample_keeps_first_last_and_the_energy():
    samples = steady_samples([float(t) for t in range(1001)])
    samples[500] = samples[500]._replace(gpu_power_w=900.0)  # a spike that a bucket average smooths away

    points = downsample(samples, 11)

    assert len(points) == 11
    assert points[0] == samples[0]
    assert points[-1].timestamp_s == samples[-1].timestamp_s
    assert (points[-1].gpu_energy_j, points[-1].cpu_energy_j) == (samples[-1].gpu_energy_j, samples[-1].cpu_energy_j)
    assert [p.timestamp_s for p in points] == pytest.approx([100.0 * k for k in range(11)])
    assert [p.gpu_power_w for p in points[1:]] == pytest.approx([100.0] * 10)
    rebuilt_j = sum(p.gpu_power_w * (p.timestamp_s - q.timestamp_s) for q, p in zip(points, points[1:]))
    assert rebuilt_j == pytest.approx(samples[-1].gpu_energy_j)


def test_downsample_across_a_gap_averages_the_energy_over_it():
    # Samples every second for 10 s, then none for 10 s, then one at 20 s; 100 W throughout.
    samples = steady_samples([float(t) for t in range(11)] + [20.0])
    points = downsample(samples, 3)
    assert [p.timestamp_s for p in points] == [0.0, 10.0, 20.0]
    assert [p.gpu_energy_j for p in points] == pytest.approx([0, 1000, 2000])
    assert [p.cpu_power_w for p in points] == pytest.approx([10, 10, 10])


def test_downsample_leaves_short_series_alone_and_needs_two_points():
    samples = steady_samples([0.0, 1.0, 2.0])
    assert downsample(samples, 5) == samples
    with pytest.raises(ValueError, match="at least 2"):
        downsample(samples, 1)
