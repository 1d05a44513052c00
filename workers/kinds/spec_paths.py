"""Filesystem paths in job specs (a dataset, a checkpoint, a command's cwd): how they are resolved, and the
check a job makes where it runs before it opens one.

The scheduler resolves every such path on submit (``~``, ``..`` and symlinks) and lets it through only under
the roots it allows (``scheduler.store.paths``); the spec it stores holds the resolved path. Between submit and
launch a link could be made along that path, or inside the folder it names, that leads somewhere else (another
user's job, the daemon's database). So the job checks again, with no table of roots of its own: an absolute
path must still resolve to exactly itself (then it is where the scheduler allowed it), a relative path must stay
in the job's own directory, and a folder may hold no link that leads out of it. Torch-free and cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.errors import SpecError


def resolve(path: str, workdir: Path | str | None = None) -> str:
    """``path`` as the file system finds it: ``~`` expanded, relative to ``workdir`` (the job's directory) when
    it is relative and one is given, every link and ``..`` resolved (as far as the path exists)."""
    expanded = os.path.expanduser(path)
    if workdir is not None and not os.path.isabs(expanded):
        expanded = os.path.join(workdir, expanded)
    return os.path.realpath(expanded)


def is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def escapes(relative: str) -> bool:
    """Whether a relative path leads out of the folder it is relative to by its ``..`` alone."""
    normal = os.path.normpath(relative)
    return normal == os.pardir or normal.startswith(os.pardir + os.sep)


def check_at_launch(field: str, path: str, workdir: Path, *, folder_links: bool = True) -> Path:
    """The path the job may open for ``field`` (``spec.dataset``), checked where the job runs; SpecError naming
    the field otherwise.

    Absolute: it must resolve to itself, as the scheduler stored it resolved; relative: it must stay in the job's
    directory ``workdir``. With ``folder_links``, a folder must hold no link that leads out of it (a folder the
    job reads as data; not a command's cwd, whose code may go anywhere the workers' user may).
    """
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded):
        found = os.path.realpath(expanded)
        if found != os.path.normpath(expanded):
            raise SpecError(f"{field}: the path no longer leads where it did when the job was submitted (a link "
                            "along it was made or changed); submit the job again", field=field,
                            accepted="the path as submitted")
    else:
        home = os.path.realpath(workdir)
        found = resolve(expanded, home)
        if escapes(expanded) or not is_within(found, home):
            raise SpecError(f"{field}: a relative path must stay in the job's directory", field=field,
                            accepted="a path in the job's directory")
    if folder_links:
        _check_no_link_out(field, found)
    return Path(found)


def _check_no_link_out(field: str, folder: str) -> None:
    """Refuse a folder holding a link (at any depth) whose target is outside it."""
    if not os.path.isdir(folder):
        return
    for parent, dirs, files in os.walk(folder):  # links to folders are listed in dirs and not followed
        for name in dirs + files:
            entry = os.path.join(parent, name)
            if os.path.islink(entry) and not is_within(os.path.realpath(entry), folder):
                shown = os.path.relpath(entry, folder)
                raise SpecError(f"{field}: {shown!r} in it is a link that leads out of it; copy the file instead",
                                field=field, accepted="a folder without links leading out of it")
