"""JSON answers that cannot fail on one bad value.

A job stored before its text was checked, or a progress line or result a job wrote itself, may hold a lone
surrogate (no UTF-8 answer can carry it) or a NaN or infinity (JSON has none). Served as it is, it would make
every answer holding it a 500: a whole page of the job list, for its user and for admins. Such an answer is
rendered again with those values escaped (a surrogate as ``\\udXXX`` text, a non-finite number as null), and the
log says which jobs held them.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class SafeJSONResponse(JSONResponse):
    """FastAPI's JSON answer, escaping what JSON in UTF-8 cannot hold instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (UnicodeEncodeError, ValueError):
            escaped, jobs = escape(content)
            log.warning("an answer held text that is not valid Unicode or a number JSON has not; escaped it "
                        "(jobs: %s)", ", ".join(sorted(jobs)) or "none named")
            return json.dumps(escaped, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def escape(value: Any) -> tuple[Any, set[str]]:
    """``value`` with lone surrogates escaped and non-finite numbers made null, and the ids of the jobs (objects
    with an ``id`` and a ``kind``) in which something was escaped."""
    jobs: set[str] = set()

    def walk(item: Any) -> tuple[Any, bool]:
        if isinstance(item, str):
            clean = item.encode("utf-8", "backslashreplace").decode("utf-8")
            return clean, clean != item
        if isinstance(item, float) and not math.isfinite(item):
            return None, True
        if isinstance(item, dict):
            pairs = [(walk(k), walk(v)) for k, v in item.items()]
            changed = any(kc or vc for (_, kc), (_, vc) in pairs)
            if changed and "id" in item and "kind" in item:
                jobs.add(walk(str(item["id"]))[0])
            return {k: v for (k, _), (v, _) in pairs}, changed
        if isinstance(item, (list, tuple)):
            walked = [walk(i) for i in item]
            return [i for i, _ in walked], any(c for _, c in walked)
        return item, False

    return walk(value)[0], jobs
