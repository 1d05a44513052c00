"""The Electricity Maps provider on real v3 history responses (../shared/data; skipped when absent)."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scheduler.carbon.providers.config import Secret
from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.carbon.providers.http import HttpClient, MockTransport, json_response

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "api-fixtures" / "electricitymaps"
FILES = sorted(FIXTURES.glob("carbon_history_file*")) if FIXTURES.is_dir() else []


@pytest.mark.skipif(not FILES, reason=f"no Electricity Maps fixtures at {FIXTURES}")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_real_history_responses_parse_into_hourly_actuals(path):
    payload = json.loads(path.read_text())
    sent = []

    def handler(request):
        sent.append(request)
        return json_response(payload)

    provider = ElectricityMapsProvider(HttpClient("em", "https://em.test", MockTransport(handler)),
                                       Secret(env="EM_TOKEN", environ={"EM_TOKEN": "t"}), "lifecycle")
    as_of = datetime(2030, 1, 1, tzinfo=timezone.utc)
    points = provider.history(payload["zone"], as_of)
    expected = [item for item in payload["history"] if item["carbonIntensity"] is not None]
    assert len(points) == len(expected) > 0
    assert [p.intensity_g_per_kwh for p in points] == [float(i["carbonIntensity"]) for i in expected]
    assert all(p.basis == "actual" for p in points)
    assert sent[0].headers["auth-token"] == "t" and sent[0].params["zone"] == payload["zone"]
