"""Which extra of the ``wattsched`` distribution a command needs, and the message that says so.

``pip install wattsched`` is the client and the CLI; the daemon, the worker, the simulator, charts and
PostgreSQL come as extras (pyproject.toml). A command that reaches for a package of an absent extra fails with a
``ModuleNotFoundError``; ``naming_missing_extras`` turns that into one line a user can act on::

    wattsched daemon needs the daemon extra: pip install 'wattsched[daemon]'

Only packages listed here are translated: any other missing module is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from scheduler.errors import MissingExtra

#: The top-level modules each extra brings (import names, not distribution names), as pyproject.toml lists them.
PACKAGES: dict[str, frozenset[str]] = {
    "daemon": frozenset({"ray", "sqlalchemy", "alembic", "apscheduler", "fastapi", "uvicorn", "prometheus_client",
                         "psutil", "numpy", "numba"}),
    "worker": frozenset({"ray", "torch", "diffusers", "sklearn", "numpy", "PIL", "psutil", "pynvml"}),
    "simulate": frozenset({"numpy", "numba"}),
    "plot": frozenset({"matplotlib"}),
    "postgres": frozenset({"psycopg"}),
}

#: The extras each command needs beyond the base install (commands not listed need none).
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "daemon": ("daemon",),
    "demo": ("daemon", "worker"),  # the daemon and its jobs on this machine
    "db": ("daemon",),
    "token": ("daemon",),  # on the database directly; `token --api` goes through the client
    "simulate": ("simulate",),
    "history": ("plot",),  # only --plot needs it
    # Without --url the jobs run on an embedded daemon with its workers here (as demo's); the report's charts
    # need matplotlib either way. --data's simulator needs numpy and numba, which the daemon extra brings.
    "levers": ("daemon", "worker", "plot"),
}


def missing_extra(command: str, error: ModuleNotFoundError) -> MissingExtra | None:
    """The error to show when ``command`` failed on ``error``; None when the missing module is no extra's."""
    package = (error.name or "").partition(".")[0]
    extras = [extra for extra in COMMAND_EXTRAS.get(command, ()) if package in PACKAGES[extra]]
    if extras:
        # name every extra the command needs, so one install is enough
        extras = list(COMMAND_EXTRAS[command])
    else:
        extras = [extra for extra, packages in PACKAGES.items() if package in packages][:1]
    if not extras:
        return None
    plural = "s" if len(extras) > 1 else ""
    named = " and ".join(filter(None, (", ".join(extras[:-1]), extras[-1])))
    return MissingExtra(f"wattsched {command} needs the {named} extra{plural}: "
                        f"pip install 'wattsched[{','.join(extras)}]' ({package} is not installed)")


@contextlib.contextmanager
def naming_missing_extras(command: str) -> Iterator[None]:
    """Run a command's body; a missing package of a known extra becomes ``MissingExtra``, naming the extra."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_extra(command, exc)
        if error is None:
            raise
        raise error from exc
