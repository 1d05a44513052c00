"""A restarted daemon's controller options reach the detached controller it re-attaches to (they were frozen at
its creation): what changed is logged, and applies to workers created from then on; existing workers keep
theirs until recreated. On real Ray, one node with two logical GPUs and no zone label."""

from __future__ import annotations

import logging
import uuid

import pytest

ray = pytest.importorskip("ray")

from scheduler.cluster.controller import get_or_create_controller, shutdown_controller  # noqa: E402

pytestmark = pytest.mark.ray

FIRST = {"default_zone": "DE", "logical_zones": ["DE", "FR"], "sample_interval_s": 0.25}
SECOND = {"default_zone": "PL", "logical_zones": [], "sample_interval_s": 0.5}


@pytest.fixture
def namespace():
    namespace = f"wattsched-test-{uuid.uuid4().hex[:8]}"
    ray.init(num_cpus=2, num_gpus=2, namespace=namespace, include_dashboard=False, logging_level="WARNING")
    yield namespace
    shutdown_controller(namespace=namespace)
    ray.shutdown()


def zones(controller) -> list[str]:
    return [w["zone"] for w in ray.get(controller.sync_workers.remote())]


def test_a_restarted_daemons_options_apply_to_new_workers_and_are_logged(namespace, caplog):
    controller = get_or_create_controller(FIRST, namespace=namespace)
    epoch = ray.get(controller.info.remote())["epoch"]
    assert zones(controller) == ["DE", "FR"]  # logical GPUs of an unlabelled node: logical_zones round-robin

    with caplog.at_level(logging.WARNING, logger="scheduler.cluster.controller"):
        again = get_or_create_controller(SECOND, namespace=namespace)
    info = ray.get(again.info.remote())
    assert info["epoch"] == epoch  # the same controller: running jobs are untouched
    assert (info["options"]["default_zone"], list(info["options"]["logical_zones"])) == ("PL", [])
    [said] = [r.getMessage() for r in caplog.records if "controller now has" in r.getMessage()]
    assert "default_zone 'DE' -> 'PL'" in said and "sample_interval_s 0.25 -> 0.5" in said
    assert "2 existing worker(s) keep their former options" in said
    assert zones(again) == ["DE", "FR"]  # until recreated

    ray.get(again.shutdown_workers.remote())  # the workers are recreated at the next sync
    assert zones(again) == ["PL", "PL"]  # no logical zones: an unlabelled node's GPUs are in the default zone

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scheduler.cluster.controller"):
        get_or_create_controller(SECOND, namespace=namespace)
    assert not [r for r in caplog.records if "controller now has" in r.getMessage()]  # nothing changed
