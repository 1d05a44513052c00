"""Figures of different methods are never summed as one, and unknown emissions are never counted as zero: in
the history's rows, groups and totals (real SQLite and PostgreSQL through the REST API), its CSV exports, the
demo's closing table, the Prometheus emissions counter and the Grafana dashboard."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fakes import FakeClock
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from scheduler.api.app import create_app
from scheduler.cli import demo
from scheduler.client.client import Client
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.store import exports
from scheduler.store.engine import upgrade
from scheduler.store.job_state import RunStatus
from scheduler.store.models import RunEnergy
from test_client import LoopbackServer

DAY = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)
SIMULATED, MEASURED = ("simulated", "estimate"), ("nvml-counter", "rapl")

# label: its runs, each (gpu method, cpu method, gpu J, cpu J, emissions g or None, counterfactual g or None)
JOBS = {
    "sim-1": [("simulated", "estimate", 3600.0, 360.0, 1.0, 1.5)],
    "sim-2": [("simulated", "estimate", 7200.0, 720.0, None, None)],  # emissions unknown
    "real": [("nvml-counter", "rapl", 1800.0, 180.0, 0.4, 0.5)],
    "two-runs": [("nvml-counter", "rapl", 450.0, 45.0, 0.1, 0.15),  # lost, then resumed: its second run's
                 ("nvml-counter", "rapl", 450.0, 45.0, None, 0.15)],  # emissions are unknown
}


@pytest.fixture
def history(upgraded_db_url, tmp_path):
    """A daemon whose history holds JOBS (all diffusion-train, in DE), and an admin's API client."""
    clock = FakeClock(DAY)
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock)
    upgrade(daemon.engine)
    ids = {}
    for label, runs in JOBS.items():
        job = daemon.store.submit(daemon.store.validate("diffusion-train", {"steps": 5}))
        for i, (gpu_method, cpu_method, gpu_j, cpu_j, grams, counterfactual_g) in enumerate(runs):
            last = i == len(runs) - 1
            clock.now += timedelta(minutes=1)
            run = daemon.store.start_run(job.id, "node-1", "DE", ["gpu-0"], None, "running in DE")
            clock.now += timedelta(seconds=100)
            energy = RunEnergy(gpu_energy_j=gpu_j, cpu_energy_j=cpu_j, gpu_method=gpu_method, cpu_method=cpu_method,
                               avg_power_w=1.0, peak_power_w=1.0, duration_s=100.0, emissions_g=grams,
                               carbon_source="synthetic", carbon_basis="synthetic",
                               counterfactual_emissions_g=counterfactual_g)
            daemon.store.finish_run(run.id, RunStatus.SUCCEEDED if last else RunStatus.LOST, 0,
                                    None if last else "node lost", energy, {})
        ids[label] = job.id
    admin = TestClient(create_app(daemon),
                       headers={"Authorization": f"Bearer {daemon.auth.create_token('root', 'admin').secret}"})
    yield daemon, admin, ids
    daemon.engine.dispose()


def by_methods(entries) -> dict[str, dict]:
    return {"+".join(e["methods"]): e for e in entries}


def test_rows_keep_unknown_emissions_unknown(history):
    _, admin, ids = history
    rows = {r["job_id"]: r for r in admin.get("/v1/history").json()["jobs"]}
    assert rows[ids["sim-2"]]["emissions_g"] is None and rows[ids["sim-2"]]["saving_g"] is None
    # one of its two runs has no emissions: the job's are unknown, not the other run's alone
    assert rows[ids["two-runs"]]["emissions_g"] is None and rows[ids["two-runs"]]["energy_j"] == 990.0
    assert rows[ids["two-runs"]]["counterfactual_emissions_g"] == pytest.approx(0.3)
    assert rows[ids["two-runs"]]["saving_g"] is None
    assert rows[ids["sim-1"]]["saving_g"] == pytest.approx(0.5) and rows[ids["sim-1"]]["saving_basis"] == "modelled"


def test_totals_are_per_method_and_never_summed_across_methods(history):
    _, admin, _ = history
    totals = admin.get("/v1/history").json()["totals"]
    assert totals["jobs"] == 4 and totals["mixed_methods"] is True
    for key in ("gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh", "emissions_g", "saving_g"):
        assert totals[key] is None, key  # refused: simulated and measured figures
    assert totals["emissions_unknown_jobs"] == 2 and totals["energy_unknown_jobs"] == 0
    per = by_methods(totals["by_method"])
    assert per.keys() == {"estimate+simulated", "nvml-counter+rapl"}
    simulated, measured = per["estimate+simulated"], per["nvml-counter+rapl"]
    assert (simulated["jobs"], simulated["energy_j"]) == (2, pytest.approx(3960.0 + 7920.0))
    assert (simulated["emissions_g"], simulated["emissions_unknown_jobs"]) == (pytest.approx(1.0), 1)
    assert (simulated["saving_g"], simulated["saving_jobs"]) == (pytest.approx(0.5), 1)
    assert (measured["jobs"], measured["energy_j"]) == (2, pytest.approx(1980.0 + 990.0))
    assert (measured["emissions_g"], measured["emissions_unknown_jobs"]) == (pytest.approx(0.4), 1)
    assert (measured["saving_g"], measured["saving_jobs"], measured["saving_basis"]) == (
        pytest.approx(0.1), 1, "modelled")


def test_one_method_still_has_its_totals(history):
    _, admin, _ = history
    totals = admin.get("/v1/history", params={"since": "2026-06-01T10:00:00Z",
                                              "until": "2026-06-01T10:03:00Z"}).json()["totals"]
    assert totals["jobs"] == 1 and totals["mixed_methods"] is False
    assert totals["energy_j"] == pytest.approx(3960.0) and totals["emissions_g"] == pytest.approx(1.0)


def test_groups_are_split_by_method_and_count_unknowns(history):
    _, admin, _ = history
    groups = admin.get("/v1/history", params={"group_by": "kind"}).json()["groups"]
    assert [g["kind"] for g in groups] == ["diffusion-train", "diffusion-train"]
    per = by_methods(groups)
    assert per["estimate+simulated"]["energy_j"] == pytest.approx(11880.0)
    assert per["estimate+simulated"]["emissions_unknown_jobs"] == 1
    assert per["nvml-counter+rapl"]["energy_j"] == pytest.approx(2970.0)


def test_csv_exports_split_groups_by_method_and_label_the_saving(history):
    daemon, admin, ids = history
    body = admin.get("/v1/history", params={"group_by": "day"}).json()
    groups = list(csv.DictReader(io.StringIO(exports.groups_csv(body["groups"], "day"))))
    assert sorted(g["methods"] for g in groups) == ["estimate+simulated", "nvml-counter+rapl"]
    assert {g["emissions_unknown_jobs"] for g in groups} == {"1"}
    rows = {r["job_id"]: r for r in csv.DictReader(io.StringIO(exports.history_csv(body["jobs"])))}
    assert rows[ids["sim-1"]]["saving_basis"] == "modelled" and rows[ids["sim-2"]]["saving_basis"] == ""
    assert rows[ids["sim-2"]]["emissions_g"] == ""  # unknown, not 0


def test_totals_of_nothing_are_zero_and_of_unmetered_jobs_unknown():
    assert exports.totals([])["energy_j"] == 0.0 and exports.totals([])["by_method"] == []
    running = {"job_id": "r", "energy_j": None, "emissions_g": None, "methods": []}
    totals = exports.totals([running])
    assert totals["energy_j"] is None and totals["energy_unknown_jobs"] == 1
    assert totals["by_method"][0]["methods"] == [] and totals["by_method"][0]["energy_j"] is None


def test_the_demo_table_shows_unknowns_and_a_total_per_method(history, capsys):
    daemon, admin, ids = history
    token = admin.headers["Authorization"].split()[1]
    with LoopbackServer(admin.app) as server:
        demo._print_results(Client(url=server.url, token=token), {ids[k]: k for k in JOBS})
    table = capsys.readouterr().out.split("against fifo")[1]
    lines = {line.split()[0] + (" " + line.split()[1] if line.startswith("total") else ""): line
             for line in table.splitlines()[2:] if line.strip() and not line.startswith("-")}
    assert "n/a" in lines["sim-2"]  # unknown emissions, not 0
    assert "total (estimate+simulated)" in lines and "total (nvml-counter+rapl)" in lines
    assert "1 unknown" in lines["total (estimate+simulated)"]
    assert "(modelled)" in table.splitlines()[1]


def test_emissions_metric_is_split_by_method(history):
    _, admin, _ = history
    families = {f.name: f.samples for f in text_string_to_metric_families(admin.get("/metrics").text)}
    grams = {tuple(sorted(s.labels.items())): s.value for s in families["wattsched_emissions_grams"]
             if s.name == "wattsched_emissions_grams_total"}
    assert grams == {(("method", "estimate+simulated"), ("zone", "DE")): pytest.approx(1.0),
                     (("method", "nvml-counter+rapl"), ("zone", "DE")): pytest.approx(0.5)}


def test_grafana_never_sums_across_methods():
    dashboard = json.loads((Path(__file__).parent.parent / "docker" / "grafana-dashboard.json").read_text())
    with_method = ("wattsched_gpu_power_watts", "wattsched_gpu_energy_joules_total",
                   "wattsched_emissions_grams_total")
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            if not any(name in expr for name in with_method):
                continue
            checked += 1
            aggregations = re.findall(r"\b(?:sum|avg|max|min)\s*(?:by\s*\(([^)]*)\))?\s*\(", expr)
            assert aggregations, expr
            for labels in aggregations:
                assert "method" in [label.strip() for label in labels.split(",")], (panel["title"], expr)
            assert "{{method}}" in target["legendFormat"], panel["title"]
    assert checked >= 5


def test_the_history_table_gives_a_total_per_method_and_counts_unknowns(history):
    from scheduler.cli.tables import render_history
    from scheduler.client import History

    daemon, api, _ = history
    answer = History.from_dict(api.get("/v1/history").json())
    lines = render_history(answer).splitlines()
    totals = [line for line in lines if line.startswith("total")]
    assert len(totals) == 2  # one per method, never one across them
    assert any(line.startswith("total of estimate+simulated  2 jobs") for line in totals)
    assert any(line.startswith("total of nvml-counter+rapl   2 jobs") for line in totals)
    assert "2 job(s) with unknown emissions, not in the totals" in lines
    assert any(line.startswith("saved g is modelled") for line in lines)
    grouped = render_history(History.from_dict(api.get("/v1/history", params={"group_by": "kind"}).json()))
    assert sum(line.startswith("total") for line in grouped.splitlines()) == 2
