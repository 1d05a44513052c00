"""FIFO policy: a table of cases that needs no cluster."""

import pytest

from policies.decisions import Start, Wait
from policies.builtin import create_policy
from policies.registry import Registry
from policies.errors import DuplicatePolicy, UnknownPolicy
from policies.snapshot import GpuSlot, JobRequest, Snapshot


def gpus(*specs):
    """specs: (gpu_id, node, zone, busy)"""
    return tuple(GpuSlot(g, n, z, busy=b) for g, n, z, b in specs)


CLUSTER = gpus(("de0", "n1", "DE", False), ("de1", "n1", "DE", False), ("fr0", "n2", "FR", False))


def job(job_id, submitted_s, gpus=1, zones=()):
    return JobRequest(job_id=job_id, gpus=gpus, submitted_s=submitted_s, zones=zones)


@pytest.mark.parametrize("name,cluster,waiting,expected", [
    ("home zone first", CLUSTER, [job("a", 0, zones=("FR", "DE"))], {"a": ("start", "FR", ("fr0",))}),
    ("spill to next allowed zone",
     gpus(("de0", "n1", "DE", False), ("fr0", "n2", "FR", True)),
     [job("a", 0, zones=("FR", "DE"))], {"a": ("start", "DE", ("de0",))}),
    ("arrival order wins", gpus(("de0", "n1", "DE", False)),
     [job("late", 5), job("early", 1)], {"early": ("start", "DE", ("de0",)), "late": ("wait", None, None)}),
    ("multi-gpu on one node", CLUSTER, [job("a", 0, gpus=2)], {"a": ("start", "DE", ("de0", "de1"))}),
    ("big job waits, small job behind it runs", gpus(("de0", "n1", "DE", False), ("de1", "n1", "DE", True)),
     [job("big", 0, gpus=2), job("small", 1)], {"big": ("wait", None, None), "small": ("start", "DE", ("de0",))}),
    ("no node large enough", CLUSTER, [job("a", 0, gpus=3)], {"a": ("wait", None, None)}),
    ("zone without GPUs", CLUSTER, [job("a", 0, zones=("GB",))], {"a": ("wait", None, None)}),
])
def test_fifo_table(name, cluster, waiting, expected):
    decisions = {d.job_id: d for d in create_policy("fifo").decide(Snapshot(0.0, tuple(waiting), cluster))}
    assert set(decisions) == set(expected), name
    for job_id, (what, zone, gpu_ids) in expected.items():
        d = decisions[job_id]
        if what == "start":
            assert isinstance(d, Start) and d.zone == zone and d.gpu_ids == gpu_ids, name
        else:
            assert isinstance(d, Wait) and not d.deferred and d.reason, name


def test_priority_goes_before_arrival():
    one_gpu = gpus(("de0", "n1", "DE", False))
    urgent = JobRequest(job_id="urgent", gpus=1, submitted_s=9, priority=5)
    decisions = {d.job_id: d for d in create_policy("fifo").decide(Snapshot(0.0, (job("early", 1), urgent), one_gpu))}
    assert isinstance(decisions["urgent"], Start) and isinstance(decisions["early"], Wait)


def test_waiting_reasons_say_why():
    busy = gpus(("de0", "n1", "DE", True))
    reason = lambda j: create_policy("fifo").decide(Snapshot(0.0, (j,), busy))[0].reason  # noqa: E731
    assert reason(job("a", 0, zones=("DE",))) == "waiting for a free GPU in zone DE"
    assert reason(job("a", 0, gpus=2)) == "waiting: no node in zone DE has 2 GPUs"
    assert "zone GB" in reason(job("a", 0, zones=("GB",)))


def test_registry_names_valid_policies_and_refuses_duplicates():
    registry = Registry()
    registry.register("x", lambda: None)
    with pytest.raises(DuplicatePolicy):
        registry.register("x", lambda: None)
    with pytest.raises(UnknownPolicy, match="valid policies: fifo"):
        create_policy("greedy")
