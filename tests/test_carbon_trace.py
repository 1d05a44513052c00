"""The CSV carbon-trace loader: every shape of simulation.md, and errors that name file, line and field."""

import numpy as np
import pytest

from scheduler.carbon.trace_file import load_carbon_trace
from scheduler.errors import CarbonTraceError

JAN1 = 1577836800.0  # 2020-01-01T00:00:00Z


@pytest.mark.parametrize("name,text,basis,expected", [
    ("own, ISO", "timestamp,carbon_intensity\n2020-01-01T00:00:00Z,100\n2020-01-01T01:00:00Z,120\n", "lca",
     ([JAN1, JAN1 + 3600], [100, 120])),
    ("own, Unix seconds", f"timestamp,carbon_intensity\n{JAN1:.0f},5\n", "lca", ([JAN1], [5])),
    ("lets wait awhile, naive = UTC", "Time,Carbon Intensity\n2020-01-01 00:00:00,218.5\n2020-01-01 00:15:00,217\n",
     "lca", ([JAN1, JAN1 + 900], [218.5, 217])),
    ("electricity maps export with BOM, LCA",
     "\ufeffDatetime (UTC),Country,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n"
     "2020-01-01 00:00:00,Spain,133.6,175.5\n", "lca", ([JAN1], [175.5])),
    ("electricity maps export, direct",
     "Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n"
     "2020-01-01 00:00:00,133.6,175.5\n", "direct", ([JAN1], [133.6])),
    ("api dump: zone_datetime wins over the scrape timestamp",
     "zone_datetime,timestamp,carbon_intensity_avg,fossilFuelPercentage\n"
     "2020-01-01T00:00:00.000Z,1633705204.0,46.0,4.6\n2020-01-01T01:00:00.000Z,1633705100.0,45.0,4.5\n", "lca",
     ([JAN1, JAN1 + 3600], [46, 45])),
    ("api dump: datetime", "datetime,carbon_intensity_avg\n2020-01-01T00:00:00+01:00,7\n", "lca",
     ([JAN1 - 3600], [7])),
])
def test_shapes(tmp_path, name, text, basis, expected):
    path = tmp_path / "ci.csv"
    path.write_text(text, encoding="utf-8")
    unix_s, values = load_carbon_trace(path, basis=basis)
    assert unix_s.dtype == np.float64 and values.dtype == np.float64, name
    np.testing.assert_allclose(unix_s, expected[0])
    np.testing.assert_allclose(values, expected[1])


@pytest.mark.parametrize("text,line,field,words", [
    ("timestamp,carbon_intensity\n2020-01-01T01:00:00Z,1\n2020-01-01T00:00:00Z,1\n", 3, "timestamp", "not sorted"),
    ("timestamp,carbon_intensity\n2020-01-01T01:00:00Z,1\n2020-01-01T01:00:00Z,2\n", 3, "timestamp", "duplicate"),
    ("timestamp,carbon_intensity\n2020-01-01T01:00:00Z,-3\n", 2, "carbon_intensity", ">= 0"),
    ("timestamp,carbon_intensity\n2020-01-01T01:00:00Z,high\n", 2, "carbon_intensity", "not a number"),
    ("timestamp,carbon_intensity\nyesterday,3\n", 2, "timestamp", "not a timestamp"),
    ("when,value\n2020-01-01T01:00:00Z,3\n", 1, None, "no a time column"),
    ("", 1, None, "empty"),
])
def test_errors_name_file_line_and_field(tmp_path, text, line, field, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CarbonTraceError) as info:
        load_carbon_trace(path)
    err = info.value
    assert (err.line, err.field) == (line, field)
    assert str(path) in str(err) and f"line {line}" in str(err) and words in str(err)
