"""Input files: bad input refused naming file, line and field; infeasible jobs kept and reported."""

import pytest

from scheduler.errors import InputError
from policies.snapshot import CapStep
from scheduler.simulation.inputs import load_cluster, load_jobs, load_profiles, sweep_profile

HEADER = "job_id,submit_s,duration_s,gpus,power_w,deadline_s,interruptible,zones,profile,kind\n"


@pytest.fixture()
def cluster(tmp_path):
    (tmp_path / "de.csv").write_text("timestamp,carbon_intensity\n2020-01-01T00:00:00Z,300\n")
    (tmp_path / "c.toml").write_text('start = "2020-01-01T00:00:00Z"\n[[zones]]\nname = "DE"\ncarbon = "de.csv"\n'
                                     'gpus = 4\n[power]\nbudget_w = 1000\n')
    return load_cluster(tmp_path / "c.toml")


def test_a_good_file_loads(tmp_path, cluster):
    (tmp_path / "p.csv").write_text("profile,cap_fraction,speed,power_fraction\np,1,1,1\np,0.6,0.9,0.7\n")
    (tmp_path / "j.csv").write_text(HEADER + "a,0,60,2,200,,1,DE,p,train\nb,5,60,1,100,10,0,,,\n")
    profiles = load_profiles(tmp_path / "p.csv")
    jobs = load_jobs(tmp_path / "j.csv", cluster, profiles)
    assert [j.job_id for j in jobs] == ["a", "b"] and jobs[0].interruptible and jobs[0].zones == ("DE",)
    assert cluster.zones[0].times_s[0] == 0.0 and cluster.budget_w == 1000.0
    assert jobs[0].feasible and not jobs[1].feasible  # b needs 60 s but has 5: reported, not refused
    assert [s.cap_fraction for s in profiles["p"].steps] == [1.0, 0.6]


@pytest.mark.parametrize("rows,line,field,words", [
    ("a,0,60,1,100,,,,,,\n", 2, None, "expected 10 fields"),
    ("a,0,60,5,100,,,,,\n", 2, "gpus", "more than any allowed zone"),
    ("a,100,60,1,100,50,,,,\n", 2, "deadline_s", "before submission"),
    ("a,0,60,1,100,,,,fast,\n", 2, "profile", "unknown profile 'fast'"),
    ("a,0,60,1,100,,,FR,,\n", 2, "zones", "unknown zone 'FR'"),
    ("a,0,60,1,100,,2,,,\n", 2, "interruptible", "0 or 1"),
    ("a,0,-5,1,100,,,,,\n", 2, "duration_s", "must be > 0"),
    ("a,0,60,1,100,,,,,\na,0,60,1,100,,,,,\n", 3, "job_id", "duplicate"),
    ("a,0,60,4,300,,,,,\n", 2, "power_w", "budget"),
])
def test_bad_jobs_are_refused_with_file_line_and_field(tmp_path, cluster, rows, line, field, words):
    (tmp_path / "j.csv").write_text(HEADER + rows)
    with pytest.raises(InputError) as info:
        load_jobs(tmp_path / "j.csv", cluster, {})
    assert (info.value.line, info.value.field) == (line, field)
    assert "j.csv" in str(info.value) and words in str(info.value)


def test_unknown_and_missing_columns(tmp_path, cluster):
    (tmp_path / "j.csv").write_text("job_id,submit_s,duration_s,gpus,power_w,colour\n")
    with pytest.raises(InputError, match="line 1, field 'colour': unknown column"):
        load_jobs(tmp_path / "j.csv", cluster, {})
    (tmp_path / "j.csv").write_text("job_id,submit_s,duration_s,gpus\n")
    with pytest.raises(InputError, match="field 'power_w': required column is missing"):
        load_jobs(tmp_path / "j.csv", cluster, {})


@pytest.mark.parametrize("text,field", [
    ('start = "2020-01-01T00:00:00Z"\n', "zones"),
    ('start = "soon"\n[[zones]]\nname="DE"\ncarbon="de.csv"\ngpus=1\n', "start"),
    ('start = "2020-01-01T00:00:00Z"\n[[zones]]\nname="DE"\ncarbon="de.csv"\ngpus=0\n', "zones[0].gpus"),
    ('start = "2020-01-01T00:00:00Z"\n[[zones]]\nname="DE"\ncarbon="de.csv"\n', "zones[0].gpus"),
    ('start = "2020-01-01T00:00:00Z"\n[[zones]]\nname="DE"\ncarbon="de.csv"\ngpus=1\n[power]\nbudget_w=-1\n',
     "power.budget_w"),
])
def test_bad_clusters_name_the_field(tmp_path, text, field):
    (tmp_path / "de.csv").write_text("timestamp,carbon_intensity\n2020-01-01T00:00:00Z,300\n")
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(InputError) as info:
        load_cluster(tmp_path / "c.toml")
    assert info.value.field == field and "c.toml" in str(info.value)


def test_profiles_need_the_full_power_row(tmp_path):
    (tmp_path / "p.csv").write_text("profile,cap_fraction,speed,power_fraction\np,0.5,0.8,0.6\n")
    with pytest.raises(InputError, match="no row 1,1,1"):
        load_profiles(tmp_path / "p.csv")


def test_a_power_limit_sweep_becomes_a_profile_of_median_speed_and_power_relative_to_the_highest_limit(tmp_path):
    sweep = tmp_path / "sweep.csv"
    sweep.write_text("dataset,network,batch_size,optimizer,power_limit,time_per_epoch,average_power\n"
                     "a,n,32,adam,300,100,300\n"
                     "a,n,32,adam,150,125,180\n"
                     "b,n,32,adam,300,10,200\n"
                     "b,n,32,adam,150,20,100\n")
    profile = sweep_profile(sweep, "gpu")
    assert profile.name == "gpu"
    assert profile.steps[0] == CapStep(1.0, 1.0, 1.0)
    (half,) = profile.steps[1:]
    assert half.cap_fraction == 0.5
    assert half.speed == pytest.approx((0.8 + 0.5) / 2)  # the median of two is their mean
    assert half.power_fraction == pytest.approx((0.6 + 0.5) / 2)
