"""Provider building blocks without a network: the HTTP client's retries and error translation (MockTransport),
configuration and secrets, the static and CSV trace providers, and the exception tree."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from scheduler import errors
from scheduler.errors import (
    BadCredentials,
    BadResponse,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    StaleData,
)
from scheduler.carbon.providers.config import CarbonConfig, Secret
from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.carbon.providers.http import HttpClient, HttpResponse, MockTransport, json_response
from scheduler.carbon.providers.static import StaticProvider
from scheduler.carbon.providers.trace import TraceProvider
from scheduler.errors import ConfigError, WattschedError

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


def client(handler, sleeps=None, **kwargs):
    return HttpClient("test", "http://api.invalid", MockTransport(handler),
                      sleep=(sleeps.append if sleeps is not None else None), clock=lambda: T0, **kwargs)


def replies(*responses):
    """A handler answering with ``responses`` in turn (an exception instance is raised instead)."""
    queue = list(responses)

    def handler(request):
        reply = queue.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply
    return handler


def test_exception_tree_is_rooted_in_wattsched_error_and_drawn_in_the_docstring():
    for cls in (ProviderUnavailable, RateLimited, BadCredentials, BadResponse, StaleData):
        assert issubclass(cls, ProviderError) and issubclass(cls, WattschedError)
        assert cls.__name__ in errors.__doc__
    assert issubclass(RateLimited, ProviderUnavailable)


def test_server_errors_and_timeouts_are_retried_with_exponential_backoff():
    sleeps = []
    http = client(replies(json_response({}, 503), TimeoutError(), json_response({"ok": 1})), sleeps)
    assert http.get_json("/x") == {"ok": 1}
    assert sleeps == [1.0, 2.0]
    sleeps.clear()
    with pytest.raises(ProviderUnavailable, match="HTTP 502"):
        client(replies(*[json_response({}, 502)] * 3), sleeps).get_json("/x")
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize("retry_after,waited", [("3", 3.0), ("Mon, 02 Mar 2026 12:00:05 GMT", 5.0), ("", 1.0)])
def test_429_waits_for_retry_after_in_seconds_or_as_a_date(retry_after, waited):
    sleeps = []
    headers = {"retry-after": retry_after} if retry_after else {}
    http = client(replies(json_response({}, 429, headers), json_response([1])), sleeps)
    assert http.get_json("/x") == [1] and sleeps == [waited]


def test_a_long_retry_after_raises_rate_limited_at_once():
    sleeps = []
    with pytest.raises(RateLimited) as caught:
        client(replies(json_response({}, 429, {"retry-after": "3600"})), sleeps).get_json("/x")
    assert caught.value.retry_after_s == 3600 and sleeps == []


@pytest.mark.parametrize("response,error,text", [
    (json_response({"message": "bad token"}, 401), BadCredentials, "credentials rejected"),
    (json_response({}, 403), BadCredentials, "HTTP 403"),
    (HttpResponse(200, {"content-type": "text/html"}, b"<html><title>Maintenance</title></html>"), BadResponse,
     r"HTML page \(Maintenance\)"),
    (HttpResponse(200, {"content-type": "application/json"}, b'{"data": [1, 2'), BadResponse, "malformed"),
    (HttpResponse(200, {}, b"  <!doctype html><p>oops"), BadResponse, "HTML page"),
    (json_response({"error": "zone unknown"}, 404), BadResponse, "HTTP 404"),
])
def test_client_errors_are_translated_once_and_not_retried(response, error, text):
    sleeps = []
    with pytest.raises(error, match=text):
        client(replies(response), sleeps).get_json("/x")
    assert sleeps == []


def test_secrets_come_from_env_or_file_and_never_show(tmp_path):
    (tmp_path / "token").write_text("s3cret-file\n")
    from_file = Secret(file=tmp_path / "token")
    from_env = Secret(env="TOKEN", environ={"TOKEN": "s3cret-env"})
    assert (from_file.reveal(), from_env.reveal()) == ("s3cret-file", "s3cret-env")
    assert "s3cret" not in repr(from_file) + str(from_env) + repr(from_env)
    with pytest.raises(ConfigError, match="environment variable MISSING"):
        Secret(env="MISSING", environ={}).reveal()
    assert from_file.fingerprint() != from_env.fingerprint()


def test_config_maps_zones_to_providers_and_refuses_inline_secrets(tmp_path):
    (tmp_path / "carbon.toml").write_text(
        '[providers.em]\nkind = "electricitymaps"\ntoken_file = "em.token"\nemission_factor = "direct"\n'
        '[providers.flat]\nkind = "static"\nvalue_g_per_kwh = 250\n'
        '[zones.DE]\nprovider = "em"\n[zones.LAB]\nprovider = "flat"\nregion = "lab"\nfallback_g_per_kwh = 300\n')
    config = CarbonConfig.from_env({"WATTSCHED_CARBON_CONFIG": str(tmp_path / "carbon.toml")})
    assert config.zones["DE"].region == "DE" and config.zones["LAB"].fallback_g_per_kwh == 300
    assert config.providers["em"].token.origin == f"file {tmp_path / 'em.token'}"
    assert CarbonConfig.from_env({}) is None
    with pytest.raises(ConfigError, match="not accepted inline"):
        CarbonConfig.from_mapping({"providers": {"em": {"kind": "electricitymaps", "token": "abc"}}})
    with pytest.raises(ConfigError, match="provider 'nope' is not configured"):
        CarbonConfig.from_mapping({"zones": {"DE": {"provider": "nope"}}})
    with pytest.raises(ConfigError, match="kind 'carbonapi'"):
        CarbonConfig.from_mapping({"providers": {"x": {"kind": "carbonapi"}}})


def test_electricity_maps_parses_history_and_refuses_the_other_emission_factor():
    def item(at, value, factor="lifecycle"):
        return {"zone": "DE", "carbonIntensity": value, "datetime": at.isoformat(), "updatedAt": at.isoformat(),
                "createdAt": at.isoformat(), "emissionFactorType": factor, "isEstimated": False,
                "estimationMethod": None}
    history = {"zone": "DE", "history": [item(T0 - timedelta(hours=2), 301), {**item(T0 - timedelta(hours=1), 0),
                                                                              "carbonIntensity": None}]}
    seen = []

    def handler(request):
        seen.append(request)
        return json_response(history if request.url.endswith("history") else item(T0, 310))
    provider = ElectricityMapsProvider(client(handler), Secret(env="T", environ={"T": "s3cr3t"}))
    points = provider.actuals("DE", T0, 24 * 3600)
    assert [(p.at, p.intensity_g_per_kwh) for p in points] == [(T0 - timedelta(hours=2), 301), (T0, 310)]
    assert seen[0].headers == {"auth-token": "s3cr3t"} and seen[0].params["emissionFactorType"] == "lifecycle"
    assert "s3cr3t" not in repr(seen[0]) + repr(provider)
    history["history"][0]["emissionFactorType"] = "direct"
    with pytest.raises(BadResponse, match="asked for lifecycle"):
        provider.actuals("DE", T0, 24 * 3600)


def test_static_provider_is_flat_and_hourly():
    provider = StaticProvider(250)
    as_of = T0 + timedelta(minutes=20)
    assert [(p.at, p.intensity_g_per_kwh) for p in provider.actuals("x", as_of, 3600)] == [(T0, 250)]
    forecast = provider.forecast("x", as_of, 3 * 3600)
    assert [p.at for p in forecast] == [T0 + timedelta(hours=h) for h in range(4)]
    assert {p.issued_at for p in forecast} == {T0}


TRACE_SHAPES = {
    "own.csv": "timestamp,carbon_intensity\n{t0},100\n{t1},200\n{t3},300\n",
    "waitawhile.csv": "Time,Carbon Intensity\n{t0},100\n{t1},200\n{t3},300\n",
    "export.csv": "\ufeffDatetime (UTC),Country,Carbon Intensity gCO₂eq/kWh (LCA),Carbon Intensity gCO₂eq/kWh "
                  "(direct)\n{t0},DE,100,80\n{t1},DE,200,160\n{t3},DE,300,240\n",
    "dump.csv": "zone_datetime,carbon_intensity_avg,timestamp\n{t0},100,x\n{t1},200,x\n{t3},300,x\n",
    "dump_plain.csv": "datetime,carbon_intensity_avg\n{t0},100\n{t1},200\n{t3},300\n",
}


def times(offset_h=0):
    return {f"t{i}": (T0 + timedelta(hours=i + offset_h)).strftime("%Y-%m-%d %H:%M:%S") for i in range(4)}


@pytest.mark.parametrize("name", sorted(TRACE_SHAPES))
def test_trace_provider_reads_every_shape_with_bom_and_gaps(tmp_path, name):
    path = tmp_path / name
    path.write_text(TRACE_SHAPES[name].format(**times()), encoding="utf-8")
    provider = TraceProvider(path)
    actuals = provider.actuals("ignored", T0 + timedelta(hours=2, minutes=30), 2 * 3600)
    assert [(p.at, p.intensity_g_per_kwh) for p in actuals] == [(T0, 100), (T0 + timedelta(hours=1), 200)]
    forecast = provider.forecast("ignored", T0 + timedelta(hours=2, minutes=30), 3600)
    # Through the gap (no row at 14:00) the 13:00 value holds, then 15:00's.
    assert [(p.at.hour, p.intensity_g_per_kwh, p.basis) for p in forecast] == [(13, 200, "forecast"),
                                                                               (15, 300, "forecast")]


def test_trace_provider_direct_basis_and_offset(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(TRACE_SHAPES["export.csv"].format(**times(-24)), encoding="utf-8")
    provider = TraceProvider(path, basis="direct", offset_s=24 * 3600)
    assert provider.actuals("x", T0, 0)[-1].intensity_g_per_kwh == 80


@pytest.mark.parametrize("body,problem", [
    ("timestamp,carbon_intensity\n{t0},100\n{t0},110\n", "line 3.*duplicate"),
    ("timestamp,carbon_intensity\n{t0},100\nnot a time,110\n", "line 3.*not a timestamp"),
    ("timestamp,carbon_intensity\n{t0},100\n{t1},lots\n", "line 3.*not a number"),
    ("timestamp,carbon_intensity\n{t0},100\n{t1},-5\n", "line 3.*>= 0"),
    ("when,what\n{t0},100\n", "line 1.*no a time column"),
])
def test_trace_provider_reports_bad_files_by_file_and_line(tmp_path, body, problem):
    path = tmp_path / "bad.csv"
    path.write_text(body.format(**times()), encoding="utf-8")
    with pytest.raises(BadResponse, match=f"bad.csv.*{problem}"):
        TraceProvider(path).actuals("x", T0, 3600)


def test_trace_provider_rereads_a_corrected_file_and_reports_a_missing_one(tmp_path):
    path = tmp_path / "trace.csv"
    provider = TraceProvider(path)
    with pytest.raises(ProviderUnavailable, match="cannot read"):
        provider.actuals("x", T0, 3600)
    path.write_text("timestamp,carbon_intensity\n{t0},100\n".format(**times()))
    assert provider.actuals("x", T0, 3600)[0].intensity_g_per_kwh == 100
    path.write_text("timestamp,carbon_intensity\n{t0},100\n{t1},170\n".format(**times()))
    assert provider.actuals("x", T0 + timedelta(hours=1), 3600)[-1].intensity_g_per_kwh == 170
