"""Shared fixtures. Database fixtures live in db_fixtures.py (SQLite and PostgreSQL for every DB test)."""

from db_fixtures import db_url  # noqa: F401  (fixture)
