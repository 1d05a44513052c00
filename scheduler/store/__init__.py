"""The database and everything that reads or writes it: jobs and their runs, energy history, users and tokens.

``models`` and ``engine`` hold the SQLAlchemy schema and the engine (Alembic migrations live in ``migrations/``);
``jobs`` is the job store, the only writer of job state; ``job_state`` the states a job and a run go through;
``views`` and ``exports`` what users read back (job views, history rows and their totals).
Importing this package imports nothing heavy: ``job_state`` and ``exports`` serve the client too.
"""
