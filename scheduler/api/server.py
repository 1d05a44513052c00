"""Serving the REST API: a uvicorn server in a thread of the daemon, its listen-address check, and the address
file that tells local clients where it is."""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from pathlib import Path

from scheduler.api.service import SchedulerService
from scheduler.errors import ApiServerError, ConfigError

#: How long stopping waits for the server thread to finish its requests.
STOP_WAIT_S = 10.0


def check_listen_address(host: str, tokens_exist: bool) -> None:
    """Refuse a non-loopback address unless authentication is configured (tokens made by an admin)."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not tokens_exist:
        raise ConfigError(
            f"refusing to listen on {host}: no API tokens exist, so anyone who can reach it could use it; "
            "create one first with `wattsched token create --user NAME --role admin`, or listen on 127.0.0.1")


def write_address_file(data_dir: Path, url: str, token: str | None) -> Path:
    """Tell local clients where the daemon is and its token (like Jupyter's runtime files); mode 0600.

    Written to a temporary file created 0600 and renamed, so the token is never readable by others, not even for
    a moment, and a client never reads a half-written file.
    """
    path = data_dir / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".daemon.json.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump({"url": url, "token": token}, f)
    os.replace(partial, path)
    return path


class ApiServer:
    """The API of a service, served by uvicorn in a thread until ``stop()``."""

    def __init__(self, service: SchedulerService, host: str, port: int):
        import uvicorn

        from scheduler.api.app import create_app

        config = uvicorn.Config(create_app(service), host=host, port=port, log_level="warning", access_log=False)
        self.host, self.port = host, port
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="wattsched-api", daemon=True)

    def start(self, stopping: threading.Event) -> str:
        """Listen; returns the URL clients use (port 0 picks a free one). ``stopping`` cuts the wait short."""
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise ApiServerError(f"the REST API could not listen on {self.host}:{self.port}")
            stopping.wait(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        host = self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=STOP_WAIT_S)
