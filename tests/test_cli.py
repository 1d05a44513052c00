"""The ``wattsched`` command line, called as ``main([...])`` against the API double of tests/test_client.py."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import types
from datetime import datetime, timedelta, timezone

import pytest

from scheduler.cli import tables
from scheduler.cli.commands import main, parse_duration, parse_spec, parse_when
from test_client import api, free_port_url, isolated_env, real_api, served_api  # noqa: F401  (fixtures, helpers)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def run(api, capsys, *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``wattsched --url <double> ARGV``."""
    status = main(["--url", api.url, *argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 1
    assert err.startswith("wattsched: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# --- submit ---------------------------------------------------------------------------------------------


def test_submit_sends_spec_overrides_zones_and_deadline(api, capsys):
    before = datetime.now(timezone.utc)
    status, out, _ = run(api, capsys, "submit", "diffusion-train", "--spec", '{"steps": 10, "model": {"ch": 32}}',
                         "--set", "steps=20", "--set", "model.ch=64", "--set", "name=digits", "--gpus", "2",
                         "--zone", "DE", "--zone", "FR", "--deadline", "+2h", "--interruptible")
    assert status == 0
    [job] = api.jobs.values()
    assert out == f"submitted job {job['id']}: pending (waiting for a free GPU in DE)\n"
    assert job["spec"] == {"steps": 20, "model": {"ch": 64}, "name": "digits"}
    assert (job["gpus"], job["zones"], job["interruptible"]) == (2, ["DE", "FR"], True)
    deadline = datetime.fromisoformat(job["deadline"])
    assert before + timedelta(hours=2) <= deadline <= datetime.now(timezone.utc) + timedelta(hours=2)


def test_submit_reads_the_spec_from_a_file(api, capsys, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"steps": 7}')
    status, out, _ = run(api, capsys, "submit", "diffusion-sample", "--spec", f"@{path}", "--format", "json")
    assert status == 0
    assert json.loads(out)["spec"] == {"steps": 7}


def test_submit_wait_prints_the_finished_job(api, capsys):
    api.on_wait = lambda calls: api.finish(next(iter(api.jobs)))
    status, out, err = run(api, capsys, "submit", "diffusion-train", "--wait")
    assert status == 0
    assert "waiting for it to finish" in err
    assert "succeeded" in out and "1,234 J (simulated+estimate)" in out


def test_submit_wait_exits_1_when_the_job_fails(api, capsys):
    api.on_wait = lambda calls: api.finish(next(iter(api.jobs)), state="failed")
    status, out, _ = run(api, capsys, "submit", "diffusion-train", "--wait")
    assert status == 1 and "CUDA out of memory" in out


def test_bad_spec_json_is_one_line(api, capsys):
    status, out, err = run(api, capsys, "submit", "diffusion-train", "--spec", "{steps: 10}")
    assert out == "" and not api.jobs
    assert_one_line_error(status, err, "--spec is not valid JSON")


def test_a_spec_the_daemon_refuses_names_the_field(api, capsys):
    status, _, err = run(api, capsys, "submit", "diffusion-train", "--set", "steps=0")
    assert_one_line_error(status, err, "spec.steps: must be a positive integer")


def test_unreachable_daemon_is_one_line(capsys):
    status = main(["--url", free_port_url(), "list"])
    _, err = capsys.readouterr()
    assert_one_line_error(status, err, "is the daemon running? start it with `wattsched daemon`")


def test_missing_token_says_how_to_pass_one(api, capsys):
    api.token = "s3cret"
    status, _, err = run(api, capsys, "status")
    assert_one_line_error(status, err, "pass --token or set WATTSCHED_TOKEN")
    assert main(["status", "--url", api.url, "--token", "s3cret"]) == 0


# --- status, list, cancel -------------------------------------------------------------------------------


def test_status_without_id_shows_the_daemon(api, capsys):
    status, out, _ = run(api, capsys, "status")
    assert status == 0
    assert "policy fifo" in out and "database sqlite" in out and "A100-SXM4-40GB (logical)" in out


def test_status_of_a_job_shows_runs_energy_and_emissions(api, capsys):
    main(["--url", api.url, "submit", "diffusion-train"])
    job_id = next(iter(api.jobs))
    api.finish(job_id)
    capsys.readouterr()

    status, out, _ = run(api, capsys, "status", job_id)

    assert status == 0
    assert "1,234 J (simulated+estimate) = 0.000343 kWh (simulated+estimate)" in out
    assert "1,000 J (simulated)" in out and "234 J (estimate)" in out  # per-figure methods
    assert "0.120 g CO2e at 350 g/kWh (carbon source: static)" in out
    assert "runs" in out and "node-a" in out and "250" in out


def test_status_of_a_waiting_job_shows_why_it_waits(api, capsys):
    main(["--url", api.url, "submit", "diffusion-train"])
    capsys.readouterr()
    _, out, _ = run(api, capsys, "status", next(iter(api.jobs)))
    assert "waiting for a free GPU in DE" in out and "not measured yet" in out


def test_status_of_an_unknown_job(api, capsys):
    status, _, err = run(api, capsys, "status", "nope")
    assert_one_line_error(status, err, "no job with id 'nope'")


def make_jobs(api) -> list[str]:
    """Three jobs: one finished, one running, one pending (newest)."""
    for _ in range(3):
        main(["--url", api.url, "submit", "diffusion-train"])
    finished, running, _pending = api.jobs
    api.finish(finished)
    api.start(running)
    return list(api.jobs)


def test_list_table(api, capsys):
    finished, running, pending = make_jobs(api)
    capsys.readouterr()

    status, out, _ = run(api, capsys, "list")

    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["id", "kind", "state", "duration", "energy", "J", "kWh", "method", "emissions", "g",
                              "carbon", "reason"]
    assert [r.split()[0] for r in rows] == [pending, running, finished]
    assert "waiting for a free GPU in DE" in rows[0]
    assert "1,234" in rows[2] and "0.000343" in rows[2] and "simulated+estimate" in rows[2]


def test_list_csv_and_json(api, capsys):
    make_jobs(api)
    capsys.readouterr()

    _, out, _ = run(api, capsys, "list", "--state", "succeeded", "--format", "csv")
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["state"] == "succeeded" and float(row["energy_j"]) == 1234.0
    assert row["methods"] == "simulated+estimate" and row["carbon_source"] == "static"

    _, out, _ = run(api, capsys, "list", "--limit", "2", "--format", "json")
    assert [j["state"] for j in json.loads(out)] == ["pending", "running"]


def test_cancel(api, capsys):
    finished, running, pending = make_jobs(api)
    capsys.readouterr()

    assert run(api, capsys, "cancel", pending)[1] == f"cancelled job {pending}\n"
    assert "cancel requested" in run(api, capsys, "cancel", running)[1]
    status, _, err = run(api, capsys, "cancel", finished)
    assert_one_line_error(status, err, "already succeeded")


# --- history --------------------------------------------------------------------------------------------


def test_history_table_ends_with_totals(api, capsys):
    make_jobs(api)
    capsys.readouterr()

    status, out, _ = run(api, capsys, "history", "--since", "1d")

    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 4  # header, two started jobs, totals
    assert lines[-1].split()[:3] == ["total", "2", "jobs"]
    assert "2,468" in lines[-1] and "simulated+estimate" in lines[-1]


def test_history_csv_and_json(api, capsys):
    make_jobs(api)
    capsys.readouterr()

    _, out, _ = run(api, capsys, "history", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 and rows[0]["methods"] == "simulated+estimate" and rows[0]["zone"] == "DE"

    _, out, _ = run(api, capsys, "history", "--format", "json", "--kind", "diffusion-train")
    assert json.loads(out)["totals"]["jobs"] == 2


def test_history_since_the_future_is_empty(api, capsys):
    make_jobs(api)
    capsys.readouterr()
    _, out, _ = run(api, capsys, "history", "--since", "+1d", "--format", "json")
    assert json.loads(out)["jobs"] == []


# --- usage ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["list", "--state", "bogus"], ["submit"], ["db"], ["list", "--limit", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage: wattsched" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "history" in capsys.readouterr().out


def test_global_options_may_follow_the_command(api, capsys):
    assert main(["list", "--url", api.url]) == 0


@pytest.mark.parametrize("argv, module, expected", [
    (["daemon", "--port", "9000", "--policy", "carbon"], "scheduler.daemon.daemon",
     {"host": None, "port": 9000, "policy": "carbon", "gpus": None}),
    (["daemon", "--host", "0.0.0.0", "--gpus", "4"], "scheduler.daemon.daemon",
     {"host": "0.0.0.0", "port": None, "policy": None, "gpus": 4}),
    (["demo"], "scheduler.cli.demo", {}),
])
def test_daemon_and_demo_run_their_module_main(argv, module, expected, monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(main=lambda args: seen.append(args) or 0))
    assert main(argv) == 0
    [args] = seen
    assert {k: getattr(args, k) for k in expected} == expected


def test_db_upgrade_passes_the_database_url(monkeypatch, capsys):
    urls = []
    monkeypatch.setitem(sys.modules, "scheduler.store.engine", types.SimpleNamespace(upgrade=urls.append))
    assert main(["db", "upgrade", "--db", "sqlite:///x.db"]) == 0
    assert urls == ["sqlite:///x.db"]


def test_importing_the_cli_stays_light():
    code = ("import scheduler.cli.commands, sys; heavy = {'torch', 'ray', 'sqlalchemy', 'fastapi'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- parsing what users type ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, past, expected", [
    ("now", False, NOW),
    ("+2h", False, NOW + timedelta(hours=2)),
    ("2h", False, NOW + timedelta(hours=2)),
    ("1d12h", False, NOW + timedelta(days=1, hours=12)),
    ("-30m", False, NOW - timedelta(minutes=30)),
    ("7d", True, NOW - timedelta(days=7)),
    ("+1w", True, NOW + timedelta(weeks=1)),
    ("1.5h", True, NOW - timedelta(hours=1.5)),
    ("2026-06-02T18:00:00Z", False, datetime(2026, 6, 2, 18, tzinfo=timezone.utc)),
    ("2026-06-02T20:00+02:00", False, datetime(2026, 6, 2, 18, tzinfo=timezone.utc)),
])
def test_parse_when(text, past, expected):
    assert parse_when(text, past=past, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "soon", "2h30", "+", "12x", "2026-13-01"])
def test_parse_when_refuses(text):
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_when(text, now=NOW)


@pytest.mark.parametrize("spec, sets, expected", [
    (None, [], {}),
    ('{"a": 1}', ["b=x"], {"a": 1, "b": "x"}),
    (None, ["lr=1e-4", "ema=true", "sizes=[1, 2]", "name=\"7\""], {"lr": 1e-4, "ema": True, "sizes": [1, 2],
                                                                    "name": "7"}),
    ('{"model": {"ch": 32}}', ["model.ch=64", "data.name=digits"], {"model": {"ch": 64},
                                                                     "data": {"name": "digits"}}),
])
def test_parse_spec(spec, sets, expected):
    assert parse_spec(spec, sets) == expected


@pytest.mark.parametrize("spec, sets, message", [
    ("[1]", [], "must be a JSON object"),
    (None, ["novalue"], "expected key=value"),
    ('{"a": 1}', ["a.b=2"], "a is not an object"),
    ("@/nonexistent/spec.json", [], "cannot read"),
])
def test_parse_spec_refuses(spec, sets, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec, sets)


# --- units ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("7281e44acbbaef475627f5cee23cd409555ae46599ae480b10a8b0b5", "7281e44acbba"), ("node-a", "node-a"),
    ("a-very-long-node-name-0001", "a-very-long-node-name-0001"), (None, "-"),
])
def test_short_id(value, expected):
    assert tables.short_id(value) == expected


@pytest.mark.parametrize("seconds, expected", [
    (None, "-"), (0.3, "0.3s"), (4.24, "4.2s"), (42, "42s"), (59.6, "1m00s"), (725, "12m05s"),
    (3 * 3600 + 240, "3h04m"), (2 * 86400 + 3 * 3600, "2d03h"),
])
def test_format_duration(seconds, expected):
    assert tables.format_duration(seconds) == expected


@pytest.mark.parametrize("energy_j, kwh", [
    (1234.0, "0.000343 kWh"), (0.0, "0 kWh"), (3.6e6 * 12.34, "12.3 kWh"), (3.6e9, "1,000 kWh"),
])
def test_energy_units(energy_j, kwh):
    assert tables.format_kwh(energy_j / 3.6e6) == kwh


@pytest.mark.parametrize("energy_j, expected", [
    (1234.0, "1,234 J"), (1234567.8, "1,234,568 J"), (12.34, "12.3 J"), (0.5, "0.500 J"), (None, "-"),
])
def test_format_joules(energy_j, expected):
    assert tables.format_joules(energy_j) == expected


# --- against the real API: Slurm-style submit options, hold/release, logs ---------------------------------


def test_submit_with_slurm_style_options(real_api, capsys):  # noqa: F811
    _, url, token = real_api
    conn = ["--url", url, "--token", token]
    assert main([*conn, "submit", "diffusion-train", "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out)["id"]
    begin = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0).isoformat()
    # An absolute time: a relative one (+2h) is another request when run again, and the same key then conflicts.
    argv = [*conn, "submit", "diffusion-train", "--set", "steps=5", "--not-before", begin, "--time-limit", "1:30:00",
            "--priority", "3", "--hold", "--depends-on", f"afterok:{first}", "--idempotency-key", "k1",
            "--format", "json"]
    assert main(argv) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["hold"] and job["priority"] == 3 and job["time_limit_s"] == 5400 and job["depends_on"] == [first]
    assert job["reason"] == "held by the user"
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["id"] == job["id"]  # same key, same job

    assert main([*conn, "status", job["id"]]) == 0
    out = capsys.readouterr().out
    assert "held by the user" in out and "1h30m" in out and first in out

    assert main([*conn, "release", job["id"]]) == 0
    assert capsys.readouterr().out.startswith(f"released job {job['id']}")
    assert main([*conn, "hold", job["id"], first]) == 0
    assert capsys.readouterr().out.count("held job") == 2
    assert main([*conn, "list", "--format", "json", "--user", "alice"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_logs_prints_the_jobs_stderr(real_api, capsys):  # noqa: F811
    from pathlib import Path

    _, url, token = real_api
    conn = ["--url", url, "--token", token]
    main([*conn, "submit", "diffusion-train", "--format", "json"])
    job = json.loads(capsys.readouterr().out)
    Path(job["workdir"]).mkdir(parents=True)
    (Path(job["workdir"]) / "stderr.log").write_text("loading digits\nstep 1\n")
    (Path(job["workdir"]) / "events.jsonl").write_text('{"event": "progress"}\n')
    assert main([*conn, "logs", job["id"]]) == 0
    assert capsys.readouterr().out == "loading digits\nstep 1\n"
    main([*conn, "cancel", job["id"]])
    capsys.readouterr()
    assert main([*conn, "logs", "-f", "--events", job["id"]]) == 0  # over: follow returns at once
    assert capsys.readouterr().out == '{"event": "progress"}\n'


@pytest.mark.parametrize("text, seconds", [("90m", 5400), ("2h", 7200), ("1d12h", 129600), ("3600", 3600),
                                           ("1:30:00", 5400), ("1-00:00", 86400), ("10:00", 36000)])
def test_parse_duration(text, seconds):
    assert parse_duration(text, "--time-limit") == seconds


def test_parse_duration_refuses():
    with pytest.raises(ValueError, match="--time-limit"):
        parse_duration("soon", "--time-limit")
