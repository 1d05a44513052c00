"""Command jobs end to end: the user's own scripts submitted to a real daemon on a real local Ray with two logical
GPUs (in one zone, so that a two-GPU job fits on the one node), really run, metered and stopped.

The scripts are small Python files written by the tests; they record what they saw (their environment, their
rank, their checkpoint) in the job's directory, where the tests read it.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from scheduler.config import Settings

from daemon_fixtures import JOB_TIMEOUT_S, poll, running_daemon, wait_until_running

pytestmark = pytest.mark.ray

#: What a probe script records of its environment.
PROBED = ("WATTSCHED_JOB_ID", "WATTSCHED_RUN", "WATTSCHED_JOB_DIR", "WATTSCHED_RESUMING", "WATTSCHED_PROGRESS",
          "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
          "LOCAL_WORLD_SIZE", "NODE_RANK", "NNODES", "GREETING")

PROBE = f"""
import json, os, sys
rank = os.environ.get("RANK", "node")
seen = {{"env": {{k: os.environ.get(k) for k in {PROBED!r}}}, "cwd": os.getcwd(), "args": sys.argv[1:]}}
with open(os.path.join(os.environ["WATTSCHED_JOB_DIR"], f"probe-{{rank}}.json"), "w") as f:
    json.dump(seen, f)
"""

PROGRESS = """
import json, os, time
job_dir, path = os.environ["WATTSCHED_JOB_DIR"], os.environ["WATTSCHED_PROGRESS"]
with open(path, "a") as f:
    f.write("not a progress line\\n")
    for step in (1, 2, 3):
        f.write(json.dumps({"step": step, "total": 10}) + "\\n")
        f.flush()
while not os.path.exists(os.path.join(job_dir, "finish")):
    time.sleep(0.05)
with open(path, "a") as f:
    f.write(json.dumps({"step": 10, "total": 10}) + "\\n")
"""

ALL_REDUCE = """
import json, os
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
seen = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES")}
with open(os.path.join(os.environ["WATTSCHED_JOB_DIR"], f"rank-{dist.get_rank()}.json"), "w") as f:
    json.dump({**seen, "sum": value.item()}, f)
dist.destroy_process_group()
"""

# Rank 1 is killed by a SIGKILL of its own (as the OOM killer would) once rank 0 waits; rank 0 notes its stop.
KILLED_RANK = """
import os, signal, time
job_dir, rank = os.environ["WATTSCHED_JOB_DIR"], int(os.environ["RANK"])
ready, stopped = os.path.join(job_dir, "rank0-ready"), os.path.join(job_dir, "rank0-stopped")
if rank == 1:
    while not os.path.exists(ready):
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
signal.signal(signal.SIGTERM, lambda *_: (open(stopped, "w").write("stopped"), os._exit(0)))
open(ready, "w").close()
while True:
    time.sleep(0.05)
"""

# Counts to TOTAL at 20 steps a second; SIGUSR1 (the job's stop signal here) makes it checkpoint and exit; a run
# with WATTSCHED_RESUMING=1 starts from the checkpoint. Every run notes how it began.
RESUMABLE = """
import json, os, signal, sys, time
job_dir, total = os.environ["WATTSCHED_JOB_DIR"], int(sys.argv[1])
checkpoint = os.path.join(job_dir, "checkpoint.json")
stop = []
signal.signal(signal.SIGUSR1, lambda *_: stop.append(True))
resuming = os.environ["WATTSCHED_RESUMING"] == "1"
step = json.load(open(checkpoint))["step"] if resuming else 0
with open(os.path.join(job_dir, "runs.jsonl"), "a") as f:
    f.write(json.dumps({"run": os.environ["WATTSCHED_RUN"], "resuming": resuming, "from": step}) + "\\n")
progress = open(os.environ["WATTSCHED_PROGRESS"], "a")
while step < total and not stop:
    time.sleep(0.05)
    step += 1
    progress.write(json.dumps({"step": step, "total": total}) + "\\n")
    progress.flush()
with open(checkpoint + ".tmp", "w") as f:
    json.dump({"step": step}, f)
os.replace(checkpoint + ".tmp", checkpoint)
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    # The embedded default's zones (Settings' own: both logical GPUs in the default zone), so a two-GPU job finds
    # them on one node of one zone.
    with running_daemon(tmp_path_factory.mktemp("wattsched"), logical_zones=Settings().logical_zones) as daemon:
        yield daemon


@pytest.fixture
def client(daemon):
    from scheduler.client import Client

    return Client(url=daemon.url, token=daemon.token)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scripts")
    for name, code in (("probe", PROBE), ("progress", PROGRESS), ("all_reduce", ALL_REDUCE),
                       ("killed_rank", KILLED_RANK), ("resumable", RESUMABLE)):
        (folder / f"{name}.py").write_text(textwrap.dedent(code))
    return folder


def finished(client, job):
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state in ("succeeded", "failed", "cancelled"), job.raw
    return job


def test_a_command_gets_the_protocols_environment_in_its_cwd(client, scripts):
    job = client.submit("command", {"argv": [sys.executable, str(scripts / "probe.py"), "--lr", "1e-4"],
                                    "cwd": "code", "env": {"GREETING": "hello", "CUDA_VISIBLE_DEVICES": "7"}})
    workdir = Path(job.raw["workdir"])
    (workdir / "code").mkdir(parents=True)
    job = finished(client, job)
    assert job.state == "succeeded", job.raw
    seen = json.loads((workdir / "probe-0.json").read_text())
    env = seen["env"]
    assert (env["WATTSCHED_JOB_ID"], env["WATTSCHED_RUN"], env["WATTSCHED_RESUMING"]) == (job.id, "1", "0")
    assert env["WATTSCHED_JOB_DIR"] == job.raw["workdir"]
    assert env["WATTSCHED_PROGRESS"] == str(workdir / "progress.jsonl")
    assert env["GREETING"] == "hello"
    assert env["CUDA_VISIBLE_DEVICES"] in ("0", "1")  # its GPU, not what its env asked for
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("0", "1", "0")
    assert seen["cwd"] == str(workdir / "code") and seen["args"] == ["--lr", "1e-4"]
    assert job.result["exit_codes"] == {"0": 0} and job.result["stopped"] is False


def test_a_command_that_ends_at_once_is_metered_and_one_that_fails_says_why(client):
    # Ended before the meters opened: it is not reaped until they have looked at it.
    quick = finished(client, client.submit("command", {"argv": [sys.executable, "-c", "pass"]}))
    assert quick.state == "succeeded", quick.raw
    assert quick.energy is not None
    failing = [sys.executable, "-c", "import sys; print('cannot find data.csv', file=sys.stderr); sys.exit(3)"]
    failed = finished(client, client.submit("command", {"argv": failing}))
    assert failed.state == "failed" and failed.reason == "failed: the command exited with code 3", failed.raw
    assert failed.raw["error"].endswith("cannot find data.csv\nthe command exited with code 3")  # its stderr too
    missing = finished(client, client.submit("command", {"argv": ["/no/such/program"]}))
    assert missing.state == "failed" and "cannot start '/no/such/program'" in missing.reason, missing.raw


def test_progress_lines_reach_the_job_view_while_it_runs(client, scripts):
    job = client.submit("command", {"argv": [sys.executable, str(scripts / "progress.py")]})
    job = poll(lambda: (j := client.get(job.id)).raw.get("progress") == {"step": 3, "total": 10} and j,
               what="the job's progress from its progress file")
    assert job.state == "running"
    (Path(job.raw["workdir"]) / "finish").write_text("")
    job = finished(client, job)
    assert job.state == "succeeded", job.raw
    assert job.raw["progress"] == {"step": 10, "total": 10}
    assert (job.result["progress_lines"], job.result["progress_lines_ignored"]) == (5, 1)


def test_two_gpus_per_gpu_from_the_cli_run_two_ranks_that_all_reduce(daemon, scripts, capsys):
    pytest.importorskip("torch")
    from scheduler.cli.commands import main

    code = main(["--url", daemon.url, "--token", daemon.token, "submit", "command", "--gpus", "2", "--wait",
                 "--format", "json", "--", sys.executable, str(scripts / "all_reduce.py")])
    out = capsys.readouterr().out
    job = json.loads(out)
    assert code == 0 and job["state"] == "succeeded", out
    ranks = [json.loads((Path(job["workdir"]) / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"]) for r in ranks] == [("0", "0", "2"), ("1", "1", "2")]
    assert sorted(r["CUDA_VISIBLE_DEVICES"] for r in ranks) == ["0", "1"]  # each its own GPU
    assert [r["sum"] for r in ranks] == [3.0, 3.0]
    assert job["result"]["exit_codes"] == {"0": 0, "1": 0}
    assert job["energy"]["gpu_energy_j"] > 0


def test_per_node_is_one_process_with_both_gpus(client, scripts):
    job = finished(client, client.submit("command", {"argv": [sys.executable, str(scripts / "probe.py")]}, gpus=2,
                                         launch="per-node"))
    assert job.state == "succeeded", job.raw
    workdir = Path(job.raw["workdir"])
    assert [p.name for p in workdir.glob("probe-*.json")] == ["probe-node.json"]  # no RANK: one process
    env = json.loads((workdir / "probe-node.json").read_text())["env"]
    assert sorted(env["CUDA_VISIBLE_DEVICES"].split(",")) == ["0", "1"]
    assert (env["NNODES"], env["NODE_RANK"], env["MASTER_ADDR"]) == ("1", "0", "127.0.0.1")
    assert int(env["MASTER_PORT"]) > 0 and env["WORLD_SIZE"] is None


def test_a_rank_killed_by_a_signal_stops_the_other_and_fails_the_job_naming_both(client, scripts):
    job = client.submit("command", {"argv": [sys.executable, str(scripts / "killed_rank.py")]}, gpus=2)
    job = finished(client, job)
    assert job.state == "failed", job.raw
    assert job.reason.startswith("failed: rank 1 of 2 was killed by SIGKILL (killed: out of memory?); "
                                 "the other ranks were stopped"), job.reason
    assert (Path(job.raw["workdir"]) / "rank0-stopped").read_text() == "stopped"
    assert job.runs[-1].raw["exit_code"] == -9


def test_an_interruptible_command_stops_at_its_own_signal_and_resumes_from_its_checkpoint(daemon, client, scripts):
    total = 300  # 15 s of steps: still running when the suspension reaches it on a busy machine
    job = client.submit("command", {"argv": [sys.executable, str(scripts / "resumable.py"), str(total)]},
                        interruptible=True, stop_signal="SIGUSR1", grace_s=60)
    job = wait_until_running(client, job)
    daemon._suspend(job.id, daemon.store.get(job.id).runs[-1].id)  # what the scheduler does to make room
    job = finished(client, job)  # fifo resumes it at once
    assert job.state == "succeeded", job.raw
    assert [r.status for r in daemon.store.get(job.id).runs] == ["suspended", "succeeded"]
    workdir = Path(job.raw["workdir"])
    first, second = [json.loads(line) for line in (workdir / "runs.jsonl").read_text().splitlines()]
    assert first == {"run": "1", "resuming": False, "from": 0}
    assert second["run"] == "2" and second["resuming"] is True and 0 < second["from"] < total
    assert json.loads((workdir / "checkpoint.json").read_text()) == {"step": total}
