"""The first admin token of a deployment, from WATTSCHED_ADMIN_TOKEN or a secret file (WATTSCHED_ADMIN_TOKEN_FILE).

A daemon listening beyond loopback refuses to start until an admin token exists; a container started on a fresh
database has no one to run ``wattsched token create`` first, so the operator hands the secret in.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scheduler.config import ENV_PREFIX, Settings
from scheduler.errors import ConfigError, InvalidRequest
from scheduler.store.auth import TokenStore

log = logging.getLogger(__name__)


def admin_secret(settings: Settings) -> str | None:
    """The secret the settings hand in (the variable, else the file's content without its line end), or None."""
    if settings.admin_token:
        return settings.admin_token
    if not settings.admin_token_file:
        return None
    try:
        return Path(settings.admin_token_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{ENV_PREFIX}ADMIN_TOKEN_FILE={settings.admin_token_file!r} cannot be read: "
                          f"{exc.strerror}") from None


def bootstrap_admin_token(auth: TokenStore, settings: Settings) -> bool:
    """Make the handed-in secret an admin token if no admin token exists yet; whether it did."""
    secret = admin_secret(settings)
    if secret is None:
        return False
    try:
        made = auth.bootstrap_admin(secret)
    except InvalidRequest as exc:
        raise ConfigError(f"{ENV_PREFIX}ADMIN_TOKEN: {exc}") from None
    if made is not None:
        log.warning("created admin token %d for user %r from %sADMIN_TOKEN%s", made.id, made.user, ENV_PREFIX,
                    "_FILE" if not settings.admin_token else "")
    return made is not None
