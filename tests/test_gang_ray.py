"""Gangs over several nodes on a real Ray cluster (ray.cluster_utils): two nodes of one logical GPU each in zone DE
and one in FR, driven through the controller the way the daemon's executor drives it.

A 2-rank ``command`` job runs a script that joins ``torch.distributed`` (gloo) from torchrun's environment and
all-reduces a tensor: its ranks run on the two DE nodes, one launcher per node, and the controller reports one
run with the energy of both nodes. Killing one rank stops the other and fails the run naming the rank. A start
that cannot have every worker of the gang refuses the whole start and reserves none.
Tests wait on ``fetch_events`` (a long poll) and on files the ranks write, never on wall time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from scheduler.cluster.controller import get_or_create_controller, shutdown_controller  # noqa: E402
from scheduler.errors import ControllerError  # noqa: E402
from test_controller import TIMEOUT_S, Events  # noqa: E402
from workers.kinds import builtin_kinds  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ZONE_LABEL = "wattsched.io/zone"
# Every rank writes where it ran, then all-reduces its rank + 1 over gloo: the sum is 3 on both ranks.
ALL_REDUCE = textwrap.dedent("""
    import json, os, socket, torch, torch.distributed as dist
    dist.init_process_group("gloo")
    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)
    out = os.path.join(os.environ["WATTSCHED_JOB_DIR"], f"rank{os.environ['RANK']}.json")
    with open(out, "w") as f:
        json.dump({"rank": int(os.environ["RANK"]), "world": dist.get_world_size(), "pid": os.getpid(),
                   "host": socket.gethostname(), "node_rank": int(os.environ["NODE_RANK"]), "sum": total.item()}, f)
    dist.destroy_process_group()
""")
# Every rank writes its pid, then waits to be stopped (no torch: the test is about stopping).
SLEEPER = textwrap.dedent("""
    import json, os, time
    out = os.path.join(os.environ["WATTSCHED_JOB_DIR"], f"rank{os.environ['RANK']}.pid")
    with open(out + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "rank": int(os.environ["RANK"])}, f)
    os.replace(out + ".tmp", out)
    while True:
        time.sleep(0.2)
""")


@pytest.fixture(scope="module")
def gang_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {
        "DE1": cluster.add_node(num_cpus=1, num_gpus=1, labels={ZONE_LABEL: "DE"}),
        "DE2": cluster.add_node(num_cpus=1, num_gpus=1, labels={ZONE_LABEL: "DE"}),
        "FR": cluster.add_node(num_cpus=1, num_gpus=1, labels={ZONE_LABEL: "FR"}),
    }
    cluster.wait_for_nodes()
    namespace = f"wattsched-test-{uuid.uuid4().hex[:8]}"
    ray.init(address=cluster.address, namespace=namespace, logging_level="WARNING")
    controller = get_or_create_controller({"sample_interval_s": 0.25}, namespace=namespace)
    inventory = ray.get(controller.sync_workers.remote())
    by_node = {w["node_id"]: w["worker_id"] for w in inventory}
    workers = {name: by_node[node.node_id] for name, node in nodes.items()}
    yield controller, workers, {name: node.node_id for name, node in nodes.items()}
    shutdown_controller(namespace=namespace)
    ray.shutdown()
    cluster.shutdown()


def command(script: Path) -> dict:
    return builtin_kinds().get("command").validate({"argv": [sys.executable, str(script)]})


def start(controller, job_id: str, spec: dict, placement: list[list[str]], workdir: Path, **launch) -> None:
    worker_ids = [w for ids in placement for w in ids]
    ray.get(controller.start_job.remote(job_id, f"{job_id}-r1", "command", spec, worker_ids, str(workdir),
                                        launch={"launch": "per-gpu", "grace_s": 60, **launch},
                                        placement=placement))


def wait_for_file(path: Path, timeout_s: float = TIMEOUT_S) -> dict:
    """The JSON a rank wrote once it is there (polled; only a failing test waits the whole limit)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.1)
    return json.loads(path.read_text())


def idle(controller, worker_ids) -> bool:
    return all(w["busy_job"] is None for w in ray.get(controller.inventory.remote()) if w["worker_id"] in worker_ids)


def test_a_two_node_gang_all_reduces_over_gloo_with_both_nodes_energy(gang_cluster, tmp_path):
    controller, workers, node_ids = gang_cluster
    script = tmp_path / "all_reduce.py"
    script.write_text(ALL_REDUCE)
    events = Events(controller)
    workdir = tmp_path / "job"
    start(controller, "gang", command(script), [[workers["DE1"]], [workers["DE2"]]], workdir)

    started = events.wait(lambda e: e.type == "started" and e.job_id == "gang")
    done = events.finished("gang")
    assert done.exit_status == "succeeded", done.error
    # one run: one started and one finished event for the gang, not one per node
    assert [e.type for e in events.of("gang")].count("started") == 1
    assert [e.type for e in events.of("gang")].count("finished") == 1

    ranks = [json.loads((workdir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["sum"] for r in ranks] == [3.0, 3.0] and [r["world"] for r in ranks] == [2, 2]
    assert [r["node_rank"] for r in ranks] == [0, 1]
    # rank r is the process rank r's node started: the processes ran on the two DE nodes, rank 0 on the first
    assert [r["pid"] for r in ranks] == list(started.pids)
    nodes = done.result["nodes"]
    assert [n["node_id"] for n in nodes] == [node_ids["DE1"], node_ids["DE2"]]
    assert [n["ranks"] for n in nodes] == [[0], [1]]
    for node in nodes:  # each node metered its own GPU and CPU
        assert node["samples"] > 0 and node["gpu_energy_j"] > 0, node
    assert done.energy.gpu_energy_j == pytest.approx(sum(n["gpu_energy_j"] for n in nodes))
    assert idle(controller, [workers["DE1"], workers["DE2"]])


def test_killing_one_rank_stops_the_other_and_names_the_rank(gang_cluster, tmp_path):
    controller, workers, _ = gang_cluster
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    events = Events(controller)
    workdir = tmp_path / "job"
    start(controller, "doomed-gang", command(script), [[workers["DE1"]], [workers["DE2"]]], workdir)
    rank0 = wait_for_file(workdir / "rank0.pid")
    rank1 = wait_for_file(workdir / "rank1.pid")
    os.kill(rank1["pid"], signal.SIGKILL)

    done = events.finished("doomed-gang")
    assert done.exit_status == "failed"
    assert "rank 1" in done.error and "SIGKILL" in done.error and "the other nodes were stopped" in done.error
    with pytest.raises(ProcessLookupError):  # rank 0 was stopped (and reaped) by its node's launcher
        os.kill(rank0["pid"], 0)
    statuses = {n["node_rank"]: n["exit_status"] for n in done.result["nodes"]}
    assert statuses == {0: "cancelled", 1: "failed"}
    assert idle(controller, [workers["DE1"], workers["DE2"]])


def test_a_gang_is_reserved_whole_or_not_at_all(gang_cluster, tmp_path):
    controller, workers, _ = gang_cluster
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    spec = command(script)
    every = list(workers.values())

    # four GPUs asked, three exist: refused, and none of the three is held
    with pytest.raises(ControllerError, match="unknown"):
        start(controller, "four", spec, [[w] for w in every] + [["nowhere-gpu0"]], tmp_path / "four")
    assert idle(controller, every)
    # one zone only
    with pytest.raises(ControllerError, match="zones"):
        start(controller, "split", spec, [[workers["DE1"]], [workers["FR"]]], tmp_path / "split")
    assert idle(controller, every)

    # one worker of the gang busy: the whole start is refused and the free one stays free
    events = Events(controller)
    start(controller, "holder", spec, [[workers["DE2"]]], tmp_path / "holder")
    wait_for_file(tmp_path / "holder" / "rank0.pid")
    with pytest.raises(ControllerError, match="busy"):
        start(controller, "blocked", spec, [[workers["DE1"]], [workers["DE2"]]], tmp_path / "blocked")
    assert idle(controller, [workers["DE1"]]) and not (tmp_path / "blocked").exists()
    assert ray.get(controller.cancel_job.remote("holder"))
    assert events.finished("holder").exit_status == "cancelled"
