"""The daemon's database: models, engine and migrations (``upgrade``)."""

from scheduler.db.engine import make_engine, make_session_factory, upgrade

__all__ = ["make_engine", "make_session_factory", "upgrade"]
