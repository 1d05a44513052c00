"""Users, roles and bearer tokens of the REST API.

A token is shown once, when it is created, and stored only as its SHA-256 hash (``ApiToken.token_hash``).
Roles: ``admin`` sees and changes every job and manages tokens; ``user`` sees and changes only their own jobs.
Admin operations run against the database directly (``wattsched token create``, like ``wattsched db upgrade``),
so a fresh install can make its first admin token; admins can also use ``/v1/tokens``.

The embedded default (``wattsched demo``, a local daemon) creates a user for the local OS user and a token for
it, written to ``daemon.json`` (mode 0600) for the client on the same machine, as Jupyter does. Each daemon's
local token is named after its installation (host and data directory), so a daemon restarted revokes its own
earlier token and never another daemon's on the same database (a standby's start leaves the leader's
``daemon.json`` working).
"""

from __future__ import annotations

import getpass
import hashlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import Clock
from scheduler.store.models import ApiToken, User
from scheduler.errors import InvalidRequest

ROLES = ("admin", "user")
LOCAL_TOKEN_NAME = "local daemon.json"
"""How the name of a token a local daemon makes for its OS user begins (``local_token_name``); such tokens do not
count as configured authentication, and other tokens may not take a name beginning so. A token named exactly this
was made before daemons named theirs after their installation."""
TOKEN_PREFIX = "ws_"
BOOTSTRAP_USER = "admin"
BOOTSTRAP_TOKEN_NAME = "bootstrap (WATTSCHED_ADMIN_TOKEN)"
MIN_SECRET_CHARS = 16  # a secret chosen by an operator: refuse the trivially guessable
MAX_NAME = 200
CACHE_TTL_S = 2.0
"""How long a verified token is trusted without asking the database again (a revocation made elsewhere, e.g.
with the CLI, takes effect within this; one made through this daemon's API at once)."""
LAST_USED_EVERY_S = 60.0
"""``last_used_at`` is written at most this often per token, so reads do not become writes."""


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the user behind a valid token."""

    user_id: int
    user: str
    role: str
    token_id: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def owner_filter(self) -> int | None:
        """The user id a query must be limited to, or None when the principal may see every job."""
        return None if self.is_admin else self.user_id


@dataclass(frozen=True)
class NewToken:
    """A token as created: ``secret`` is the bearer token itself, shown this once and never stored."""

    id: int
    user: str
    role: str
    name: str
    secret: str


def hash_token(secret: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def local_user_name() -> str:
    """The OS user running this process (the owner of a local daemon)."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): still one well-defined local user
        return "local"


def local_token_name(data_dir: str | Path, host: str | None = None) -> str:
    """The name of the local token of the daemon with this data directory on ``host`` (default: this machine's
    name): ``local daemon.json on HOST:DIR``, or with a hash of host and directory where that would not fit in a
    token's name."""
    host = host if host is not None else socket.gethostname()
    where = f"{host}:{Path(data_dir).expanduser().resolve()}"
    name = f"{LOCAL_TOKEN_NAME} on {where}"
    if len(name) <= MAX_NAME and name.isprintable():
        return name
    digest = hashlib.sha256(where.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{LOCAL_TOKEN_NAME} #{digest}"


def _is_local(name: Any):
    """SQL condition: the token is a local daemon's own (its name begins with ``LOCAL_TOKEN_NAME``)."""
    return name.startswith(LOCAL_TOKEN_NAME, autoescape=True)


def _check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or not value.isprintable():
        raise InvalidRequest(f"{field}: must be a printable name of 1 to {MAX_NAME} characters", field)
    return value


class TokenStore:
    """Users and tokens in the database; verifies bearer tokens with a short cache."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock):
        self.sessions = sessions
        self.clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._last_used: dict[int, float] = {}
        self._lock = threading.Lock()

    # --- users and tokens ---

    def create_token(self, user: str, role: str | None = None, name: str = "") -> NewToken:
        """A new token for ``user`` (created with ``role``, default ``user``, if new; ``role`` given for an
        existing user changes it)."""
        if name and isinstance(name, str) and name.startswith(LOCAL_TOKEN_NAME):
            # it would not count as configured authentication, and a local daemon's restart could revoke it
            raise InvalidRequest(f"name: {LOCAL_TOKEN_NAME!r} at the start of a name is kept for local daemons' "
                                 "own tokens; choose another name", "name")
        return self._create_token(user, role, name)

    def _create_token(self, user: str, role: str | None, name: str) -> NewToken:
        user = _check_name(user, "user")
        if role is not None and role not in ROLES:
            raise InvalidRequest(f"role: must be one of {', '.join(ROLES)}, got {role!r}", "role")
        if name and not (isinstance(name, str) and len(name) <= MAX_NAME and name.isprintable()):
            raise InvalidRequest(f"name: must be printable, at most {MAX_NAME} characters", "name")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        with self.sessions.begin() as session:
            row = self._user(session, user, role or "user", now)
            if role is not None:
                row.role = role
            token = ApiToken(user_id=row.id, name=name or "", token_hash=hash_token(secret), created_at=now)
            session.add(token)
            session.flush()
            return NewToken(token.id, row.name, row.role, token.name, secret)

    @staticmethod
    def _user(session: Session, name: str, role: str, now: datetime) -> User:
        row = session.scalar(select(User).where(User.name == name))
        if row is None:
            row = User(name=name, role=role, created_at=now)
            session.add(row)
            session.flush()
        return row

    def list_tokens(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        """Every token (never its secret): id, user, role, name, created, last used, revoked."""
        query = select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        with self.sessions() as session:
            return [{
                "id": t.id, "user": u.name, "role": u.role, "name": t.name,
                "created_at": t.created_at.isoformat(),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            } for t, u in session.execute(query).all()]

    def revoke(self, token_id: int) -> bool:
        """Revoke a token; False when no active token has that id."""
        with self.sessions.begin() as session:
            token = session.get(ApiToken, token_id)
            if token is None or token.revoked_at is not None:
                return False
            token.revoked_at = self.clock()
            revoked_hash = token.token_hash
        with self._lock:
            self._cache.pop(revoked_hash, None)
        return True

    def configured(self) -> bool:
        """Whether authentication is configured: an active token exists besides the local daemon's own."""
        with self.sessions() as session:
            return bool(session.scalar(select(func.count()).select_from(ApiToken).where(
                ApiToken.revoked_at.is_(None), ~_is_local(ApiToken.name))))

    def bootstrap_admin(self, secret: str, user: str = BOOTSTRAP_USER) -> NewToken | None:
        """Make ``secret`` an admin token of ``user`` when no admin token exists yet (besides a local daemon's
        own), so that a daemon on a fresh database can listen beyond loopback; None when there is one already,
        or when this secret was a token once (a revoked one is not brought back).

        For a deployment's first start (WATTSCHED_ADMIN_TOKEN): the secret is chosen by the operator, stored
        only as its hash like any other.
        """
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS or not secret.isprintable() \
                or secret != secret.strip():
            raise InvalidRequest(f"an admin token's secret must be at least {MIN_SECRET_CHARS} printable characters "
                                 "without surrounding spaces", "secret")
        user = _check_name(user, "user")
        now = self.clock()
        with self.sessions.begin() as session:
            admins = session.scalar(select(func.count()).select_from(ApiToken).join(User).where(
                User.role == "admin", ApiToken.revoked_at.is_(None), ~_is_local(ApiToken.name)))
            known = session.scalar(select(func.count()).select_from(ApiToken).where(
                ApiToken.token_hash == hash_token(secret)))
            if admins or known:
                return None
            row = self._user(session, user, "admin", now)
            row.role = "admin"
            token = ApiToken(user_id=row.id, name=BOOTSTRAP_TOKEN_NAME, token_hash=hash_token(secret), created_at=now)
            session.add(token)
            session.flush()
            return NewToken(token.id, row.name, row.role, token.name, secret)

    def local_token(self, data_dir: str | Path, user: str | None = None, host: str | None = None) -> NewToken:
        """A fresh admin token for the local OS user (the owner of the daemon with this data directory on
        ``host``, default this machine); the earlier ones of that daemon are revoked, and those named before
        daemons named theirs, but not other daemons' on the same database."""
        user = user or local_user_name()
        name = local_token_name(data_dir, host)
        now = self.clock()
        with self.sessions.begin() as session:
            row = session.scalar(select(User).where(User.name == user))
            if row is not None:
                for token in row.tokens:
                    if token.name in (name, LOCAL_TOKEN_NAME) and token.revoked_at is None:
                        token.revoked_at = now
        with self._lock:
            self._cache.clear()
        return self._create_token(user, "admin", name)

    # --- verification ---

    def peek(self, secret: str) -> Principal | None | bool:
        """The cached answer for a token without touching the database: a Principal, None (refused), or
        False when it is not cached (call ``authenticate``)."""
        with self._lock:
            cached = self._cache.get(hash_token(secret))
        if cached is None or time.monotonic() - cached[0] >= CACHE_TTL_S:
            return False
        return cached[1]

    def authenticate(self, secret: str | None) -> Principal | None:
        """The principal behind a bearer token, or None when it is missing, unknown or revoked."""
        if not secret:
            return None
        digest = hash_token(secret)
        now_s = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and now_s - cached[0] < CACHE_TTL_S:
            principal = cached[1]
        else:
            principal = self._lookup(digest)
            with self._lock:
                if len(self._cache) > 10_000:  # wrong tokens must not grow it without bound
                    self._cache.clear()
                self._cache[digest] = (now_s, principal)
        if principal is not None and now_s - self._last_used.get(principal.token_id, -1e9) > LAST_USED_EVERY_S:
            self._last_used[principal.token_id] = now_s
            with self.sessions.begin() as session:
                token = session.get(ApiToken, principal.token_id)
                if token is not None:
                    token.last_used_at = self.clock()
        return principal

    def _lookup(self, digest: str) -> Principal | None:
        with self.sessions() as session:
            row = session.execute(
                select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
            ).first()
            if row is None:
                return None
            token, user = row
            return Principal(user.id, user.name, user.role, token.id)

    def user_id(self, name: str) -> int | None:
        with self.sessions() as session:
            return session.scalar(select(User.id).where(User.name == name))
