"""Alembic environment: runs on the engine handed in by scheduler.store.engine.upgrade, or on ``sqlalchemy.url``."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from scheduler.store.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_, obj, autogen_context):
    """Render our UTCDateTime as a plain DateTime, so migrations never import the models module."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                    poolclass=pool.NullPool)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode copies a table to alter it and drops the old one; with foreign keys enforced, that drop
            # cascades (dropping runs deleted every run's energy and samples). Off for the migration, outside any
            # transaction (SQLite ignores the pragma inside one).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            # Batch mode lets ALTERs run on SQLite (it copies the table), and is harmless on PostgreSQL.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                              render_item=render_item)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if sqlite:  # the pooled connection goes back to the engine: enforce foreign keys again
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


run_migrations()
