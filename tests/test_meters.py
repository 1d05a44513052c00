"""Energy meters: NVML (against the fake), simulated, RAPL (fake sysfs), CPU-time estimate, and the factory."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pynvml
import pytest

from workers.errors import MeterError
from workers.meters import cpu
from workers.meters.cpu import EstimatedCpuMeter, RaplCpuMeter, process_tree_cpu_seconds, rapl_available
from workers.meters.factory import nvml_available, open_cpu_meter, open_gpu_meter, physical_gpu_count
from workers.meters.fake_nvml import FakeGpu, FakeNvml, ManualClock
from workers.meters.gpu_types import GPU_TYPES, lookup_gpu_type
from workers.meters.nvml import NvmlGpuMeter, gpu_info
from workers.meters.simulated import ProcessUtilization, SimulatedGpuMeter

BUSY_LOOP = "while True: pass"


def wait_for(condition, timeout_s: float = 60.0, every_s: float = 0.1):
    """Poll ``condition`` until it returns something truthy; return that, or fail after ``timeout_s`` (generous: a
    busy machine gives the processes measured here a small share of a core)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every_s)
    pytest.fail(f"condition not met within {timeout_s} s")


@pytest.fixture
def spawn():
    """Start a command in its own process group; the whole group is killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        process = subprocess.Popen(argv, start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


# --- NVML meter, against the fake -------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_counter_path_sums_energy_from_the_counter_since_open(clock):
    fake = FakeNvml([FakeGpu(power_steps_w=((0, 100), (10, 300)))], clock)
    meter = NvmlGpuMeter([0], nvml=fake, clock=clock)
    assert meter.method == "nvml-counter"

    clock.advance(5)
    first = meter.read()
    clock.advance(10)
    second = meter.read()

    # 100 W for 5 s; then 100 W for 5 s more and 300 W for 5 s. The counter's value at open is not counted.
    assert first.energy_j == pytest.approx(500)
    assert second.energy_j == pytest.approx(500 + 500 + 1500)
    assert second.power_w == pytest.approx(300)
    assert (second - first).energy_j == pytest.approx(2000)
    assert second.timestamp_s == clock()


def test_poll_path_integrates_power_with_the_trapezoid_rule(clock):
    gpu = FakeGpu(power_steps_w=((0, 100), (2, 200), (5, 50)), has_energy_counter=False)
    meter = NvmlGpuMeter([0], nvml=FakeNvml([gpu], clock), clock=clock)
    assert meter.method == "nvml-power-poll"

    readings = []
    for step_s in (1, 2, 3):  # reads at t = 1, 3, 6 s; the power at open (t = 0) is 100 W
        clock.advance(step_s)
        readings.append(meter.read())

    # By hand: (100+100)/2*1 + (100+200)/2*2 + (200+50)/2*3 = 100 + 300 + 375. The true integral is 850 J:
    # polling misses the steps between reads, which is why the counter is preferred.
    assert [r.energy_j for r in readings] == pytest.approx([100, 400, 775])
    assert readings[-1].power_w == pytest.approx(50)


def test_counter_going_backwards_is_a_new_baseline_not_negative_energy(clock, caplog):
    fake = FakeNvml([FakeGpu(power_steps_w=((0, 100),))], clock)
    meter = NvmlGpuMeter([0], nvml=fake, clock=clock)
    clock.advance(10)
    assert meter.read().energy_j == pytest.approx(1000)

    clock.advance(2)
    fake.reset_counter(0)  # driver reload at t = 12 s: the 200 J since the last read are lost
    clock.advance(3)
    with caplog.at_level(logging.WARNING):
        reading = meter.read()

    assert reading.energy_j == pytest.approx(1000 + 300)
    assert "went backwards" in caplog.text


def test_energy_and_power_are_summed_over_the_gpus(clock):
    fake = FakeNvml([FakeGpu(power_steps_w=((0, 100),)), FakeGpu(power_steps_w=((0, 250),))], clock)
    both = NvmlGpuMeter([0, 1], nvml=fake, clock=clock)
    second_only = NvmlGpuMeter([1], nvml=fake, clock=clock)
    clock.advance(4)

    assert both.read().energy_j == pytest.approx(1400)
    assert both.read().power_w == pytest.approx(350)
    assert second_only.read().energy_j == pytest.approx(1000)


def test_one_gpu_without_a_counter_puts_the_whole_meter_on_power_polls(clock):
    fake = FakeNvml([FakeGpu(), FakeGpu(has_energy_counter=False)], clock)
    assert NvmlGpuMeter([0, 1], nvml=fake, clock=clock).method == "nvml-power-poll"


def test_nvml_is_initialised_once_per_process(clock):
    fake = FakeNvml([FakeGpu()], clock)
    NvmlGpuMeter([0], nvml=fake, clock=clock)
    NvmlGpuMeter([0], nvml=fake, clock=clock)
    gpu_info(0, nvml=fake)
    assert fake.init_calls == 1


@pytest.mark.parametrize(
    ("init_error", "gpu_indices", "cause", "advice"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, [0], pynvml.NVMLError_LibraryNotFound, "install the NVIDIA driver"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, [0], pynvml.NVMLError_DriverNotLoaded, "kernel driver is not loaded"),
        (None, [0, 5], pynvml.NVMLError_InvalidArgument, "nvidia-smi -L"),
    ],
)
def test_nvml_errors_become_meter_errors_that_say_what_to_do(clock, init_error, gpu_indices, cause, advice):
    fake = FakeNvml([FakeGpu()], clock, init_error=init_error)
    with pytest.raises(MeterError, match=advice) as caught:
        NvmlGpuMeter(gpu_indices, nvml=fake, clock=clock)
    assert isinstance(caught.value.__cause__, cause)


def test_a_failed_init_is_retried_not_cached(clock):
    fake = FakeNvml([FakeGpu()], clock, init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    for _ in range(2):
        with pytest.raises(MeterError):
            NvmlGpuMeter([0], nvml=fake, clock=clock)
    assert fake.init_calls == 2


def test_reading_a_closed_meter_says_to_open_a_new_one(clock):
    meter = NvmlGpuMeter([0], nvml=FakeNvml([FakeGpu()], clock), clock=clock)
    meter.close()
    meter.close()
    with pytest.raises(MeterError, match="closed"):
        meter.read()


def test_gpu_info_reports_name_uuid_power_and_memory(clock):
    with_constraints = FakeGpu(name="NVIDIA H100 80GB HBM3", uuid="GPU-abc", memory_total_bytes=80 * 2**30)
    without_constraints = FakeGpu(power_limit_constraints_mw=None, default_power_limit_mw=300_000)
    fake = FakeNvml([with_constraints, without_constraints], clock)

    assert gpu_info(0, nvml=fake) == {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-abc",
        "max_power_w": 400.0,
        "memory_total_bytes": 80 * 2**30,
    }
    assert gpu_info(1, nvml=fake)["max_power_w"] == 300.0


# --- GPU types ---------------------------------------------------------------------------------------------


def test_gpu_types_are_looked_up_case_insensitively_and_unknown_names_list_the_valid_ones():
    assert lookup_gpu_type("a100-sxm4-40gb") is GPU_TYPES["A100-SXM4-40GB"]
    with pytest.raises(MeterError, match="H100-SXM"):
        lookup_gpu_type("B200")


# --- Simulated meter ---------------------------------------------------------------------------------------


def scripted(values):
    """A utilisation signal that returns the given values in turn."""
    iterator = iter(values)
    return lambda: next(iterator)


def test_simulated_energy_is_the_trapezoid_of_the_utilisation_driven_power(clock):
    a100 = lookup_gpu_type("A100-SXM4-40GB")  # 60 W idle, 400 W max
    meter = SimulatedGpuMeter(a100, gpu_count=2, utilization=scripted([0.0, 1.0, 0.5]), clock=clock)
    assert meter.method == "simulated"

    clock.advance(10)
    first = meter.read()
    clock.advance(5)
    second = meter.read()

    # Power: 2 x 60 = 120 W at open, 2 x 400 = 800 W, then 2 x (60 + 340 x 0.5) = 460 W.
    assert first.power_w == pytest.approx(800)
    assert first.energy_j == pytest.approx((120 + 800) / 2 * 10)
    assert second.power_w == pytest.approx(460)
    assert second.energy_j == pytest.approx(4600 + (800 + 460) / 2 * 5)


@pytest.mark.parametrize(
    ("utilization", "power_cap_w", "expected_w"),
    [
        (1.0, 250, 250),  # the cap clips a busy GPU
        (0.1, 250, 60 + 34),  # below the cap nothing changes
        (0.0, 40, 60),  # a cap does not push an idle board below its idle draw
        (1.7, None, 400),  # utilisation is clipped to [0, 1]
        (-0.5, None, 60),
    ],
)
def test_simulated_power_is_clipped(clock, utilization, power_cap_w, expected_w):
    a100 = lookup_gpu_type("A100-SXM4-40GB")
    meter = SimulatedGpuMeter(a100, 1, lambda: utilization, power_cap_w=power_cap_w, clock=clock)
    assert meter.read().power_w == pytest.approx(expected_w)


def test_simulated_meter_rejects_zero_gpus(clock):
    with pytest.raises(MeterError, match="at least one GPU"):
        SimulatedGpuMeter(lookup_gpu_type("T4"), 0, lambda: 0.0, clock=clock)


# --- Process utilisation and the CPU-time estimate (real processes) -----------------------------------------


def test_process_utilization_of_a_busy_process_is_high(spawn):
    busy = spawn(sys.executable, "-c", BUSY_LOOP)
    utilization = ProcessUtilization(busy.pid, cores=1)
    wait_for(lambda: utilization() > 0.3, every_s=0.2)


def test_process_utilization_counts_the_children_of_the_process(spawn):
    launcher = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY_LOOP!r}])"
    parent = spawn(sys.executable, "-c", launcher)
    utilization = ProcessUtilization(parent.pid, cores=1)
    wait_for(lambda: utilization() > 0.3, every_s=0.2)


def test_process_utilization_of_a_sleeping_process_is_low(spawn):
    sleeper = spawn("sleep", "30")
    utilization = ProcessUtilization(sleeper.pid, cores=1)
    time.sleep(0.3)  # a window to measure over; there is no condition to poll for "stays idle"
    assert utilization() < 0.1


def test_process_utilization_of_a_vanished_process_is_zero(spawn):
    process = spawn(sys.executable, "-c", BUSY_LOOP)
    utilization = ProcessUtilization(process.pid, cores=1)
    process.kill()
    process.wait()
    assert utilization() == 0.0


def test_estimate_is_cpu_seconds_times_watts_per_core_and_survives_the_process(spawn, clock):
    busy = spawn(sys.executable, "-c", BUSY_LOOP)
    start_cpu_s = process_tree_cpu_seconds(busy.pid)
    meter = EstimatedCpuMeter(busy.pid, watts_per_core=10.0, clock=clock)
    assert meter.method == "estimate"

    def reading_over_one_joule():
        clock.advance(1)
        reading = meter.read()
        return reading if reading.energy_j > 1.0 else None

    reading = wait_for(reading_over_one_joule)
    # The meter read the CPU time just before this check, so the figure is bounded by what psutil sees now.
    assert reading.energy_j <= 10.0 * (process_tree_cpu_seconds(busy.pid) - start_cpu_s) + 1e-9
    assert reading.power_w > 0

    os.killpg(busy.pid, signal.SIGKILL)
    busy.wait()
    clock.advance(1)
    after = meter.read()
    assert after.energy_j >= reading.energy_j
    assert after.power_w == 0.0


def test_estimate_meter_needs_a_live_process(spawn):
    process = spawn("true")
    process.wait()
    with pytest.raises(MeterError, match="does not exist"):
        EstimatedCpuMeter(process.pid)


# --- RAPL on a fake sysfs tree ------------------------------------------------------------------------------


def write_zone(zone_dir, name: str, energy_uj: int, max_energy_range_uj: int) -> None:
    zone_dir.mkdir(parents=True, exist_ok=True)
    (zone_dir / "name").write_text(f"{name}\n")
    (zone_dir / "energy_uj").write_text(f"{energy_uj}\n")
    (zone_dir / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")


@pytest.fixture
def powercap(tmp_path):
    """A powercap tree laid out like /sys/class/powercap, where nested zones also appear flat at the top."""
    write_zone(tmp_path / "intel-rapl:0", "package-0", 1_000_000, 262_143_328_850)
    write_zone(tmp_path / "intel-rapl:0:0", "core", 500_000, 262_143_328_850)
    write_zone(tmp_path / "intel-rapl:0" / "intel-rapl:0:0", "core", 500_000, 262_143_328_850)
    write_zone(tmp_path / "intel-rapl:1", "package-1", 9_000_000, 10_000_000)
    write_zone(tmp_path / "intel-rapl:2", "psys", 7_000_000, 262_143_328_850)
    return tmp_path


def test_rapl_sums_packages_only_and_handles_wrap_around(powercap, clock):
    meter = RaplCpuMeter(str(powercap), clock=clock)
    assert meter.method == "rapl"

    write_zone(powercap / "intel-rapl:0", "package-0", 6_000_000, 262_143_328_850)  # +5 J
    write_zone(powercap / "intel-rapl:1", "package-1", 2_000_000, 10_000_000)  # wrapped: +3 J
    for core in (powercap / "intel-rapl:0:0", powercap / "intel-rapl:0" / "intel-rapl:0:0"):
        write_zone(core, "core", 100_500_000, 262_143_328_850)  # +100 J, already inside package-0
    write_zone(powercap / "intel-rapl:2", "psys", 107_000_000, 262_143_328_850)  # +100 J, covers the packages
    clock.advance(2)
    reading = meter.read()

    assert reading.energy_j == pytest.approx(8.0)
    assert reading.power_w == pytest.approx(4.0)
    # The smallest range (10 J) at the assumed 500 W ceiling wraps in 20 ms: read at least twice as often.
    assert meter.max_poll_interval_s == pytest.approx(0.01)


def test_rapl_is_unavailable_without_zones(tmp_path):
    ok, reason = rapl_available(str(tmp_path / "missing"))
    assert not ok
    assert "no RAPL package zones" in reason
    with pytest.raises(MeterError, match="no RAPL package zones"):
        RaplCpuMeter(str(tmp_path / "missing"))


def test_rapl_unreadable_by_this_user_says_it_is_root_only(powercap, monkeypatch):
    # The tests run as root here, where chmod cannot make a file unreadable; play the kernel's refusal instead.
    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cpu, "_read_uj", refuse)
    ok, reason = rapl_available(str(powercap))
    assert not ok
    assert "root only" in reason


# --- Factory -----------------------------------------------------------------------------------------------


def test_auto_without_nvml_on_this_machine_uses_the_simulated_meter():
    expected = "simulated" if physical_gpu_count() == 0 else "nvml-counter"
    meter = open_gpu_meter([0], pid=os.getpid())
    assert meter.method == expected


def test_auto_with_nvml_uses_the_counter(clock):
    fake = FakeNvml([FakeGpu(), FakeGpu()], clock)
    assert open_gpu_meter([0, 1], pid=os.getpid(), nvml=fake).method == "nvml-counter"


def test_auto_falls_back_to_simulated_and_logs_why(clock, caplog):
    broken = FakeNvml([FakeGpu()], clock, init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    one_gpu = FakeNvml([FakeGpu()], clock)
    with caplog.at_level(logging.INFO, logger="workers.meters"):
        assert open_gpu_meter([0], pid=os.getpid(), nvml=broken).method == "simulated"
        assert open_gpu_meter([0, 1], pid=os.getpid(), nvml=one_gpu).method == "simulated"
    assert "kernel driver is not loaded" in caplog.text
    assert "GPU indices [1] do not exist" in caplog.text


def test_mode_nvml_requires_nvml_and_says_why_not(clock):
    broken = FakeNvml([FakeGpu()], clock, init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(MeterError, match="required but cannot be used.*install the NVIDIA driver"):
        open_gpu_meter([0], pid=os.getpid(), mode="nvml", nvml=broken)


def test_mode_simulated_is_forced_even_with_nvml(clock):
    fake = FakeNvml([FakeGpu()], clock)
    meter = open_gpu_meter([0], pid=os.getpid(), mode="simulated", nvml=fake, gpu_type="H100-SXM", power_cap_w=300)
    assert meter.method == "simulated"
    assert meter.gpu_type.name == "H100-SXM"
    assert meter.power_cap_w == 300


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fast"}, "auto, nvml, simulated"),
        ({"gpu_type": "B200"}, "A100-SXM4-40GB"),
    ],
)
def test_open_gpu_meter_rejects_unknown_choices_listing_the_valid_ones(kwargs, message):
    with pytest.raises(MeterError, match=message):
        open_gpu_meter([0], pid=os.getpid(), **kwargs)


def test_probes_are_cached_per_process(clock):
    fake = FakeNvml([FakeGpu(), FakeGpu(), FakeGpu()], clock)
    assert nvml_available(fake)[0]
    assert physical_gpu_count(fake) == 3
    nvml_available(fake)
    assert fake.init_calls == 1
    broken = FakeNvml([FakeGpu()], clock, init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    assert physical_gpu_count(broken) == 0
    assert physical_gpu_count(broken) == 0
    assert broken.init_calls == 1


def test_open_cpu_meter_uses_rapl_when_readable_else_the_estimate(powercap, tmp_path):
    pid = os.getpid()
    assert open_cpu_meter(pid, rapl_root=str(powercap)).method == "rapl"
    assert open_cpu_meter(pid, rapl_root=str(tmp_path / "missing")).method == "estimate"
    assert open_cpu_meter(pid, mode="estimate", rapl_root=str(powercap)).method == "estimate"
    with pytest.raises(MeterError, match="required but cannot be used"):
        open_cpu_meter(pid, mode="rapl", rapl_root=str(tmp_path / "missing"))


# --- Real hardware (skipped where there is no NVIDIA GPU) --------------------------------------------------


@pytest.mark.skipif(physical_gpu_count() == 0, reason="needs a physical NVIDIA GPU with its driver")
def test_real_nvml_meter_reads_positive_energy_on_gpu_0():
    meter = NvmlGpuMeter([0])
    start = meter.read()
    # The counter updates every 20-100 ms, and an idle GPU still draws tens of watts.
    end = wait_for(lambda: (r := meter.read()).energy_j > start.energy_j and r, every_s=0.2)
    assert end.energy_j > 0
    assert end.power_w > 0
    assert meter.method in ("nvml-counter", "nvml-power-poll")
    info = gpu_info(0)
    assert info["max_power_w"] > 0 and info["memory_total_bytes"] > 0
    meter.close()
