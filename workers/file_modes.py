"""Private files and directories: a job's outputs, the database and tokens are readable by their owner only.

The modes are set with chmod after creation, so they hold whatever the process's umask is.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path | str) -> Path:
    """Create ``path`` (and missing parents) if need be and make it 0700; parents made here are 0700 too."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    for folder in (path, *missing):
        os.chmod(folder, PRIVATE_DIR_MODE)
    return path


def make_private_file(path: Path | str) -> Path:
    """Create ``path`` empty if it does not exist, without a moment readable by others, and make it 0600."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return path
