"""Energy history on real SQLite and PostgreSQL: per job and per user, kind, zone and day, with the saving
against each job's fifo counterfactual where one is known ("n/a" where not), and every filter.

``seed_history`` is reused by tests/test_exports.py and tests/test_metrics.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock
from fastapi.testclient import TestClient

from scheduler.api.app import create_app
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import upgrade
from scheduler.store.models import RunEnergy
from scheduler.store.job_state import RunStatus

DAY1 = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)


# (user, kind, zone, day offset, gpu J, cpu J, emissions g, counterfactual g or None)
SEED = [
    ("alice", "diffusion-train", "DE", 0, 3600.0, 360.0, 1.0, 1.5),
    ("alice", "diffusion-sample", "FR", 0, 720.0, 72.0, 0.05, None),
    ("bob", "diffusion-train", "FR", 1, 7200.0, 720.0, 0.2, 0.3),
]


def seed_history(daemon: Daemon, clock: FakeClock) -> dict[str, str]:
    """Three finished jobs of two users over two days (and one still pending); returns job ids by label."""
    ids = {}
    for i, (user, kind, zone, day, gpu_j, cpu_j, grams, counterfactual) in enumerate(SEED):
        if daemon.auth.user_id(user) is None:
            daemon.auth.create_token(user)
        user_id = daemon.auth.user_id(user)
        clock.now = DAY1 + timedelta(days=day, minutes=i)
        submission = daemon.store.validate(kind, {"steps": 5} if kind == "diffusion-train" else {"checkpoint": "/x"})
        job = daemon.store.submit(submission, user_id)
        run = daemon.store.start_run(job.id, "node-1", zone, [f"gpu-{i % 2}"], None, f"running in {zone}")
        clock.now += timedelta(seconds=100)
        energy = RunEnergy(gpu_energy_j=gpu_j, cpu_energy_j=cpu_j, gpu_method="simulated", cpu_method="estimate",
                           avg_power_w=(gpu_j + cpu_j) / 100, peak_power_w=100.0, duration_s=100.0,
                           intensity_g_per_kwh=grams / ((gpu_j + cpu_j) / 3.6e6), emissions_g=grams,
                           carbon_source="synthetic", carbon_basis="synthetic",
                           counterfactual_emissions_g=counterfactual)
        daemon.store.finish_run(run.id, RunStatus.SUCCEEDED, 0, None, energy, {"num_images": 4})
        ids[f"{user}-{kind}-{zone}"] = job.id
    daemon.store.submit(daemon.store.validate("diffusion-train", {}), daemon.auth.user_id("alice"))
    return ids


@pytest.fixture
def seeded(upgraded_db_url, tmp_path):
    clock = FakeClock(DAY1)
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock)
    upgrade(daemon.engine)
    ids = seed_history(daemon, clock)
    clock.now = DAY1 + timedelta(days=3)
    admin = TestClient(create_app(daemon),
                       headers={"Authorization": f"Bearer {daemon.auth.create_token('root', 'admin').secret}"})
    yield daemon, admin, ids
    daemon.engine.dispose()


def test_rows_carry_user_energy_and_the_saving(seeded):
    _, admin, ids = seeded
    history = admin.get("/v1/history").json()
    rows = {r["job_id"]: r for r in history["jobs"]}
    assert len(rows) == 3  # the pending job never started
    train = rows[ids["alice-diffusion-train-DE"]]
    assert train["user"] == "alice" and train["zone"] == "DE" and train["energy_j"] == 3960.0
    assert train["counterfactual_emissions_g"] == 1.5 and train["saving_g"] == pytest.approx(0.5)
    assert rows[ids["alice-diffusion-sample-FR"]]["saving_g"] is None  # no counterfactual: n/a, not 0
    totals = history["totals"]
    assert totals["jobs"] == 3 and totals["energy_j"] == pytest.approx(3960 + 792 + 7920)
    assert totals["saving_g"] == pytest.approx(0.6) and totals["saving_jobs"] == 2


@pytest.mark.parametrize("by, expected", [
    ("user", {"alice": (2, 4752.0, 0.5), "bob": (1, 7920.0, 0.1)}),
    ("kind", {"diffusion-train": (2, 11880.0, 0.6), "diffusion-sample": (1, 792.0, None)}),
    ("zone", {"DE": (1, 3960.0, 0.5), "FR": (2, 8712.0, 0.1)}),
    ("day", {"2026-06-01": (2, 4752.0, 0.5), "2026-06-02": (1, 7920.0, 0.1)}),
])
def test_groups(seeded, by, expected):
    _, admin, _ = seeded
    history = admin.get("/v1/history", params={"group_by": by}).json()
    assert history["group_by"] == by
    got = {g[by]: (g["jobs"], g["energy_j"], g["saving_g"]) for g in history["groups"]}
    assert got.keys() == expected.keys()
    for key, (jobs, energy_j, saving) in expected.items():
        assert got[key][0] == jobs and got[key][1] == pytest.approx(energy_j)
        assert got[key][2] == (None if saving is None else pytest.approx(saving))


@pytest.mark.parametrize("params, count", [
    ({"user": "bob"}, 1), ({"kind": "diffusion-sample"}, 1), ({"zone": "FR"}, 2), ({"state": "succeeded"}, 3),
    ({"state": "failed"}, 0), ({"since": "2026-06-02T00:00:00Z"}, 1), ({"until": "2026-06-02T00:00:00Z"}, 2),
    ({"user": "nobody"}, 0),
])
def test_filters(seeded, params, count):
    _, admin, _ = seeded
    assert admin.get("/v1/history", params=params).json()["totals"]["jobs"] == count


def test_a_user_sees_only_their_own_history(seeded):
    daemon, admin, _ = seeded
    bob = TestClient(admin.app, headers={"Authorization": f"Bearer {daemon.auth.create_token('bob').secret}"})
    assert {r["user"] for r in bob.get("/v1/history").json()["jobs"]} == {"bob"}
