"""Shared fixtures. Database fixtures live in db_fixtures.py (SQLite and PostgreSQL for every DB test)."""

from db_fixtures import daemon, db_url  # noqa: F401  (fixtures)
