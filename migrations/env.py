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
        # Batch mode lets ALTERs run on SQLite (it copies the table), and is harmless on PostgreSQL.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          render_item=render_item)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
