"""Where the filesystem paths of job specs may point (a dataset, a checkpoint, a command's cwd), checked on submit.

A job reads its paths as the workers' OS user, who can read far more than a user of the daemon should: other
users' jobs, the daemon's database and its token file. So a path is allowed only by these rules, in order:

1. in the daemon's jobs directory: only inside a job's own directory, and only a job of the submitter (admins:
   any job's); never the jobs directory itself;
2. the daemon's data directory, its SQLite file (with its -wal, -shm and -journal files) and daemon.json: never;
3. under one of the roots: allowed. The roots are ``WATTSCHED_PATH_ROOTS`` when set (every token); else, on a
   daemon that listens on loopback only, the local user's home directory, for the local user's own token (an
   admin's: on such a daemon admin tokens are its OS user's, as for command jobs); else none;
4. anything else: refused.

Both the path as given (``~`` expanded, ``..`` folded) and the path it resolves to (every link followed) must
pass: one given outside is refused before the file system is asked, so a refusal never tells whether a path
exists, and a link inside a root cannot lead out of it. The spec keeps the resolved path, which the job checks
again where it runs (``workers.kinds.spec_paths``). A relative path is under the job's own directory, made
when the job first runs: it is kept relative and may not lead out by ``..``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.config import Settings
from scheduler.errors import InvalidRequest
from workers.kinds.spec_paths import escapes, is_within, resolve

#: Whether a job id names a job the submitter may use: (job id) -> bool.
OwnsJob = Callable[[str], bool]
#: Files SQLite keeps beside a database.
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class PathRoots:
    """One daemon's rules for spec paths (see the module docstring). Each folder is listed as configured and as
    it resolves (when a link leads elsewhere), so a path is judged alike whichever way it is written.

    roots: allowed to every token; local_roots: allowed to the local user's (admin) tokens only; jobs_dirs: the
    job directories' parent; private: never allowed, nor anything below them (but own job directories).
    """

    roots: tuple[str, ...]
    local_roots: tuple[str, ...]
    jobs_dirs: tuple[str, ...]
    private: tuple[str, ...]

    @classmethod
    def for_daemon(cls, settings: Settings, loopback: bool) -> PathRoots:
        """The rules of a daemon run with ``settings``; ``loopback``: its API listens on a loopback address only."""
        roots = _forms(*settings.path_roots)
        local = () if roots or not loopback else _forms("~")
        private = [str(settings.data_dir)]
        url = settings.resolved_database_url
        if url.startswith("sqlite"):
            from sqlalchemy.engine import make_url

            database = make_url(url).database
            if database and database != ":memory:":
                private += [database + side for side in _SQLITE_SIDE_FILES]
        return cls(roots, local, _forms(str(settings.jobs_dir)), _forms(*private))

    def allowed_roots(self, admin: bool) -> tuple[str, ...]:
        return self.roots + (self.local_roots if admin else ())

    def check(self, field: str, path: str, *, admin: bool, owns_job: OwnsJob) -> str:
        """The path to store for ``field`` (``spec.dataset``): resolved when absolute, normalised when relative;
        InvalidRequest naming the field when it may not be used, saying the same whether it exists or not.

        admin: the submitter is an admin (their roots include ``local_roots``); owns_job: whether a job id in the
        jobs directory names a job the submitter may use (admins: any job).
        """
        expanded = os.path.expanduser(path)
        if not os.path.isabs(expanded):
            if escapes(expanded):
                raise InvalidRequest(f"{field}: a relative path is under the job's own directory and may not "
                                     "lead out of it", field)
            return os.path.normpath(expanded)
        if not self._allowed(os.path.normpath(expanded), admin, owns_job):
            raise self._refused(field, admin)
        resolved = resolve(expanded)
        if not self._allowed(resolved, admin, owns_job):
            raise self._refused(field, admin)
        return resolved

    def _allowed(self, path: str, admin: bool, owns_job: OwnsJob) -> bool:
        for jobs_dir in self.jobs_dirs:
            if is_within(path, jobs_dir):
                job_id = os.path.relpath(path, jobs_dir).split(os.sep)[0]
                return job_id != os.curdir and owns_job(job_id)
        if any(is_within(path, p) for p in self.private):
            return False
        return any(is_within(path, root) for root in self.allowed_roots(admin))

    def _refused(self, field: str, admin: bool) -> InvalidRequest:
        roots = self.allowed_roots(admin)
        where = (f"under {', '.join(roots)} (but not the daemon's data directory) or " if roots else "") + \
            "in the directory of one of your own jobs"
        more = "" if self.roots else "; an admin allows more with WATTSCHED_PATH_ROOTS"
        return InvalidRequest(f"{field}: a path in a job's spec must be {where}{more}", field)


def _forms(*paths: str) -> tuple[str, ...]:
    """Each path as written (``~`` expanded, ``..`` folded) and as it resolves, without repeats."""
    found: dict[str, None] = {}
    for path in paths:
        written = os.path.normpath(os.path.expanduser(path))
        found.update(dict.fromkeys((written, resolve(written))))
    return tuple(found)
