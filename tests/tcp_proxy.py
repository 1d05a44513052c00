"""A TCP proxy on loopback for fault tests: it forwards to a server, or cuts it off as a failing network would.

    forward()    new and existing connections are passed through (the normal state)
    refuse()     the listening socket is closed (connections are refused) and open connections are reset
    blackhole()  connections are accepted but nothing is ever answered; open connections stop passing data
                 in either direction, as behind a partition, and stay open

Each switch takes effect before it returns. One thread serves every socket (a selector), so a switch is applied
between two reads, never in the middle of forwarding one. The server itself is never touched.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Callable


class TcpProxy:
    """Listens on 127.0.0.1:``port`` (0: a free port, see ``.port``) and forwards to ``target``."""

    def __init__(self, target: tuple[str, int], port: int = 0):
        self.target = target
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._lock = threading.Lock()
        self._peers: dict[socket.socket, socket.socket] = {}  # both directions of each forwarded connection
        self._held: list[socket.socket] = []  # accepted or stalled while blackholed, never read
        self._listener: socket.socket | None = None
        self.mode = "forward"
        self.port = port
        self._listen()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="tcp-proxy", daemon=True)
        self._thread.start()

    # --- switches (any thread) ---

    def forward(self) -> None:
        self._do(self._to_forward)

    def refuse(self) -> None:
        self._do(self._to_refuse)

    def blackhole(self) -> None:
        self._do(self._to_blackhole)

    def close(self) -> None:
        if not self._closed:
            self._do(self._to_closed)
            self._thread.join(timeout=10)
            self._wake_r.close()
            self._wake_w.close()

    def _do(self, change: Callable[[], None]) -> None:
        done = threading.Event()
        with self._lock:
            self._commands.append((change, done))
        self._wake_w.send(b"x")
        if not done.wait(timeout=10):
            raise RuntimeError("the proxy's thread did not apply the switch")

    # --- the proxy's thread ---

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")

    def _to_forward(self) -> None:
        if self._listener is None:
            self._listen()
        for sock in self._held:  # what a partition held is lost when it heals, as TCP would have given up
            _reset(sock)
            self._peers.pop(sock, None)
        self._held.clear()
        self._resume_all()
        self.mode = "forward"

    def _to_refuse(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for sock in list(self._peers) + self._held:
            self._drop(sock, reset=True)
        self._held.clear()
        self.mode = "refuse"

    def _to_blackhole(self) -> None:
        if self._listener is None:
            self._listen()
        for sock in list(self._peers):
            if sock not in self._held:
                self._selector.unregister(sock)
                self._held.append(sock)
        self.mode = "blackhole"

    def _to_closed(self) -> None:
        self._to_refuse()
        self._closed = True

    def _resume_all(self) -> None:
        for sock in self._peers:
            try:
                self._selector.get_key(sock)
            except KeyError:
                self._selector.register(sock, selectors.EVENT_READ, "pipe")

    def _serve(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select():
                if key.data == "wake":
                    self._wake_r.recv(4096)
                    with self._lock:
                        commands, self._commands = self._commands, []
                    for change, done in commands:
                        change()
                        done.set()
                elif key.data == "accept":
                    self._accept()
                elif key.fileobj in self._peers:  # not dropped earlier in this round
                    self._pipe(key.fileobj)
        self._selector.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        if self.mode == "blackhole":
            self._held.append(client)  # accepted by the kernel and by us; never a byte back
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        for sock in (client, server):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, "pipe")
        self._peers[client], self._peers[server] = server, client

    def _pipe(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        peer = self._peers[sock]
        if not data:
            self._drop(sock)
            return
        try:
            peer.setblocking(True)  # small messages: the peer's buffer takes them at once
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._drop(sock, reset=True)

    def _drop(self, sock: socket.socket, reset: bool = False) -> None:
        peer = self._peers.pop(sock, None)
        for one in (sock, peer):
            if one is None:
                continue
            self._peers.pop(one, None)
            try:
                self._selector.unregister(one)
            except (KeyError, ValueError):
                pass
            if reset:
                _reset(one)
            else:
                one.close()


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST), as a crashed server or a firewall rejecting the connection would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
