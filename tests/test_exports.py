"""Exports of the energy history: CSV, JSON, CodeCarbon's emissions.csv, per-group CSV, and the PNG chart,
from a real daemon API (SQLite and PostgreSQL) through the CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest

from scheduler.store import exports
from scheduler.cli.commands import main
from test_client import LoopbackServer
from test_history import seeded  # noqa: F401  (fixture)


@pytest.fixture
def served(seeded):  # noqa: F811
    daemon, admin, ids = seeded
    with LoopbackServer(admin.app) as server:
        token = admin.headers["Authorization"].split()[1]
        yield ["--url", server.url, "--token", token], ids


def cli(argv, capsys):
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def test_codecarbon_emissions_csv_has_its_columns_and_units(served, capsys):
    connection, ids = served
    out = cli([*connection, "history", "--format", "codecarbon"], capsys)
    reader = csv.DictReader(io.StringIO(out))
    assert tuple(reader.fieldnames) == (*exports.CODECARBON_COLUMNS, "wattsched_methods")
    rows = {r["run_id"]: r for r in reader}
    row = rows[ids["alice-diffusion-train-DE"]]
    assert row["project_name"] == "wattsched" and row["experiment_id"] == "diffusion-train"
    assert float(row["duration"]) == 100.0
    assert float(row["emissions"]) == pytest.approx(1.0 / 1000)  # kg
    assert float(row["energy_consumed"]) == pytest.approx(3960 / 3.6e6)  # kWh
    assert float(row["gpu_energy"]) == pytest.approx(3600 / 3.6e6)
    assert float(row["gpu_power"]) == pytest.approx(36.0)  # W
    assert float(row["emissions_rate"]) == pytest.approx(1e-5)  # kg/s
    assert row["region"] == "DE" and row["country_iso_code"] == ""  # a zone is not guessed into a country
    assert row["timestamp"] == "2026-06-01T10:01:40"
    assert row["wattsched_methods"] == "estimate+simulated"


def test_history_csv_and_json(served, capsys):
    connection, ids = served
    rows = list(csv.DictReader(io.StringIO(cli([*connection, "history", "--format", "csv"], capsys))))
    assert tuple(rows[0]) == exports.HISTORY_CSV_COLUMNS and len(rows) == 3
    sample = next(r for r in rows if r["job_id"] == ids["alice-diffusion-sample-FR"])
    assert sample["saving_g"] == "" and sample["user"] == "alice"
    data = json.loads(cli([*connection, "history", "--format", "json", "--user", "bob"], capsys))
    assert [r["user"] for r in data["jobs"]] == ["bob"]


def test_grouped_history_as_table_and_csv(served, capsys):
    connection, _ = served
    table = cli([*connection, "history", "--by", "kind"], capsys)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["kind", "jobs"]
    assert any(line.startswith("diffusion-sample") and "n/a" in line for line in lines)
    assert any(line.startswith("diffusion-train") and "0.600 (2 of 2 jobs)" in line for line in lines)
    groups = list(csv.DictReader(io.StringIO(cli([*connection, "history", "--by", "day", "--format", "csv"],
                                                 capsys))))
    assert [g["day"] for g in groups] == ["2026-06-01", "2026-06-02"]


def test_plot_writes_a_png(served, capsys, tmp_path):
    connection, _ = served
    target = tmp_path / "energy.png"
    assert main([*connection, "history", "--plot", str(target), "--plot-by", "user"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000


def test_codecarbon_rows_skip_jobs_without_energy():
    assert exports.codecarbon_rows([{"job_id": "a", "energy_j": None}]) == []
    assert exports.aggregate([], "user") == []
    with pytest.raises(ValueError, match="group by"):
        exports.group_key({}, "colour")
