"""Property-based run of schemathesis against the API's own OpenAPI description: no input gives a 5xx.

Bounded (a few examples per operation, positive and negative data) so it runs in seconds; it runs on
PostgreSQL when it answers (stricter about strings than SQLite: a NUL byte is refused there), else on SQLite.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

schemathesis = pytest.importorskip("schemathesis")

from db_fixtures import POSTGRES_URL, _postgres_reachable  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from scheduler.api.app import create_app  # noqa: E402
from scheduler.config import Settings  # noqa: E402
from scheduler.daemon.daemon import Daemon  # noqa: E402
from scheduler.store.engine import upgrade  # noqa: E402

# Hypothesis generates and sends hundreds of requests: seconds, more on a busy machine.
pytestmark = pytest.mark.slow

MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A daemon (no Ray) on a fresh database, one job in it, and an admin token."""
    import uuid

    from sqlalchemy import create_engine, text

    tmp = tmp_path_factory.mktemp("fuzz")
    schema_name = None
    if _postgres_reachable() is None:
        schema_name = f"wattsched_fuzz_{uuid.uuid4().hex[:10]}"
        admin = create_engine(POSTGRES_URL)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema_name}"'))
        separator = "&" if "?" in POSTGRES_URL else "?"
        url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema_name}"
    else:
        url = f"sqlite:///{tmp / 'fuzz.db'}"
    daemon = Daemon(Settings(data_dir=tmp, database_url=url))
    upgrade(daemon.engine)
    token = daemon.auth.create_token("fuzzer", "admin").secret
    app = create_app(daemon)
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert client.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {"steps": 5}}).status_code == 201
    yield app, token
    daemon.engine.dispose()
    if schema_name:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


def operations(app):
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_gives_a_server_error(fuzzed, mode):
    # Driven by hand rather than by schemathesis' pytest plugin, which does not load under pytest 9.
    app, token = fuzzed
    headers = {"Authorization": f"Bearer {token}"}
    tried = []
    for operation in operations(app):
        strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

        @given(case=strategy)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def call(case):
            case.call_and_validate(headers=headers, checks=[schemathesis.checks.not_a_server_error])

        call()
        tried.append(operation.label)
    assert len(tried) >= 12, tried
