"""The progress file of a job that runs the user's own code: JSON lines its processes append, read as they come.

A script appends lines such as ``{"step": 120, "total": 5000}`` to the file named by ``WATTSCHED_PROGRESS``;
the worker reads the new complete lines now and then, and the latest good one becomes the job's progress (its
run-length estimate and its view). A line that is not a JSON object, is longer than ``MAX_LINE_CHARS``, or has
a ``step`` or ``total`` that is not a finite number of at least 0, or holds text a database cannot store (a NUL, a
lone surrogate) is ignored and counted, never fatal: a
training loop must not fail on how it reports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: The longest line read as progress; a longer one is ignored (and counted).
MAX_LINE_CHARS = 4096
#: The most bytes read in one look: a script that writes faster is read over several looks.
MAX_READ_BYTES = 1 << 20
#: The keys whose values must be numbers of at least 0 (the units of work done, and of the whole job).
NUMERIC_KEYS = ("step", "total")


def parse_progress_line(line: str) -> dict[str, Any] | None:
    """A progress line as a dict, or None when it is not acceptable (see the module docstring)."""
    if len(line) > MAX_LINE_CHARS:
        return None
    try:
        progress = json.loads(line)
    except ValueError:
        return None
    if not isinstance(progress, dict):
        return None
    for key in NUMERIC_KEYS:
        value = progress.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return None
    try:  # NaN or infinity elsewhere would not survive the JSON the event travels as, nor a lone surrogate or a
        # NUL the database it is stored in (PostgreSQL refuses both)
        text = json.dumps(progress, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except ValueError:  # UnicodeEncodeError is one
        return None
    return None if "\\u0000" in text else progress


class ProgressFile:
    """Reads a progress file from where it stood when opened (lines of earlier runs are not this run's).

    ``read()`` returns the latest good line among those appended since the last read (None when there is
    none); ``lines`` and ``ignored`` count the complete lines read and those refused.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._offset = self.path.stat().st_size
        except FileNotFoundError:
            self._offset = 0
        self._partial = b""  # the start of a line still being written
        self._skipping = False  # inside a line too long to keep, until its newline
        self.lines = 0
        self.ignored = 0

    def read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < self._offset:  # truncated or replaced by the script: read it from its start
                    self._offset, self._partial = 0, b""
                f.seek(self._offset)
                chunk = f.read(MAX_READ_BYTES)
        except FileNotFoundError:
            return None
        self._offset += len(chunk)
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        if self._skipping and complete:  # the end of a line too long to keep
            complete, self._skipping = complete[1:], False
        if len(self._partial) > MAX_LINE_CHARS:  # no newline in sight: too long to be progress
            if not self._skipping:
                self.lines += 1
                self.ignored += 1
            self._partial, self._skipping = b"", True
        latest = None
        for raw in complete:
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            self.lines += 1
            progress = parse_progress_line(text)
            if progress is None:
                self.ignored += 1
            else:
                latest = progress
        return latest
