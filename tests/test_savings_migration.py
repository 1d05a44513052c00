"""Migrations that rebuild a table (SQLite's batch mode) keep the rows that point at it: a run's energy and
samples, on real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import text

from scheduler.store.engine import make_engine, upgrade

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc).replace(tzinfo=None)


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                     for table in ("runs", "run_energy", "power_samples"))


def test_upgrading_an_old_database_keeps_every_runs_energy_and_samples(db_url):
    """0003 rebuilds the runs table on SQLite (a column with a server default); it used to delete every run's
    energy and samples through their foreign keys' ON DELETE CASCADE."""
    engine = make_engine(db_url)
    upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO jobs (id, kind, spec, gpus, zones, interruptible, priority, state, reason, "
            "cancel_requested, submitted_at, workdir) VALUES ('j1', 'diffusion-train', '{}', 1, '[]', false, 0, "
            "'succeeded', 'finished', false, :now, '/tmp/j1')"), {"now": NOW})
        connection.execute(text(
            "INSERT INTO runs (id, job_id, attempt, node_id, zone, gpu_ids, started_at, status) "
            "VALUES (1, 'j1', 1, 'n', 'DE', '[]', :now, 'succeeded')"), {"now": NOW})
        connection.execute(text(
            "INSERT INTO run_energy (run_id, gpu_energy_j, cpu_energy_j, gpu_method, cpu_method, avg_power_w, "
            "peak_power_w, duration_s) VALUES (1, 10, 1, 'simulated', 'estimate', 1, 1, 11)"))
        connection.execute(text(
            "INSERT INTO power_samples (run_id, at, gpu_power_w, cpu_power_w, gpu_energy_j, cpu_energy_j) "
            "VALUES (1, :now, 100, 10, 10, 1)"), {"now": NOW})
    upgrade(engine)
    assert counts(engine) == (1, 1, 1)
    if engine.dialect.name == "sqlite":  # and the engine's connections enforce foreign keys again
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
