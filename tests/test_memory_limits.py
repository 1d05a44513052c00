"""Resource limits: each kind's memory estimate, the node memory the workers report, the refusal on submit of a
job that fits no node or no launch its kind accepts, and a job's own memory limit enforced on its processes
(real processes: the limit wrapper and the job process)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from sqlalchemy import text
from test_api_migrations import columns

from scheduler.errors import InvalidRequest
from scheduler.store.engine import alembic_config, make_engine, make_session_factory, upgrade
from scheduler.store.inventory import largest_node_memory_bytes, record_inventory
from scheduler.store.launch import Launch, check_launch
from scheduler.store.resources import check_resources
from workers.errors import SpecError
from workers.gpu_info import node_memory_bytes
from workers.kinds import builtin_kinds
from workers.kinds.memory import GIB, MIB, unet_parameters
from workers.memory_limit import LIMIT_VARIABLE, limited_argv

KINDS = builtin_kinds()
TRAIN, SAMPLE, SYNTHETIC, COMMAND = (KINDS.get(k) for k in ("diffusion-train", "diffusion-sample", "synthetic",
                                                             "command"))
NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


# --- estimates -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, layers, image_channels", [
    ((16, 32), 1, 1), ((32, 64, 128), 2, 3), ((64, 128, 256, 256), 2, 3), ((8,), 1, 1), ((128, 256), 4, 3)])
def test_the_parameter_count_is_the_models_own(channels, layers, image_channels):
    from workers.diffusion.train import build_unet
    from workers.kinds.diffusion_train import TrainSpec

    model = build_unet(TrainSpec(channels=channels, layers_per_block=layers, image_size=32), image_channels)
    assert unet_parameters(channels, layers, image_channels) == sum(p.numel() for p in model.parameters())


def test_the_largest_training_spec_needs_about_18_gib_for_its_weights_and_optimizer_state():
    largest = TRAIN.validate({"channels": [1024] * 4, "layers_per_block": 4, "image_size": 256, "batch_size": 1,
                              "dataset": "/data/images", "gradient_checkpointing": True})
    weights_and_state = 16 * unet_parameters([1024] * 4, 4, 3)
    assert 17 * GIB < weights_and_state < 19 * GIB
    assert TRAIN.memory_bytes(largest) > weights_and_state


def test_a_training_estimate_grows_with_the_batch_and_shrinks_with_more_gpus():
    small = TRAIN.validate({})
    assert TRAIN.memory_bytes(small) < 1 * GIB  # the default job fits any machine
    big_batch = TRAIN.validate({"batch_size": 4096, "image_size": 64, "channels": [64, 128]})
    assert TRAIN.memory_bytes(big_batch, gpus=1) > TRAIN.memory_bytes(big_batch, gpus=4) > TRAIN.memory_bytes(small)
    bf16 = TRAIN.validate({"batch_size": 4096, "image_size": 64, "channels": [64, 128], "mixed_precision": "bf16"})
    assert TRAIN.memory_bytes(bf16) < TRAIN.memory_bytes(big_batch)


def test_sampling_synthetic_and_command_estimates():
    many = SAMPLE.validate({"checkpoint": "/data/ckpt", "num_images": 100_000})
    assert SAMPLE.memory_bytes(many) > SAMPLE.memory_bytes(SAMPLE.validate({"checkpoint": "/data/ckpt"}))
    assert SYNTHETIC.memory_bytes(SYNTHETIC.validate({"memory_mib": 2048})) > 2048 * MIB
    assert COMMAND.memory_bytes(COMMAND.validate({"argv": ["true"]})) is None  # unknown: never refused for it


# --- what a kind accepts on submit ------------------------------------------------------------------------------


def test_diffusion_train_needs_a_batch_split_evenly_between_its_gpus():
    spec = TRAIN.validate({"batch_size": 30})
    TRAIN.check_launch(spec, 3, "per-gpu")
    with pytest.raises(SpecError, match=r"spec.batch_size: must be a multiple of gpus \(4\).*got 30") as refused:
        TRAIN.check_launch(spec, 4, "per-gpu")
    assert refused.value.field == "spec.batch_size"


def test_diffusion_train_starts_its_own_ranks_so_a_per_node_launch_is_refused():
    with pytest.raises(SpecError, match="launch: must be per-gpu.*got 'per-node'") as refused:
        TRAIN.check_launch(TRAIN.validate({}), 2, "per-node")
    assert refused.value.field == "launch"
    COMMAND.check_launch(COMMAND.validate({"argv": ["torchrun", "x.py"]}), 2, "per-node")  # a script's own launcher


def test_check_resources_refuses_naming_the_field_and_the_figures():
    huge = TRAIN.validate({"channels": [1024] * 4, "layers_per_block": 4, "image_size": 256, "batch_size": 1,
                           "gradient_checkpointing": True})
    with pytest.raises(InvalidRequest, match=r"spec: .*estimated to need \d+\.\d GiB.*largest node has \(16\.0 GiB\)") \
            as refused:
        check_resources(TRAIN, huge, 1, Launch(), lambda: 16 * GIB)
    assert refused.value.field == "spec"
    check_resources(TRAIN, huge, 1, Launch(), lambda: None)  # no node has said: not refused for it
    check_resources(TRAIN, TRAIN.validate({}), 1, Launch(), lambda: 16 * GIB)
    with pytest.raises(InvalidRequest) as refused:
        check_resources(TRAIN, TRAIN.validate({"batch_size": 30}), 4, Launch(), lambda: 16 * GIB)
    assert refused.value.field == "spec.batch_size"
    with pytest.raises(InvalidRequest) as refused:
        check_resources(TRAIN, TRAIN.validate({}), 2, Launch(mode="per-node"), lambda: 16 * GIB)
    assert refused.value.field == "launch"
    asked = []
    check_resources(COMMAND, COMMAND.validate({"argv": ["true"]}), 1, Launch(), lambda: asked.append(1))
    assert asked == []  # a kind that does not estimate costs no look-up


# --- node memory ------------------------------------------------------------------------------------------------


def test_a_nodes_memory_is_its_containers_limit_when_lower(tmp_path):
    physical = node_memory_bytes(limits=())
    assert physical > 0
    (tmp_path / "memory.max").write_text(f"{2 * GIB}\n")
    (tmp_path / "none").write_text("max\n")
    assert node_memory_bytes(limits=(str(tmp_path / "none"), str(tmp_path / "memory.max"))) == min(physical, 2 * GIB)
    assert node_memory_bytes(limits=(str(tmp_path / "none"), str(tmp_path / "missing"))) == physical


def test_the_inventory_keeps_each_nodes_memory_and_gives_the_largest_live_one(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    assert largest_node_memory_bytes(sessions) is None
    record_inventory(sessions, [{"worker_id": "w0", "node_id": "a", "zone": "DE"}], NOW)  # an older worker
    assert largest_node_memory_bytes(sessions) is None
    record_inventory(sessions, [{"worker_id": "w0", "node_id": "a", "zone": "DE", "memory_bytes": 64 * GIB},
                                {"worker_id": "w1", "node_id": "b", "zone": "DE", "memory_bytes": 8 * GIB}], NOW)
    assert largest_node_memory_bytes(sessions) == 64 * GIB  # above 2**32: a big integer column
    with engine.begin() as connection:
        connection.execute(text("UPDATE nodes SET alive = false WHERE id = 'a'"))
    assert largest_node_memory_bytes(sessions) == 8 * GIB
    engine.dispose()


def test_0009_adds_node_memory_and_job_memory_limits_and_downgrades(db_url):
    from alembic import command

    engine = make_engine(db_url)
    upgrade(engine, "0008")
    upgrade(engine)
    assert "memory_bytes" in columns(engine, "nodes") and "memory_limit_gib" in columns(engine, "jobs")
    command.downgrade(alembic_config(engine), "0008")
    assert "memory_bytes" not in columns(engine, "nodes") and "memory_limit_gib" not in columns(engine, "jobs")
    upgrade(engine)
    engine.dispose()


# --- a job's memory limit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.01, -1, True, "2", float("nan"), 1e9])
def test_a_memory_limit_out_of_range_is_refused_naming_the_field(bad):
    with pytest.raises(InvalidRequest, match="memory_limit_gib: must be a number of GiB") as refused:
        check_launch(1, memory_limit_gib=bad)
    assert refused.value.field == "memory_limit_gib"


def test_a_memory_limit_is_kept_with_the_launch():
    launch = check_launch(1, memory_limit_gib=2)
    assert launch.memory_limit_gib == 2.0 and launch.to_dict()["memory_limit_gib"] == 2.0
    assert check_launch(1).to_dict()["memory_limit_gib"] is None

    class Row:  # a stored job, as the jobs table keeps it
        gpus_per_node, launch, stop_signal, grace_s, memory_limit_gib = None, "per-gpu", "SIGTERM", 30.0, 2.0
    assert Launch.of(Row()) == Launch(grace_s=30.0, memory_limit_gib=2.0)


ALLOCATE_600_MIB = "bytearray(600 * 1024 * 1024); print('allocated')"


def test_a_command_under_the_limit_cannot_allocate_past_it():
    limited = subprocess.run(limited_argv([sys.executable, "-c", ALLOCATE_600_MIB], 256 * MIB),
                             capture_output=True, text=True, timeout=120)
    assert limited.returncode != 0 and "MemoryError" in limited.stderr and "allocated" not in limited.stdout
    free = subprocess.run(limited_argv([sys.executable, "-c", ALLOCATE_600_MIB], 2 * GIB), capture_output=True,
                          text=True, timeout=120)
    assert free.returncode == 0 and "allocated" in free.stdout


def test_a_missing_program_under_the_limit_says_so():
    missing = subprocess.run(limited_argv(["no-such-program-here"], GIB), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 127 and "cannot start 'no-such-program-here'" in missing.stderr


@pytest.mark.parametrize("memory_mib, fails", [(600, True), (16, False)])
def test_a_job_process_refused_memory_past_its_limit_fails_saying_so(tmp_path, memory_mib, fails):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"kind": "synthetic", "workdir": str(tmp_path / "work"),
                                    "spec": {"steps": 2, "step_s": 0, "memory_mib": memory_mib}}))
    argv = limited_argv([sys.executable, "-m", "workers.job_process", "--job", str(job_file)], 256 * MIB)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    last = json.loads(done.stdout.strip().splitlines()[-1])
    if fails:
        assert done.returncode == 1 and last["event"] == "error"
        assert last["message"].startswith("killed: memory limit of 0.25 GiB reached (MemoryError")
    else:
        assert done.returncode == 0 and last["event"] == "result", done.stderr[-2000:]


def test_the_limit_is_handed_to_the_job(tmp_path):
    shown = subprocess.run(limited_argv([sys.executable, "-c", f"import os; print(os.environ['{LIMIT_VARIABLE}'])"],
                                        GIB), capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip() == str(GIB)


# --- on submit, through the API ---------------------------------------------------------------------------------


@pytest.fixture
def api(daemon):
    from fastapi.testclient import TestClient

    from scheduler.api.app import create_app

    token = daemon.auth.create_token("alice", "admin").secret
    return TestClient(create_app(daemon), headers={"Authorization": f"Bearer {token}"})


def test_submit_refuses_a_job_that_fits_no_node_and_keeps_a_memory_limit(api, daemon):
    assert api.post("/v1/jobs", json={"kind": "synthetic", "spec": {"memory_mib": 4096}}).status_code == 201
    record_inventory(daemon.store.sessions, [{"worker_id": "w0", "node_id": "a", "zone": "DE",
                                              "memory_bytes": 2 * GIB}], NOW)
    refused = api.post("/v1/jobs", json={"kind": "synthetic", "spec": {"memory_mib": 4096}})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["field"] == "spec" and "4.0 GiB" in error["message"] and "(2.0 GiB)" in error["message"]

    limited = api.post("/v1/jobs", json={"kind": "synthetic", "spec": {"memory_mib": 100}, "memory_limit_gib": 0.5})
    assert limited.status_code == 201 and limited.json()["memory_limit_gib"] == 0.5
    assert daemon.store.get(limited.json()["id"]).memory_limit_gib == 0.5
    bad = api.post("/v1/jobs", json={"kind": "synthetic", "spec": {}, "memory_limit_gib": 0})
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "memory_limit_gib")
    assert api.get("/v1/jobs").json()["total"] == 2  # the refused ones left nothing behind


def test_submit_refuses_a_training_batch_its_gpus_cannot_split_and_a_per_node_launch(api):
    uneven = api.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {"batch_size": 30}, "gpus": 4})
    assert uneven.status_code == 400 and uneven.json()["error"]["field"] == "spec.batch_size"
    assert "gpus (4)" in uneven.json()["error"]["message"]
    per_node = api.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {}, "gpus": 2, "launch": "per-node"})
    assert per_node.status_code == 400 and per_node.json()["error"]["field"] == "launch"
    even = api.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {"batch_size": 32}, "gpus": 4})
    assert even.status_code == 201, even.text


@pytest.mark.ray
def test_a_job_past_its_memory_limit_fails_saying_so_through_a_real_daemon(tmp_path):
    from daemon_fixtures import JOB_TIMEOUT_S, running_daemon

    from scheduler.client import Client

    with running_daemon(tmp_path) as daemon:
        client = Client(url=daemon.url, token=daemon.token, timeout_s=60)
        command = client.submit("command", {"argv": [sys.executable, "-c", ALLOCATE_600_MIB]}, memory_limit_gib=0.25)
        over = client.submit("synthetic", {"steps": 2, "step_s": 0, "memory_mib": 600}, memory_limit_gib=0.25)
        under = client.submit("synthetic", {"steps": 2, "step_s": 0, "memory_mib": 16}, memory_limit_gib=0.25)
        over, under = client.wait(over.id, timeout=JOB_TIMEOUT_S), client.wait(under.id, timeout=JOB_TIMEOUT_S)
        assert over.state == "failed" and "killed: memory limit of 0.25 GiB reached" in over.reason, over.raw
        assert under.state == "succeeded", under.raw
        command = client.wait(command.id, timeout=JOB_TIMEOUT_S)
        assert command.state == "failed" and "killed: memory limit of 0.25 GiB reached" in command.reason, command.raw
        assert largest_node_memory_bytes(daemon.store.sessions) == node_memory_bytes()  # what the worker reported
