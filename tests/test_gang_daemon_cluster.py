"""Gangs through a real daemon attached to a multi-node Ray cluster (ray.cluster_utils): two nodes of one logical
GPU each labelled zone DE and one labelled FR, a daemon on SQLite scheduling with fifo.

Everything goes the way a user's job goes: submitted over the API, placed by the policy, started by the
daemon's executor through the controller, recorded in the database. A 2-rank ``command`` job joins
``torch.distributed`` (gloo) from torchrun's environment, all-reduces a tensor on the two DE nodes and is metered
on both; killing one rank stops the other and fails the job naming rank, node and signal; an interruptible
2-rank job is suspended, checkpoints on its signal and resumes from the checkpoint; a 4-GPU job never starts
on the 3 GPUs there are, nor a 2-GPU one on a free GPU in each zone; and, last (it replaces a node), a gang that loses a node stops whole, is queued again
and resumes from its checkpoint on the survivor and a node that joined.

Which node a rank ran on: each Ray node has a raylet of its own, and every process a node's worker starts
inherits that raylet's pid (``RAY_RAYLET_PID``), which the scripts record. Tests wait on the daemon's long
poll and on files the ranks write, never on wall time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from daemon_fixtures import JOB_TIMEOUT_S, poll, running_daemon, wait_until_running
from scheduler.cluster.gang import GangNode, GangRun
from workers.events import ExitStatus, Finished

ray = pytest.importorskip("ray")

ZONE_LABEL = "wattsched.io/zone"

#: Where a rank ran and what it saw: every script below starts with it.
WHERE = """
import json, os
job_dir, rank = os.environ["WATTSCHED_JOB_DIR"], int(os.environ["RANK"])
def note(name, **fields):
    seen = {"rank": rank, "pid": os.getpid(), "raylet_pid": int(os.environ["RAY_RAYLET_PID"]),
            "node_rank": int(os.environ["NODE_RANK"]), "world": int(os.environ["WORLD_SIZE"]),
            "resuming": os.environ["WATTSCHED_RESUMING"], "run": os.environ["WATTSCHED_RUN"], **fields}
    path = os.path.join(job_dir, f"{name}-{rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(seen, f)
    os.replace(path + ".tmp", path)
"""

# Joins the gang over gloo and all-reduces rank + 1: the sum is 3 on both ranks.
ALL_REDUCE = WHERE + """
import torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
note("rank", sum=total.item(), dist_rank=dist.get_rank(), dist_world=dist.get_world_size())
dist.destroy_process_group()
"""

# Notes its pid, then waits to be stopped (the test kills one rank). It logs to stderr, as training scripts do.
SLEEPER = WHERE + """
import sys, time
note("pid")
print(f"rank {rank} waiting", file=sys.stderr, flush=True)
while True:
    time.sleep(0.1)
"""

# Steps until its stop signal (SIGUSR1 here), then rank 0 checkpoints its step (with --hold-checkpoint, once the
# test writes ``release``: a slow checkpoint); a run with WATTSCHED_RESUMING=1 starts from the checkpoint and ends
# by itself once the test writes ``finish``. Every rank notes each run's start.
RESUMABLE = WHERE + """
import signal, sys, time
checkpoint, finish = os.path.join(job_dir, "checkpoint.json"), os.path.join(job_dir, "finish")
release = os.path.join(job_dir, "release") if "--hold-checkpoint" in sys.argv else None
stop = []
signal.signal(signal.SIGUSR1, lambda *_: stop.append(True))
resuming = os.environ["WATTSCHED_RESUMING"] == "1"
step = json.load(open(checkpoint))["step"] if resuming else 0
note(f"run{os.environ['WATTSCHED_RUN']}", start_step=step)
progress = open(os.environ["WATTSCHED_PROGRESS"], "a") if rank == 0 else None
while not stop and not (resuming and os.path.exists(finish)):
    time.sleep(0.05)
    step += 1
    if progress:
        progress.write(json.dumps({"step": step}) + "\\n")
        progress.flush()
if rank == 0:
    while stop and release and not os.path.exists(release):
        time.sleep(0.05)
    with open(checkpoint + ".tmp", "w") as f:
        json.dump({"step": step, "run": os.environ["WATTSCHED_RUN"]}, f)
    os.replace(checkpoint + ".tmp", checkpoint)
"""


@pytest.fixture(scope="module")
def cluster_daemon(tmp_path_factory):
    """(daemon, {name: (node id, raylet pid)}, the cluster, {name: its node}) on a cluster of a head without CPUs
    or GPUs and three one-GPU nodes. The last test of the module replaces one node."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = {
            "DE1": cluster.add_node(num_cpus=0, num_gpus=1, labels={ZONE_LABEL: "DE"}),
            "DE2": cluster.add_node(num_cpus=0, num_gpus=1, labels={ZONE_LABEL: "DE"}),
            "FR": cluster.add_node(num_cpus=0, num_gpus=1, labels={ZONE_LABEL: "FR"}),
        }
        cluster.wait_for_nodes()
        where = {name: (node.node_id, raylet_pid(node)) for name, node in nodes.items()}
        with running_daemon(tmp_path_factory.mktemp("wattsched"), ray_address=cluster.address, logical_zones=(),
                            node_sync_s=5.0) as daemon:
            # every node's worker up and known to the scheduler (a busy machine may take a sync or two)
            poll(lambda: len(daemon.controller.call("inventory")) == 3, what="a worker on each of the 3 nodes")
            yield daemon, where, cluster, nodes
    finally:
        cluster.shutdown()


def raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


@pytest.fixture
def client(cluster_daemon):
    from scheduler.client import Client

    daemon, *_ = cluster_daemon
    return Client(url=daemon.url, token=daemon.token)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scripts")
    for name, code in (("all_reduce", ALL_REDUCE), ("sleeper", SLEEPER), ("resumable", RESUMABLE)):
        (folder / f"{name}.py").write_text(textwrap.dedent(code))
    return folder


def command(script: Path, *args: str) -> dict:
    return {"argv": [sys.executable, str(script), *args]}


def noted(path: Path) -> dict:
    """What a rank noted in the job's directory, once it is there."""
    poll(path.exists, what=f"{path.name} written")
    return json.loads(path.read_text())


def node_named(where: dict, raylet: int) -> str:
    return next(name for name, (_, pid) in where.items() if pid == raylet)


def ended(client, job):
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state in ("succeeded", "failed", "cancelled"), job.raw
    return job


def idle(daemon) -> bool:
    return all(w["busy_job"] is None for w in daemon.controller.call("inventory"))


@pytest.mark.ray
def test_a_two_rank_command_all_reduces_on_the_two_nodes_of_one_zone_metered_on_both(cluster_daemon, client,
                                                                                       scripts, capsys):
    pytest.importorskip("torch")
    from scheduler.cli.commands import main

    daemon, where, *_ = cluster_daemon
    job = ended(client, client.submit("command", command(scripts / "all_reduce.py"), gpus=2))
    assert job.state == "succeeded", job.raw
    workdir = Path(job.raw["workdir"])
    ranks = [json.loads((workdir / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [(r["dist_rank"], r["dist_world"], r["sum"]) for r in ranks] == [(0, 2, 3.0), (1, 2, 3.0)]
    assert [r["node_rank"] for r in ranks] == [0, 1]
    # one rank on each DE node (each under its node's raylet), none on FR
    ran_on = [node_named(where, r["raylet_pid"]) for r in ranks]
    assert sorted(ran_on) == ["DE1", "DE2"], ran_on

    (run,) = job.runs
    assert run.zone == "DE" and run.exit_status == "succeeded"
    assert sorted(g.split("-")[0] for g in run.gpu_ids) == sorted(where[n][0][:8] for n in ("DE1", "DE2"))
    # the energy of both nodes: each metered its GPU and CPU, and the job's energy is their sum
    nodes = job.result["nodes"]
    assert [n["node_id"] for n in nodes] == [where[name][0] for name in ran_on]
    assert [n["ranks"] for n in nodes] == [[0], [1]]
    for node in nodes:
        assert node["samples"] > 0 and node["gpu_energy_j"] > 0 and node["exit_status"] == "succeeded", node
    assert job.energy.gpu_energy_j == pytest.approx(sum(n["gpu_energy_j"] for n in nodes))
    assert job.energy.emissions_g is not None and job.energy.emissions_g > 0  # at zone DE's intensity
    assert daemon.store.stored_samples(run.id)  # the gang's summed samples reached the database

    # wattsched status shows the per-node breakdown
    assert main(["--url", daemon.url, "--token", daemon.token, "status", job.id]) == 0
    out = capsys.readouterr().out
    for name, rank in zip(ran_on, (0, 1)):
        line = next(line for line in out.splitlines() if line.strip().startswith(f"node {rank}"))
        assert where[name][0][:8] in line and f"ranks {rank}" in line and "succeeded" in line, out
    poll(lambda: idle(daemon), what="the gang's workers free again")


@pytest.mark.ray
def test_killing_one_rank_stops_the_other_and_fails_the_job_naming_rank_node_and_signal(cluster_daemon, client,
                                                                                           scripts):
    daemon, where, *_ = cluster_daemon
    job = client.submit("command", command(scripts / "sleeper.py"), gpus=2, gpus_per_node=1)
    workdir = Path(job.raw["workdir"])
    rank0, rank1 = noted(workdir / "pid-0.json"), noted(workdir / "pid-1.json")
    victim_node = node_named(where, rank1["raylet_pid"])
    assert {victim_node, node_named(where, rank0["raylet_pid"])} == {"DE1", "DE2"}
    os.kill(rank1["pid"], signal.SIGKILL)  # a process this test's job started, as the OOM killer would

    job = ended(client, job)
    assert job.state == "failed", job.raw  # not interruptible: not queued again
    assert len(job.runs) == 1 and job.runs[0].exit_status == "failed"
    reason = job.reason
    assert "rank 1" in reason and where[victim_node][0][:12] in reason and "SIGKILL" in reason, reason
    assert "the other nodes were stopped" in reason, reason
    assert job.runs[0].raw["exit_code"] == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):  # rank 0 was stopped (and reaped) by its node's launcher
        os.kill(rank0["pid"], 0)
    poll(lambda: idle(daemon), what="the gang's workers free again")


@pytest.mark.ray
def test_an_interruptible_gang_is_suspended_at_a_checkpoint_and_resumes_from_it(cluster_daemon, client, scripts):
    daemon, where, *_ = cluster_daemon
    job = client.submit("command", command(scripts / "resumable.py"), gpus=2, gpus_per_node=1, interruptible=True,
                        stop_signal="SIGUSR1", grace_s=60)
    workdir = Path(job.raw["workdir"])
    job = wait_until_running(client, job)
    first = [noted(workdir / f"run1-{r}.json") for r in (0, 1)]
    assert [(n["resuming"], n["start_step"]) for n in first] == [("0", 0), ("0", 0)]
    daemon._suspend(job.id, daemon.store.get(job.id).runs[-1].id)  # what a planned suspension does

    # stopped on its signal: rank 0 checkpointed; fifo starts it again at once, resuming
    second = [noted(workdir / f"run2-{r}.json") for r in (0, 1)]
    checkpoint = json.loads((workdir / "checkpoint.json").read_text())
    assert checkpoint["run"] == "1" and checkpoint["step"] > 0
    assert [(n["resuming"], n["start_step"]) for n in second] == [("1", checkpoint["step"])] * 2
    assert sorted(node_named(where, n["raylet_pid"]) for n in second) == ["DE1", "DE2"]
    (workdir / "finish").write_text("")

    job = ended(client, job)
    assert job.state == "succeeded", job.raw
    assert [r.exit_status for r in job.runs] == ["suspended", "succeeded"]
    assert [e.to_state for e in daemon.store.get(job.id).events] == ["pending", "running", "suspended", "running",
                                                                     "succeeded"]
    final = json.loads((workdir / "checkpoint.json").read_text())
    assert final["run"] == "2" and final["step"] > checkpoint["step"]  # went on from the checkpoint
    assert all(r.raw["energy"] is not None for r in job.runs)  # each run metered
    poll(lambda: idle(daemon), what="the gang's workers free again")


@pytest.mark.ray
def test_a_four_gpu_job_never_starts_on_three_free_gpus(cluster_daemon, client, scripts):
    daemon, *_ = cluster_daemon
    poll(lambda: idle(daemon), what="every GPU free")
    four = client.submit("command", command(scripts / "sleeper.py"), gpus=4)
    # a job submitted after it runs and ends: the scheduler has looked at the four-GPU job meanwhile
    one = ended(client, client.submit("command", {"argv": [sys.executable, "-c", "pass"]}))
    assert one.state == "succeeded", one.raw
    daemon.trigger_tick()
    four = poll(lambda: (j := client.get(four.id)).raw["wait_code"] is not None and j,
                what="a reason for the four-GPU job")
    assert four.state == "pending" and four.runs == (), four.raw
    assert four.raw["unschedulable"] is True, four.raw
    assert four.raw["wait_code"] == "UnschedulableAndUnresolvable" and "has 4 GPUs" in four.reason, four.reason
    assert idle(daemon)
    client.cancel(four.id)
    assert client.get(four.id).state == "cancelled"


@pytest.mark.ray
def test_two_free_gpus_in_two_zones_do_not_make_a_gang(cluster_daemon, client, scripts):
    daemon, where, *_ = cluster_daemon
    poll(lambda: idle(daemon), what="every GPU free")
    holder = client.submit("command", command(scripts / "sleeper.py"), zones=["DE"])
    noted(Path(holder.raw["workdir"]) / "pid-0.json")
    # one DE GPU and the FR GPU are free: two GPUs, but not in one zone
    pair = client.submit("command", {"argv": [sys.executable, "-c", "pass"]}, gpus=2)
    pair = poll(lambda: (j := client.get(pair.id)).raw["wait_code"] is not None and j, what="a reason for the pair")
    assert pair.state == "pending" and pair.runs == (), pair.raw
    # not now, rather than never: room may free up in DE
    assert pair.raw["wait_code"] == "Unschedulable" and "waiting for" in pair.reason, pair.reason

    client.cancel(holder.id)
    assert ended(client, holder).state == "cancelled"
    pair = ended(client, pair)
    assert pair.state == "succeeded", pair.raw
    (run,) = pair.runs
    assert run.zone == "DE" and sorted(g.split("-")[0] for g in run.gpu_ids) == sorted(
        where[n][0][:8] for n in ("DE1", "DE2"))
    poll(lambda: idle(daemon), what="the gang's workers free again")

def runs_noted(workdir: Path) -> dict[int, list[dict]]:
    """Each run's notes by run number, for the runs both ranks have noted."""
    runs: dict[int, list[dict]] = {}
    for path in sorted(workdir.glob("run*-*.json")):
        seen = json.loads(path.read_text())
        runs.setdefault(int(seen["run"]), []).append(seen)
    return {run: sorted(seen, key=lambda n: n["rank"]) for run, seen in runs.items() if len(seen) == 2}


@pytest.mark.ray
def test_a_gang_that_loses_a_node_stops_whole_and_resumes_from_its_checkpoint_on_another(cluster_daemon, client,
                                                                                          scripts):
    # Last in the module: it takes a node away for good (and brings another in its place).
    daemon, where, cluster, nodes = cluster_daemon
    assert ray.get_runtime_context().get_node_id() == cluster.head_node.node_id  # the driver's node stays
    job = client.submit("command", command(scripts / "resumable.py", "--hold-checkpoint"), gpus=2, gpus_per_node=1,
                        interruptible=True, stop_signal="SIGUSR1", grace_s=JOB_TIMEOUT_S)
    workdir = Path(job.raw["workdir"])
    wait_until_running(client, job)
    rank0, rank1 = [noted(workdir / f"run1-{r}.json") for r in (0, 1)]
    survivor, lost = node_named(where, rank0["raylet_pid"]), node_named(where, rank1["raylet_pid"])

    cluster.remove_node(nodes[lost])
    try:
        first = poll(lambda: (r := daemon.store.get(job.id).runs[0]).status != "running" and r,
                     what="the run that lost a node ends")
        assert first.status == "lost" and where[lost][0][:8] in first.message, first.message
    finally:
        # The lost node's rank outlives its raylet and worker (one machine plays every node here, and a rank runs
        # in a session of its own): this test's own child, ended by it.
        try:
            os.kill(rank1["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass

    # Another DE node joins while rank 0 still takes its time to checkpoint: the survivor's GPU stays held until
    # its rank has ended, so a scheduling round with both DE nodes known starts nothing (no start refused by a
    # busy worker, no run failed for it).
    nodes["DE3"] = cluster.add_node(num_cpus=0, num_gpus=1, labels={ZONE_LABEL: "DE"})
    new_node, new_raylet = nodes["DE3"].node_id, raylet_pid(nodes["DE3"])
    inventory = poll(lambda: (gpus := daemon.controller.call("inventory"))
                     and any(g["node_id"] == new_node for g in gpus) and gpus, what="the new node's worker")
    assert [g["busy_job"] for g in inventory if g["node_id"] == where[survivor][0]] == [job.id]
    daemon.tick()
    assert [r.status for r in daemon.store.get(job.id).runs] == ["lost"]
    assert client.get(job.id).state == "pending"

    (workdir / "release").write_text("")  # rank 0 checkpoints and ends; then the job runs again
    resumed = poll(lambda: {run: seen for run, seen in runs_noted(workdir).items() if run > 1},
                   what="both ranks of a second run")
    checkpoint = json.loads((workdir / "checkpoint.json").read_text())
    assert checkpoint["run"] == "1" and checkpoint["step"] > 0
    (run, seen), = resumed.items()
    assert [(n["resuming"], n["start_step"]) for n in seen] == [("1", checkpoint["step"])] * 2
    assert sorted(n["raylet_pid"] for n in seen) == sorted([where[survivor][1], new_raylet])
    (workdir / "finish").write_text("")

    job = ended(client, job)
    assert job.state == "succeeded", job.raw
    assert [r.exit_status for r in job.runs] == ["lost", "succeeded"] and job.runs[-1].attempt == run == 2
    requeued = [e.reason for e in daemon.store.get(job.id).events if e.to_state == "pending"][1:]
    assert len(requeued) == 1 and "a node of the gang was lost" in requeued[0] and "queued again" in requeued[0]
    assert job.runs[0].raw["energy"] is not None  # the lost run's energy up to its nodes' last samples
    final = json.loads((workdir / "checkpoint.json").read_text())
    assert final["run"] == "2" and final["step"] > checkpoint["step"]

def test_a_failed_nodes_log_lines_stay_above_the_cause_which_names_rank_and_node():
    # The job's reason is its error's last line: with the rank's stderr above its cause, that line must still
    # say which rank on which node failed (no Ray needed).
    gang = GangRun("j", 1, [GangNode("node-aaaa", 0, "a-gpu0", ["a-gpu0"], [0]),
                            GangNode("node-bbbb", 1, "b-gpu0", ["b-gpu0"], [1])])
    error = "epoch 3 loss 0.41\nrank 1 waiting\nthe command was killed by SIGKILL (killed: out of memory?)"
    failed, _ = gang.on_finished(Finished(job_id="j", run_id=1, worker_id="b-gpu0", at=2.0,
                                          exit_status=ExitStatus.FAILED, error=error))
    *tail, last = gang.failure_reason(failed).splitlines()
    assert tail == ["epoch 3 loss 0.41", "rank 1 waiting"]
    assert last == ("node node-bbbb (node rank 1 of 2, rank 1): the command was killed by SIGKILL (killed: out of "
                    "memory?); the other nodes were stopped")
