"""Power caps through NVML, against the fake NVML that implements pynvml's interface."""

import pytest

from workers.errors import MeterError
from workers.meters.fake_nvml import FakeGpu, FakeNvml, ManualClock
from workers.power_cap import PowerCapper


def fake(gpus=2):
    return FakeNvml([FakeGpu(power_limit_constraints_mw=(100_000, 400_000))] * gpus, ManualClock())


def test_dry_run_is_the_default_and_changes_nothing():
    nvml = fake()
    results = PowerCapper([0, 1], nvml=nvml).apply(250.0)
    assert [(r.gpu_index, r.applied_w, r.dry_run) for r in results] == [(0, 250.0, True), (1, 250.0, True)]
    assert nvml.set_calls == []


def test_a_real_cap_is_clamped_read_back_and_restored():
    nvml = fake()
    capper = PowerCapper([0, 1], nvml=nvml, dry_run=False)
    results = capper.apply(50.0)  # below the minimum of 100 W
    assert [r.applied_w for r in results] == [100.0, 100.0] and not results[0].dry_run
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(handle) == 100_000
    capper.restore()
    capper.restore()  # idempotent
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(handle) == 400_000
    assert nvml.set_calls == [(0, 100_000), (1, 100_000), (1, 400_000), (0, 400_000)]


def test_without_root_the_error_says_what_to_do_and_nothing_stays_capped():
    nvml = fake()
    nvml.root = False
    with pytest.raises(MeterError, match="needs root"):
        PowerCapper([0], nvml=nvml, dry_run=False).apply(200.0)
    assert nvml.set_calls == []
