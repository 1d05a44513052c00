"""Which provider serves each zone, with the provider's own region id, and where its secrets come from.

A configuration is a mapping, usually a TOML or JSON file named by ``WATTSCHED_CARBON_CONFIG``::

    [providers.em]
    kind = "electricitymaps"                      # electricitymaps | watttime | ukcarbon | static | trace
    token_env = "WATTSCHED_ELECTRICITYMAPS_TOKEN"  # or token_file = "/etc/wattsched/em.token"
    emission_factor = "lifecycle"                 # or "direct"

    [providers.wt]
    kind = "watttime"
    username = "alice"
    password_file = "/etc/wattsched/watttime.password"

    [zones.DE]
    provider = "em"
    region = "DE"                                  # the provider's id for the zone; default: the zone name

Secrets are read from an environment variable or a file, lazily and again on every use (so a corrected token
file is picked up without a restart). They are never accepted inline (``token = "..."``) nor from the command
line, and :class:`Secret` never shows its value in a repr, a log line or an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from scheduler.errors import ConfigError

CONFIG_ENV = "WATTSCHED_CARBON_CONFIG"
PROVIDER_KINDS = ("electricitymaps", "watttime", "ukcarbon", "static", "trace")
_INLINE_SECRETS = ("token", "password", "api_key", "auth_token")


class Secret:
    """A token or password kept in an environment variable or a file; ``reveal()`` reads it when needed."""

    def __init__(self, *, env: str | None = None, file: Path | str | None = None,
                 environ: Mapping[str, str] | None = None):
        if (env is None) == (file is None):
            raise ConfigError("a secret comes from exactly one of an environment variable or a file")
        self._env = env
        self._file = None if file is None else Path(file)
        self._environ = environ

    @property
    def origin(self) -> str:
        """Where the secret lives, for messages: ``environment variable X`` or ``file /path``."""
        return f"environment variable {self._env}" if self._env else f"file {self._file}"

    def reveal(self) -> str:
        """The secret's current value; ConfigError (saying where to put it) when it is missing or empty."""
        if self._env is not None:
            value = (os.environ if self._environ is None else self._environ).get(self._env, "")
        else:
            try:
                value = self._file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read the secret in {self.origin} ({exc.strerror})") from None
        value = value.strip()
        if not value:
            raise ConfigError(f"the secret in {self.origin} is empty; put the token there")
        return value

    def fingerprint(self) -> str:
        """A short hash of the current value, so callers can tell that a rejected secret has been replaced."""
        try:
            return hashlib.sha256(self.reveal().encode()).hexdigest()[:16]
        except ConfigError:
            return ""

    def __repr__(self) -> str:
        return f"Secret({self.origin})"

    __str__ = __repr__


@dataclass(frozen=True)
class ProviderConfig:
    """One configured provider. Only the fields of its ``kind`` are used."""

    name: str
    kind: str
    #: API root; empty means the provider's public endpoint (tests point it at an emulator).
    base_url: str = ""
    #: Electricity Maps token (``auth-token`` header).
    token: Secret | None = None
    #: WattTime account name and password (HTTP Basic on /login).
    username: str = ""
    password: Secret | None = None
    #: Electricity Maps: ``lifecycle`` (LCA, the default) or ``direct`` emission factors.
    emission_factor: str = "lifecycle"
    #: WattTime signal type.
    signal_type: str = "co2_moer"
    #: static: the constant intensity, g/kWh.
    value_g_per_kwh: float | None = None
    #: trace: the CSV file, its basis for Electricity Maps exports (lca | direct) and a shift added to its times.
    path: Path | None = None
    trace_basis: str = "lca"
    trace_offset_s: float = 0.0
    #: Seconds before an HTTP request is abandoned.
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ZoneConfig:
    """A grid zone, the provider that serves it and that provider's region id for it."""

    zone: str
    provider: str
    region: str
    #: Used when neither the provider nor the cache has anything for the zone; None = the built-in synthetic cycle.
    fallback_g_per_kwh: float | None = None


@dataclass(frozen=True)
class CarbonConfig:
    """All configured providers (by name) and zones (by zone code)."""

    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    zones: dict[str, ZoneConfig] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                     base_dir: Path | None = None) -> CarbonConfig:
        """Parse and check a configuration; relative file paths are taken from ``base_dir``."""
        base_dir = base_dir or Path.cwd()
        providers = {name: _provider(name, dict(body), environ, base_dir)
                     for name, body in _table(data, "providers").items()}
        zones = {}
        for zone, body in _table(data, "zones").items():
            body = dict(body)
            provider = body.pop("provider", None)
            if provider not in providers:
                raise ConfigError(f"zone {zone}: provider {provider!r} is not configured; "
                                  f"configured: {', '.join(sorted(providers)) or 'none'}")
            fallback = body.pop("fallback_g_per_kwh", None)
            zones[zone] = ZoneConfig(zone, provider, str(body.pop("region", zone)),
                                     None if fallback is None else float(fallback))
            _no_leftovers(f"zone {zone}", body)
        return cls(providers, zones)

    @classmethod
    def from_file(cls, path: Path | str, environ: Mapping[str, str] | None = None) -> CarbonConfig:
        """A configuration from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the carbon configuration {path}: {exc}") from None
        return cls.from_mapping(data, environ, path.parent)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CarbonConfig | None:
        """The configuration in the file named by WATTSCHED_CARBON_CONFIG, or None when it is not set."""
        env = os.environ if environ is None else environ
        path = env.get(CONFIG_ENV, "").strip()
        return cls.from_file(path, environ) if path else None


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, Mapping) or not all(isinstance(v, Mapping) for v in table.values()):
        raise ConfigError(f"carbon configuration: {key!r} should be a table of tables")
    return table


def _provider(name: str, body: dict[str, Any], environ: Mapping[str, str] | None, base_dir: Path) -> ProviderConfig:
    where = f"provider {name}"
    for key in _INLINE_SECRETS:
        if key in body:
            raise ConfigError(f"{where}: secrets are not accepted inline ({key!r}); use {key}_env = \"VARIABLE\" "
                              f"or {key}_file = \"/path\"")
    kind = body.pop("kind", None)
    if kind not in PROVIDER_KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(PROVIDER_KINDS)}")
    values: dict[str, Any] = {"name": name, "kind": kind}
    for key in ("token", "password"):
        env, file = body.pop(f"{key}_env", None), body.pop(f"{key}_file", None)
        if env is not None or file is not None:
            if file is not None:
                file = base_dir / file
            values[key] = Secret(env=env, file=file, environ=environ)
    for key in ("base_url", "username", "emission_factor", "signal_type", "trace_basis"):
        if key in body:
            values[key] = str(body.pop(key))
    for key in ("value_g_per_kwh", "trace_offset_s", "timeout_s"):
        if key in body:
            values[key] = float(body.pop(key))
    if "path" in body:
        values["path"] = base_dir / str(body.pop("path"))
    _no_leftovers(where, body)
    config = ProviderConfig(**values)
    _check(config)
    return config


def _check(config: ProviderConfig) -> None:
    where = f"provider {config.name}"
    if config.kind == "electricitymaps":
        if config.token is None:
            raise ConfigError(f"{where}: set token_env or token_file (an Electricity Maps API token)")
        if config.emission_factor not in ("lifecycle", "direct"):
            raise ConfigError(f"{where}: emission_factor must be lifecycle or direct")
    elif config.kind == "watttime":
        if not config.username or config.password is None:
            raise ConfigError(f"{where}: set username and password_env or password_file (a WattTime account)")
    elif config.kind == "static":
        if config.value_g_per_kwh is None or config.value_g_per_kwh < 0:
            raise ConfigError(f"{where}: set value_g_per_kwh to an intensity >= 0")
    elif config.kind == "trace" and config.path is None:
        raise ConfigError(f"{where}: set path to a carbon trace CSV file")


def _no_leftovers(where: str, body: Mapping[str, Any]) -> None:
    if body:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(body))}")
