"""Prometheus /metrics of a daemon (no Ray) on real SQLite and PostgreSQL: per-GPU power and energy counters,
jobs by state, emissions; names and units per field-notes.md; no per-job labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_history import seeded  # noqa: F401  (fixture)


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def values(samples, name):
    return {tuple(sorted(s.labels.items())): s.value for s in samples if s.name == name}


def test_metrics_from_the_database_and_inventory(seeded):  # noqa: F811
    daemon, admin, _ = seeded
    daemon._set_inventory([
        {"worker_id": "gpu-0", "node_id": "node-1", "zone": "DE", "busy_job": None, "logical": True},
        {"worker_id": "gpu-1", "node_id": "node-1", "zone": "FR", "busy_job": "x", "logical": True},
    ])
    pending = daemon.store.list(state="pending")[0][0]
    run = daemon.store.start_run(pending.id, "node-1", "FR", ["gpu-1"], None, "running")
    daemon.store.add_samples(run.id, [[1.78e9, 200.0, 10.0, 500.0, 20.0], [1.78e9 + 1, 250.0, 10.0, 750.0, 30.0]])

    families = scrape(admin)
    power = values(families["wattsched_gpu_power_watts"], "wattsched_gpu_power_watts")
    assert power == {(("method", "simulated"), ("worker", "gpu-1"), ("zone", "FR")): 250.0}
    energy = values(families["wattsched_gpu_energy_joules"], "wattsched_gpu_energy_joules_total")
    # gpu-0 ran the DE train (3600 J) and bob's FR train (7200 J); gpu-1 the FR sample (720 J) + 750 J so far.
    assert energy[(("method", "simulated"), ("worker", "gpu-0"), ("zone", "DE"))] == 3600.0
    assert energy[(("method", "simulated"), ("worker", "gpu-0"), ("zone", "FR"))] == 7200.0
    assert energy[(("method", "simulated"), ("worker", "gpu-1"), ("zone", "FR"))] == 720.0 + 750.0
    jobs = values(families["wattsched_jobs"], "wattsched_jobs")
    assert jobs[(("state", "succeeded"),)] == 3 and jobs[(("state", "running"),)] == 1
    assert jobs[(("state", "pending"),)] == 0
    emissions = values(families["wattsched_emissions_grams"], "wattsched_emissions_grams_total")
    assert emissions == {(("method", "estimate+simulated"), ("zone", "DE")): pytest.approx(1.0),
                         (("method", "estimate+simulated"), ("zone", "FR")): pytest.approx(0.25)}
    labels = {k for samples in families.values() for s in samples for k in s.labels}
    assert labels <= {"worker", "zone", "method", "state", "busy"}  # no job ids in label values

    # Counters only grow: a second scrape after the run finishes is at least as high.
    from scheduler.store.models import RunEnergy
    from scheduler.store.job_state import RunStatus

    daemon.store.finish_run(run.id, RunStatus.SUCCEEDED, 0, None, RunEnergy(
        gpu_energy_j=800.0, cpu_energy_j=30.0, gpu_method="simulated", cpu_method="estimate", avg_power_w=1,
        peak_power_w=1, duration_s=1, emissions_g=0.1), {})
    energy = values(scrape(admin)["wattsched_gpu_energy_joules"], "wattsched_gpu_energy_joules_total")
    assert energy[(("method", "simulated"), ("worker", "gpu-1"), ("zone", "FR"))] == 720.0 + 800.0


def test_metrics_need_a_token(seeded):  # noqa: F811
    _, admin, _ = seeded
    from fastapi.testclient import TestClient

    assert TestClient(admin.app).get("/metrics").status_code == 401


def test_the_grafana_dashboard_queries_metrics_we_export(seeded):  # noqa: F811
    import json
    import re
    from pathlib import Path

    _, admin, _ = seeded
    dashboard = json.loads((Path(__file__).parent.parent / "docker" / "grafana-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"wattsched_\w+", target["expr"])}
    exported = {s.name for samples in scrape(admin).values() for s in samples}
    exported |= {name for name in admin.get("/metrics").text.split() if name.startswith("wattsched_")}
    assert queried and queried <= exported | {n + "_total" for n in exported}, queried - exported
