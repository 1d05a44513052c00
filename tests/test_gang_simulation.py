"""The simulator with nodes: CLUSTER.toml's nodes and gpus_per_node, JOBS.csv's gpus_per_node, gangs placed K on
each of their nodes, segments naming their nodes, and the checker verifying node capacity."""

import copy
import json

import pytest

from scheduler.errors import InputError
from scheduler.simulation.checker import check_result
from scheduler.simulation.checker import main as checker_main
from scheduler.simulation.driver import simulate, simulate_files
from scheduler.simulation.inputs import load_cluster, load_jobs

H = 3600.0
JOBS = """job_id,submit_s,duration_s,gpus,power_w,gpus_per_node
one,0,3600,3,100,
pair,10,3600,4,100,2
small,20,7200,1,100,
wide,30,3600,8,100,4
"""
# With nodes (2 x 4 GPUs), worked out by hand, fifo:
# one    0 s: 3 GPUs on A/0 (first fit)                              -> A/0 has 1 free, A/1 4
# pair  10 s: 2 on each of 2 nodes, but A/0 has 1: waits (a pool of 8 with 5 free would start it)
# small 20 s: 1 GPU on A/0, the first node with one free             -> A/0 0, A/1 4
# 3600 s: one ends -> A/0 3, A/1 4: pair starts on A/0 and A/1       -> A/0 1, A/1 2
# wide  30 s: 4 on each of 2 nodes: waits for both nodes whole: pair ends at 7200 s, small at 7220 s
NODES = {
    "one": [(0.0, 3600.0, ["A/0"])],
    "pair": [(3600.0, 7200.0, ["A/0", "A/1"])],
    "small": [(20.0, 7220.0, ["A/0"])],
    "wide": [(7220.0, 10820.0, ["A/0", "A/1"])],
}
POOL_STARTS = {"one": 0.0, "pair": 10.0, "small": 20.0, "wide": 7220.0}  # `gpus = 8`: one pool, no nodes


def write(tmp_path, zone: str, jobs: str = JOBS):
    (tmp_path / "a.csv").write_text("timestamp,carbon_intensity\n0,100\n7200,50\n")
    (tmp_path / "cluster.toml").write_text(f'start = "2020-01-01T00:00:00Z"\n[[zones]]\nname = "A"\n'
                                           f'carbon = "a.csv"\n{zone}\n')
    (tmp_path / "jobs.csv").write_text(jobs)
    return tmp_path / "cluster.toml", tmp_path / "jobs.csv"


def segments(result):
    return {e["job_id"]: [(s["start_s"], s["end_s"], s.get("nodes")) for s in e["segments"]] for e in result["jobs"]}


def test_gangs_take_k_gpus_on_each_of_their_nodes_in_a_zone_of_nodes(tmp_path):
    cluster_path, jobs_path = write(tmp_path, "nodes = 2\ngpus_per_node = 4")
    cluster = load_cluster(cluster_path)
    assert cluster.zones[0].gpus == 8 and cluster.zones[0].node_ids == ("A/0", "A/1")
    jobs = load_jobs(jobs_path, cluster, {})
    assert [j.gpus_per_node for j in jobs] == [None, 2, None, 4]
    result = simulate(cluster, jobs, "fifo")
    assert segments(result) == {job_id: [(a, b, nodes)] for job_id, [(a, b, nodes)] in NODES.items()}
    assert check_result(result, cluster, jobs, {}) == []


def test_plain_gpus_is_a_pool_without_node_boundaries_as_before(tmp_path):
    cluster_path, jobs_path = write(tmp_path, "gpus = 8")
    cluster = load_cluster(cluster_path)
    result = simulate(cluster, load_jobs(jobs_path, cluster, {}), "fifo")
    assert {job_id: s[0][0] for job_id, s in segments(result).items()} == POOL_STARTS
    assert all(nodes is None for s in segments(result).values() for _, _, nodes in s)


def test_carbon_aware_keeps_gangs_on_nodes_and_the_checker_agrees(tmp_path):
    jobs = JOBS.replace("job_id,submit_s,duration_s,gpus,power_w,gpus_per_node",
                        "job_id,submit_s,duration_s,gpus,power_w,gpus_per_node,deadline_s,interruptible")
    lines = jobs.strip().splitlines()
    jobs = "\n".join([lines[0]] + [line + f",{30000 + 100 * i},{i % 2}" for i, line in enumerate(lines[1:])]) + "\n"
    cluster_path, jobs_path = write(tmp_path, "nodes = 2\ngpus_per_node = 4", jobs)
    out = tmp_path / "result.json"
    result = simulate_files(cluster_path, jobs_path, "carbon-aware", out_path=out)
    assert result["summary"]["completed"] == 4 and result["summary"]["deadline_misses"] == 0
    assert all(len(s["nodes"]) == (2 if e["job_id"] in ("pair", "wide") else 1)
               for e in result["jobs"] for s in e["segments"])
    assert checker_main(["--cluster", str(cluster_path), "--jobs", str(jobs_path), str(out)]) == 0


def test_the_checker_catches_an_overfilled_node_and_a_gang_out_of_shape(tmp_path):
    cluster_path, jobs_path = write(tmp_path, "nodes = 2\ngpus_per_node = 4")
    cluster = load_cluster(cluster_path)
    jobs = load_jobs(jobs_path, cluster, {})
    result = simulate(cluster, jobs, "fifo")
    by_id = {e["job_id"]: e for e in result["jobs"]}

    full = copy.deepcopy(result)
    entries = {e["job_id"]: e for e in full["jobs"]}
    entries["one"]["segments"][0]["nodes"] = entries["small"]["segments"][0]["nodes"] = ["A/1"]
    assert by_id["one"]["segments"][0]["nodes"] == ["A/0"]
    assert check_result(full, cluster, jobs, {}) == []  # 3 + 1 on A/1 until 3600 s: full, not over

    over = copy.deepcopy(result)
    entries = {e["job_id"]: e for e in over["jobs"]}
    entries["small"]["segments"][0]["nodes"] = ["A/1"]  # 1 GPU on A/1 until 7220 s, beside pair's 2 ...
    entries["wide"]["segments"][0]["start_s"] = 7100.0  # ... and wide's 4 from 7100 s (zone: 8 + 1 + 2 > 8 too)
    entries["wide"]["segments"][0]["end_s"] = 10700.0
    entries["wide"]["completed_s"] = 10700.0
    problems = check_result(over, cluster, jobs, {})
    assert "node A/1: 7 GPUs in use at once, more than its 4" in problems
    assert "node A/0: 6 GPUs in use at once, more than its 4" in problems

    shapes = copy.deepcopy(result)
    entries = {e["job_id"]: e for e in shapes["jobs"]}
    entries["wide"]["segments"][0]["nodes"] = ["A/0"]  # 8 GPUs on one node: not 4 on each of 2
    del entries["one"]["segments"][0]["nodes"]
    entries["pair"]["segments"][0]["nodes"] = ["A/0", "B/1"]
    problems = check_result(shapes, cluster, jobs, {})
    assert "job wide: a segment puts its 8 GPUs on 1 node, not in its gang's shape" in problems
    assert "job one: a segment in zone A, which has nodes, names none" in problems
    assert any(p.startswith("job pair: a segment runs on nodes") for p in problems)


@pytest.mark.parametrize("zone,jobs,field,message", [
    ("nodes = 2", JOBS, "zones[0].gpus_per_node", "missing: nodes is given"),
    ("gpus_per_node = 4", JOBS, "zones[0].nodes", "missing: gpus_per_node is given"),
    ("gpus = 6\nnodes = 2\ngpus_per_node = 4", JOBS, "zones[0].gpus", "2 nodes of 4 GPUs make 8"),
    ("nodes = 0\ngpus_per_node = 4", JOBS, "zones[0].nodes", "must be a whole number >= 1"),
    ("name2 = 1\ngpus = 4", JOBS, "zones[0].name2", "unknown key"),
    ("", JOBS, "zones[0].gpus", "missing (give gpus, or nodes and gpus_per_node)"),
    ("nodes = 2\ngpus_per_node = 4", "job_id,submit_s,duration_s,gpus,power_w,gpus_per_node\nx,0,1,6,1,4\n",
     "gpus_per_node", "4 does not divide the job's 6 GPUs"),
    ("nodes = 2\ngpus_per_node = 4", "job_id,submit_s,duration_s,gpus,power_w,gpus_per_node\nx,0,1,8,1,8\n",
     "gpus_per_node", "needs 8 GPUs on one node: no allowed zone has nodes for that"),
    ("nodes = 2\ngpus_per_node = 4", "job_id,submit_s,duration_s,gpus,power_w,gpus_per_node\nx,0,1,4,1,1\n",
     "gpus_per_node", "needs 4 GPUs as 1 on each of 4 nodes: no allowed zone has nodes for that"),
    ("nodes = 2\ngpus_per_node = 4", "job_id,submit_s,duration_s,gpus,power_w,gpus_per_node\nx,0,1,7,1,\n",
     "gpus", "needs 7 GPUs on one node or the same number on each of several: no allowed zone has nodes for that"),
])
def test_node_inputs_are_checked_naming_the_field(tmp_path, zone, jobs, field, message):
    cluster_path, jobs_path = write(tmp_path, zone, jobs)
    with pytest.raises(InputError) as caught:
        load_jobs(jobs_path, load_cluster(cluster_path), {})
    assert f"'{field}'" in str(caught.value) and message in str(caught.value), str(caught.value)


def test_a_result_in_a_zone_without_nodes_has_no_nodes_field_and_one_naming_nodes_is_caught(tmp_path):
    cluster_path, jobs_path = write(tmp_path, "gpus = 8")
    cluster = load_cluster(cluster_path)
    jobs = load_jobs(jobs_path, cluster, {})
    result = simulate(cluster, jobs, "fifo")
    assert "nodes" not in json.dumps(result)
    result["jobs"][0]["segments"][0]["nodes"] = ["A/0"]
    assert check_result(result, cluster, jobs, {}) == ["job one: a segment names nodes in zone A, which has none"]
