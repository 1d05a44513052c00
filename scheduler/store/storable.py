"""Whether a value from a request can be stored and served again: text that is valid Unicode, without NUL.

JSON may carry a lone surrogate (``"\\ud800"``), which no UTF-8 answer can hold, and NUL, which PostgreSQL's
text cannot; SQLite stores both. A job holding either would be stored and then break every answer that shows it,
so a submission is checked as a whole, nested values and keys too, before anything is stored.
"""

from __future__ import annotations

from typing import Any

from scheduler.errors import InvalidRequest

#: How deep a spec may nest (JSON from a 64 KiB body could nest thousands deep).
MAX_DEPTH = 32


def check_storable(value: Any, field: str, depth: int = 0) -> None:
    """InvalidRequest naming the innermost field (``spec.env.HOME``, ``spec.argv[2]``) unless every string in
    ``value``, keys included, is valid Unicode without NUL, and it nests at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"{field}: nests deeper than {MAX_DEPTH} levels", field)
    if isinstance(value, str):
        if not is_storable_text(value):
            raise InvalidRequest(f"{field}: text must be valid Unicode without NUL characters", field)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not is_storable_text(key):
                raise InvalidRequest(f"{field}: a key must be valid Unicode without NUL characters", field)
            check_storable(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_storable(item, f"{field}[{index}]", depth + 1)


def is_storable_text(text: str) -> bool:
    """Whether ``text`` has no NUL and encodes to UTF-8 (no lone surrogate)."""
    if "\0" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
