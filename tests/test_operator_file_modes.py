"""Private files: the SQLite database (and its -wal/-shm files), the jobs directory and every job's directory are
readable by the daemon's OS user only, whatever the umask."""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import text

from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import make_engine, upgrade
from workers.job_process import run_job


@pytest.fixture
def lax_umask():
    """A umask that would leave new files world-readable and writable by the group."""
    before = os.umask(0o002)
    yield
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_side_files_are_private(tmp_path, lax_umask):
    database = tmp_path / "data" / "wattsched.db"
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    with engine.begin() as connection:  # a write in WAL mode: the -wal and -shm files exist while connected
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
        side_files = [database.with_name(database.name + s) for s in ("-wal", "-shm")]
        assert all(side.exists() for side in side_files)
        assert [mode(side) for side in side_files] == [0o600, 0o600]
    assert mode(database) == 0o600
    assert mode(database.parent) == 0o700
    engine.dispose()


def test_an_existing_world_readable_database_is_made_private(tmp_path, lax_umask):
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o755)
    database = folder / "old.db"
    upgrade(make_engine(f"sqlite:///{database}"))
    os.chmod(database, 0o644)
    wal = database.with_name(database.name + "-wal")
    wal.write_bytes(b"")
    os.chmod(wal, 0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert (mode(database), mode(wal)) == (0o600, 0o600)
    assert mode(folder) == 0o755  # a folder the database did not create is left as it was


def test_a_job_directory_and_the_jobs_directory_made_by_its_process_are_private(tmp_path, lax_umask):
    workdir = tmp_path / "jobs" / "job-1"
    run_job({"kind": "synthetic", "spec": {"steps": 1, "step_s": 0.0}, "workdir": str(workdir)},
            report=lambda _event: None, should_stop=lambda: False)
    assert (mode(workdir), mode(workdir.parent)) == (0o700, 0o700)


def test_an_existing_job_directory_is_made_private_when_its_job_runs_again(tmp_path, lax_umask):
    workdir = tmp_path / "job-2"
    workdir.mkdir(mode=0o755)
    os.chmod(workdir, 0o755)
    run_job({"kind": "synthetic", "spec": {"steps": 1, "step_s": 0.0}, "workdir": str(workdir)},
            report=lambda _event: None, should_stop=lambda: False)
    assert mode(workdir) == 0o700


def test_the_daemon_makes_its_jobs_directory_private(tmp_path, lax_umask):
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'data' / 'w.db'}", port=0)
    settings.jobs_dir.mkdir(parents=True)
    os.chmod(settings.jobs_dir, 0o775)
    daemon = Daemon(settings)
    daemon.start_api_only()
    try:
        assert mode(settings.jobs_dir) == 0o700
        assert mode(tmp_path / "data" / "w.db") == 0o600
    finally:
        daemon.stop()
