"""Migrations 0002 (job options, idempotency keys, counterfactual emissions) and 0003 (a run's cap step) on
real SQLite and PostgreSQL: up with data in place, down again, and the schema they make matches the models."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from scheduler.store.engine import upgrade
from scheduler.store.engine import alembic_config, make_engine
from scheduler.store.models import Base

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc).replace(tzinfo=None)


def columns(engine, table):
    return {c["name"] for c in inspect(engine).get_columns(table)}


def insert_job_and_run(connection, state: str, power_cap_w: float | None = None) -> None:
    """Job j1 with its run 1, both in ``state``, written with the columns every schema version has."""
    connection.execute(text(
        "INSERT INTO jobs (id, kind, spec, gpus, zones, interruptible, priority, state, reason, "
        "cancel_requested, submitted_at, workdir) VALUES ('j1', 'diffusion-train', '{}', 1, '[]', false, 0, "
        ":state, 'why', false, :now, '/tmp/j1')"), {"state": state, "now": NOW})
    connection.execute(text(
        "INSERT INTO runs (id, job_id, attempt, node_id, zone, gpu_ids, power_cap_w, started_at, status) "
        "VALUES (1, 'j1', 1, 'n', 'DE', '[\"gpu-0\"]', :cap, :now, :state)"),
        {"cap": power_cap_w, "now": NOW, "state": state})


def check_new_runs_column(db_url, before: str, column: str, state: str) -> None:
    """A migration after ``before`` that adds ``column`` to runs: a run written before it reads NULL there, the
    schema at the head matches the models, and a downgrade drops the column and keeps the run."""
    from alembic import command

    engine = make_engine(db_url)
    upgrade(engine, before)
    with engine.begin() as connection:
        insert_job_and_run(connection, state)
    upgrade(engine)
    assert column in columns(engine, "runs")
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT {column} FROM runs")).scalar() is None  # nothing kept before
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if not _type_only(d)] == []
    command.downgrade(alembic_config(engine), before)
    assert column not in columns(engine, "runs")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT status FROM runs")).scalar() == state
    upgrade(engine)
    engine.dispose()


def test_0002_upgrades_a_0001_database_with_jobs_and_downgrades(db_url):
    from alembic import command

    engine = make_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        insert_job_and_run(connection, "succeeded")
        connection.execute(text(
            "INSERT INTO run_energy (run_id, gpu_energy_j, cpu_energy_j, gpu_method, cpu_method, avg_power_w, "
            "peak_power_w, duration_s, emissions_g) VALUES (1, 10, 1, 'simulated', 'estimate', 1, 1, 11, 0.5)"))

    upgrade(engine)
    assert {"not_before_at", "time_limit_s", "held", "depends_on", "idempotency_key", "request_hash"} <= \
        columns(engine, "jobs")
    assert "counterfactual_emissions_g" in columns(engine, "run_energy")
    with engine.connect() as connection:
        held, depends_on = connection.execute(text("SELECT held, depends_on FROM jobs")).one()
        assert held in (False, 0) and depends_on in ("[]", [])
        assert connection.execute(text("SELECT counterfactual_emissions_g FROM run_energy")).scalar() is None

    with engine.connect() as connection:  # the migrated schema is what the models describe
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diff if not _type_only(d)] == []

    command.downgrade(alembic_config(engine), "0001")
    assert "held" not in columns(engine, "jobs") and "counterfactual_emissions_g" not in columns(engine, "run_energy")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
    upgrade(engine)
    engine.dispose()


def test_0003_records_full_power_for_runs_made_before_it_and_downgrades(db_url):
    from alembic import command

    engine = make_engine(db_url)
    upgrade(engine, "0002")
    with engine.begin() as connection:
        insert_job_and_run(connection, "running", power_cap_w=200.0)

    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT cap_speed, cap_power_fraction FROM runs")).one() == (1.0, 1.0)

    command.downgrade(alembic_config(engine), "0002")
    assert not {"cap_speed", "cap_power_fraction"} & columns(engine, "runs")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT power_cap_w FROM runs")).scalar() == 200.0
    upgrade(engine)
    engine.dispose()


def _type_only(item) -> bool:
    """Differences of type rendering only (UTCDateTime is stored as DateTime): not schema drift."""
    entry = item[0] if isinstance(item, list) else item
    return entry[0] in ("modify_type", "modify_default")
