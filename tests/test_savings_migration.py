"""Migration 0005 (how each run's power cap was applied) on real SQLite and PostgreSQL, and migrations that
rebuild a table (SQLite's batch mode) keeping the rows that point at it: a run's energy and samples."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from sqlalchemy import inspect, text

from scheduler.store.engine import alembic_config, make_engine, upgrade

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc).replace(tzinfo=None)

# run id: (power cap W, cap speed, cap power fraction, GPU method, counterfactual g)
RUNS = {
    1: (200.0, 0.8, 0.5, "simulated", 2.0),  # a logical GPU: its meter applied the cap
    2: (200.0, 0.8, 0.5, "nvml-counter", 2.0),  # a physical GPU: maybe a dry run, so its saving is not defended
    3: (None, 1.0, 1.0, "nvml-counter", 1.0),  # uncapped: nothing to doubt
}


def write_runs(connection) -> None:
    """Job j1 with the runs of RUNS, each with its energy and one power sample, in the 0004 schema."""
    connection.execute(text(
        "INSERT INTO jobs (id, kind, spec, gpus, zones, interruptible, priority, state, reason, "
        "cancel_requested, submitted_at, workdir) VALUES ('j1', 'diffusion-train', '{}', 1, '[]', false, 0, "
        "'succeeded', 'finished', false, :now, '/tmp/j1')"), {"now": NOW})
    for run_id, (cap_w, speed, fraction, method, counterfactual_g) in RUNS.items():
        connection.execute(text(
            "INSERT INTO runs (id, job_id, attempt, node_id, zone, gpu_ids, power_cap_w, cap_speed, "
            "cap_power_fraction, started_at, ended_at, status) VALUES (:id, 'j1', :id, 'n', 'DE', '[\"gpu-0\"]', "
            ":cap, :speed, :fraction, :now, :now, 'succeeded')"),
            {"id": run_id, "cap": cap_w, "speed": speed, "fraction": fraction, "now": NOW})
        connection.execute(text(
            "INSERT INTO run_energy (run_id, gpu_energy_j, cpu_energy_j, gpu_method, cpu_method, avg_power_w, "
            "peak_power_w, duration_s, emissions_g, counterfactual_emissions_g) VALUES (:id, 10, 1, :method, "
            "'estimate', 1, 1, 11, 0.5, :counterfactual)"),
            {"id": run_id, "method": method, "counterfactual": counterfactual_g})
        connection.execute(text(
            "INSERT INTO power_samples (run_id, at, gpu_power_w, cpu_power_w, gpu_energy_j, cpu_energy_j) "
            "VALUES (:id, :now, 100, 10, 10, 1)"), {"id": run_id, "now": NOW})


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                     for table in ("runs", "run_energy", "power_samples"))


def test_0005_marks_simulated_caps_clears_doubtful_savings_and_downgrades_keeping_every_row(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0004")
    with engine.begin() as connection:
        write_runs(connection)

    upgrade(engine)
    assert counts(engine) == (3, 3, 3)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT r.id, r.power_cap_mode, r.power_cap_limit_w, e.counterfactual_emissions_g FROM runs r "
            "JOIN run_energy e ON e.run_id = r.id ORDER BY r.id")).all()
    assert [tuple(r) for r in rows] == [(1, "simulated", 200.0, 2.0), (2, None, None, None), (3, None, None, 1.0)]

    command.downgrade(alembic_config(engine), "0004")
    assert not {"power_cap_mode", "power_cap_limit_w"} & {c["name"] for c in inspect(engine).get_columns("runs")}
    assert counts(engine) == (3, 3, 3)  # rebuilding runs on SQLite must not cascade into its energy and samples
    upgrade(engine)
    engine.dispose()


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
