"""Who may submit ``command`` jobs: the user's own code, which runs as the workers' OS user (as Ray Jobs runs it).

WATTSCHED_COMMAND_JOBS decides (``scheduler.config.COMMAND_JOBS``):

- ``loopback`` (the default): only while the API listens on a loopback address, and only for admin tokens, which
  on such a daemon are its OS user's own (``daemon.json``): the local user runs their own code. A user token on
  a loopback daemon may belong to another local user, whose code would run as the daemon's user: refused;
- ``admins``: admin tokens, whatever the address;
- ``all``: every token (a cluster whose users may all run code as the workers' user);
- ``off``: nobody.
"""

from __future__ import annotations

import ipaddress

from scheduler.errors import Forbidden

KIND = "command"


def listens_on_loopback(host: str) -> bool:
    """Whether an API listening on ``host`` can be reached only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_command_access(setting: str, host: str, is_admin: bool) -> None:
    """Raise Forbidden (field ``kind``, naming the setting) unless a command job may be submitted."""
    if setting == "all" or (setting == "admins" and is_admin):
        return
    if setting == "loopback" and is_admin and listens_on_loopback(host):
        return
    why = {
        "off": "command jobs are off on this daemon",
        "admins": "only admins may submit command jobs on this daemon",
        "loopback": ("command jobs are allowed only for the local user's (admin) token" if listens_on_loopback(host)
                     else f"command jobs are allowed only on a daemon listening on a loopback address, not {host}"),
    }.get(setting, f"command jobs are not allowed ({setting!r})")
    raise Forbidden(f"kind: {why}: they run arbitrary code as the workers' OS user; an operator allows them with "
                    f"WATTSCHED_COMMAND_JOBS=loopback|admins|all (now {setting})", "kind")
