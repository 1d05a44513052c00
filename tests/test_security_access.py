"""Other users' data, on real SQLite and PostgreSQL through the API: a job refers only to its submitter's own jobs
(admins: any), a spec's paths point only under the roots the daemon allows (never into the daemon's own files or
another user's jobs, whatever ``..`` or links say), they are checked again where the job runs, and a job's server
paths are shown only to its submitter and admins."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scheduler.api.app import create_app
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.errors import ConfigError
from scheduler.store.engine import upgrade
from scheduler.store.views import HIDDEN_PATH, job_view
from workers.errors import SpecError
from workers.kinds import JobContext
from workers.kinds.command import Command
from workers.kinds.diffusion_sample import DiffusionSample
from workers.kinds.diffusion_train import DiffusionTrain

TRAIN = {"kind": "diffusion-train", "spec": {"steps": 5}}
UNKNOWN_ID = "000000000000"


@pytest.fixture
def shared(tmp_path) -> Path:
    """A folder an admin allows paths under (WATTSCHED_PATH_ROOTS); the daemon's data directory is inside it."""
    folder = tmp_path / "shared"
    folder.mkdir()
    return folder


def make_daemon(db_url: str, data_dir: Path, **settings) -> Daemon:
    daemon = Daemon(Settings(data_dir=data_dir, database_url=db_url, port=0, **settings))
    upgrade(daemon.engine)
    return daemon


@pytest.fixture
def daemon(upgraded_db_url, tmp_path, shared):
    # The data directory inside the allowed root: its files must stay refused all the same.
    daemon = make_daemon(upgraded_db_url, shared / "data", path_roots=(str(tmp_path),))
    yield daemon
    daemon.engine.dispose()


def as_user(daemon: Daemon, name: str, role: str = "user", app=None) -> TestClient:
    token = daemon.auth.create_token(name, role).secret
    return TestClient(app or create_app(daemon), headers={"Authorization": f"Bearer {token}"})


def submit(client: TestClient, kind: str, spec: dict, **more):
    return client.post("/v1/jobs", json={"kind": kind, "spec": spec, **more})


def refused(response, field: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    return error["message"]


# --- references to other jobs --------------------------------------------------------------------------


def test_another_users_job_is_referred_to_as_an_unknown_id(daemon):
    app = create_app(daemon)
    alice, bob, admin = as_user(daemon, "alice", app=app), as_user(daemon, "bob", app=app), \
        as_user(daemon, "root", "admin", app=app)
    theirs = bob.post("/v1/jobs", json=TRAIN).json()["id"]
    mine = alice.post("/v1/jobs", json=TRAIN).json()["id"]

    attempts = {
        "spec.checkpoint": lambda job_id: submit(alice, "diffusion-sample", {"checkpoint": f"job:{job_id}"}),
        "depends_on": lambda job_id: submit(alice, "diffusion-train", {"steps": 5}, depends_on=[job_id]),
    }
    for field, attempt in attempts.items():
        foreign, unknown = attempt(theirs), attempt(UNKNOWN_ID)
        assert refused(foreign, field).replace(theirs, UNKNOWN_ID) == refused(unknown, field)
        assert "no job with id" in refused(unknown, field)
    # A path into bob's job directory is refused too, as any path not allowed.
    bobs_dir = bob.get(f"/v1/jobs/{theirs}").json()["workdir"]
    refused(submit(alice, "diffusion-sample", {"checkpoint": bobs_dir}), "spec.checkpoint")
    assert daemon.store.list(owner=None)[1] == 2  # nothing was stored

    # Her own jobs, and any job for an admin, are fine; the reference becomes the job's resolved directory.
    own = submit(alice, "diffusion-sample", {"checkpoint": f"job:{mine}"}, depends_on=[mine])
    assert own.status_code == 201 and own.json()["spec"]["checkpoint"] == os.path.realpath(
        alice.get(f"/v1/jobs/{mine}").json()["workdir"])
    by_admin = submit(admin, "diffusion-sample", {"checkpoint": f"job:{theirs}"}, depends_on=[theirs])
    assert by_admin.status_code == 201 and by_admin.json()["spec"]["checkpoint"] == os.path.realpath(bobs_dir)


# --- paths ----------------------------------------------------------------------------------------------


def test_paths_into_another_users_job_are_refused_however_they_are_written(daemon, shared):
    app = create_app(daemon)
    alice, bob, admin = as_user(daemon, "alice", app=app), as_user(daemon, "bob", app=app), \
        as_user(daemon, "root", "admin", app=app)
    theirs = bob.post("/v1/jobs", json=TRAIN).json()
    mine = alice.post("/v1/jobs", json=TRAIN).json()
    bobs_dir, my_dir = Path(theirs["workdir"]), Path(mine["workdir"])
    bobs_dir.mkdir(parents=True)
    my_dir.mkdir(parents=True)
    (shared / "link").symlink_to(bobs_dir)
    (my_dir / "link").symlink_to(bobs_dir)

    for path in (bobs_dir, bobs_dir / "samples", f"{my_dir}/../{theirs['id']}", shared / "link",
                 shared / "link" / "final", my_dir / "link", bobs_dir.parent, f"{my_dir}/.."):
        refused(submit(alice, "diffusion-train", {"dataset": str(path)}), "spec.dataset")
        refused(submit(alice, "diffusion-sample", {"checkpoint": str(path)}), "spec.checkpoint")
    # Her own directory, and a folder of the allowed root, are fine and stored resolved.
    for path, stored in ((f"{my_dir}/data/../images", my_dir / "images"), (shared / "faces", shared / "faces")):
        accepted = submit(alice, "diffusion-train", {"dataset": str(path)})
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["spec"]["dataset"] == os.path.realpath(stored)
    # An admin may use any job's directory (as any job:<id>).
    assert submit(admin, "diffusion-train", {"dataset": str(bobs_dir)}).status_code == 201


def test_the_daemons_own_files_are_refused_to_everyone_without_saying_whether_they_exist(daemon, tmp_path):
    app = create_app(daemon)
    admin, alice = as_user(daemon, "root", "admin", app=app), as_user(daemon, "alice", app=app)
    data = daemon.settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    (data / "daemon.json").write_text("{}")
    database = Path(daemon.settings.resolved_database_url.removeprefix("sqlite:///"))
    outside = tmp_path.parent / "elsewhere"  # outside every root
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_text("x")
    for who in (admin, alice):
        messages = set()
        for path in (data, data / "daemon.json", data / "nothing.json", data / "jobs", outside / "secret",
                     outside / "missing", "/etc/passwd", "/etc/no-such-file", f"{tmp_path}/../elsewhere/secret",
                     *([database, f"{database}-wal"] if daemon.engine.dialect.name == "sqlite" else [])):
            messages.add(refused(submit(who, "diffusion-train", {"dataset": str(path)}), "spec.dataset"))
        assert len(messages) == 1  # the same words for a file that exists and one that does not
        assert "exist" not in messages.pop()
    assert daemon.store.list()[1] == 0


def test_default_roots_home_for_the_local_users_token_on_loopback_only(upgraded_db_url, tmp_path):
    home = os.path.realpath(os.path.expanduser("~"))
    in_home = os.path.join(home, "datasets", "faces")
    loopback = make_daemon(upgraded_db_url, tmp_path / "loopback")
    app = create_app(loopback)
    local, other = as_user(loopback, "me", "admin", app=app), as_user(loopback, "someone", app=app)
    accepted = submit(local, "diffusion-train", {"dataset": "~/datasets/faces"})
    assert accepted.status_code == 201 and accepted.json()["spec"]["dataset"] == in_home
    refused(submit(other, "diffusion-train", {"dataset": in_home}), "spec.dataset")
    refused(submit(local, "diffusion-train", {"dataset": str(tmp_path / "x")}), "spec.dataset")

    # Listening beyond loopback: only the users' own jobs' directories, unless roots are set.
    loopback.settings = replace(loopback.settings, host="0.0.0.0")
    shared_app = create_app(loopback)
    admin = as_user(loopback, "root", "admin", app=shared_app)
    message = refused(submit(admin, "diffusion-train", {"dataset": in_home}), "spec.dataset")
    assert "WATTSCHED_PATH_ROOTS" in message
    own = admin.post("/v1/jobs", json=TRAIN).json()
    assert submit(admin, "diffusion-train", {"dataset": own["workdir"] + "/images"}).status_code == 201
    loopback.engine.dispose()


def test_relative_paths_stay_in_the_jobs_own_directory(daemon):
    admin = as_user(daemon, "root", "admin")  # command jobs: the local user's (admin) token on loopback
    accepted = submit(admin, "command", {"argv": ["true"], "cwd": "code/./src"})
    assert accepted.status_code == 201 and accepted.json()["spec"]["cwd"] == "code/src"
    for cwd in ("..", "../x", "code/../../x"):
        refused(submit(admin, "command", {"argv": ["true"], "cwd": cwd}), "spec.cwd")
    refused(submit(admin, "command", {"argv": ["true"], "cwd": "/etc"}), "spec.cwd")
    refused(submit(admin, "diffusion-train", {"dataset": "../other/images"}), "spec.dataset")


def test_a_root_given_through_a_link_allows_paths_written_either_way(upgraded_db_url, tmp_path):
    real = tmp_path / "mnt" / "datasets"
    real.mkdir(parents=True)
    (tmp_path / "datasets").symlink_to(real)
    daemon = make_daemon(upgraded_db_url, tmp_path / "data", host="0.0.0.0",
                         path_roots=(str(tmp_path / "datasets"),))
    alice = as_user(daemon, "alice")
    for given in (tmp_path / "datasets" / "faces", real / "faces"):
        accepted = submit(alice, "diffusion-train", {"dataset": str(given)})
        assert accepted.status_code == 201 and accepted.json()["spec"]["dataset"] == str(real / "faces")
    refused(submit(alice, "diffusion-train", {"dataset": str(tmp_path / "mnt")}), "spec.dataset")
    daemon.engine.dispose()


def test_path_roots_setting():
    settings = Settings.from_env({"WATTSCHED_PATH_ROOTS": "/data/datasets:/scratch"})
    assert settings.path_roots == ("/data/datasets", "/scratch")
    with pytest.raises(ConfigError, match="WATTSCHED_PATH_ROOTS.*absolute"):
        Settings.from_env({"WATTSCHED_PATH_ROOTS": "/data:relative"})


# --- checked again where the job runs -------------------------------------------------------------------


def test_a_path_is_checked_again_where_the_job_runs(tmp_path):
    workdir, other = tmp_path / "jobs" / "mine", tmp_path / "jobs" / "theirs"
    workdir.mkdir(parents=True)
    other.mkdir()
    (other / "model.safetensors").write_text("weights")
    data = tmp_path / "data"
    data.mkdir()
    context = JobContext(workdir)
    train = DiffusionTrain()
    spec = train.validate({"dataset": str(data)})
    assert train.checked_spec(spec, workdir)["dataset"] == str(data)  # as submitted: fine

    # A link made along the path after submit, or inside the folder, leading elsewhere: refused before any
    # heavy import or read (run raises at once).
    (data / "copy.png").symlink_to(other / "model.safetensors")
    with pytest.raises(SpecError, match="link that leads out") as caught:
        train.run(spec, context)
    assert caught.value.field == "spec.dataset"
    (data / "copy.png").unlink()
    (data / "inner.png").write_text("not an image")
    (data / "fine.png").symlink_to(data / "inner.png")  # a link within the folder is fine
    assert train.checked_spec(spec, workdir)["dataset"] == str(data)
    data.rename(tmp_path / "moved")
    data.symlink_to(other)
    for kind, key in ((train, "dataset"), (DiffusionSample(), "checkpoint")):
        given = kind.validate({key: str(data)})
        with pytest.raises(SpecError, match="no longer leads where it did") as caught:
            kind.run(given, context)
        assert caught.value.field == f"spec.{key}"

    # Relative paths are in the job's directory, and a link there cannot lead out of it.
    (workdir / "out").symlink_to(other)
    command = Command()
    assert command.working_directory(command.validate({"argv": ["true"]}), workdir) == workdir
    assert command.working_directory(command.validate({"argv": ["true"], "cwd": "code"}), workdir) == \
        workdir / "code"
    for cwd in ("out", "../theirs", str(data)):
        with pytest.raises(SpecError) as caught:
            command.working_directory(command.validate({"argv": ["true"], "cwd": cwd}), workdir)
        assert caught.value.field == "spec.cwd"


# --- server paths in views ------------------------------------------------------------------------------


def test_server_paths_are_shown_to_the_submitter_and_admins_only(daemon, shared):
    app = create_app(daemon)
    alice, admin = as_user(daemon, "alice", app=app), as_user(daemon, "root", "admin", app=app)
    made = submit(alice, "diffusion-train", {"dataset": str(shared / "faces")}).json()
    assert made["workdir"] and made["spec"]["dataset"] == str(shared / "faces")
    for who in (alice, admin):
        shown = who.get(f"/v1/jobs/{made['id']}").json()
        assert shown["workdir"] == made["workdir"] and shown["spec"]["dataset"] == str(shared / "faces")
        assert who.get("/v1/jobs").json()["jobs"][0]["workdir"] == made["workdir"]

    job = daemon.store.get(made["id"])
    job.result = {"images_path": "/srv/jobs/x/images.npy", "num_images": 3, "paths": ["/a", "b"]}
    hidden = job_view(job, paths=False)
    assert hidden["workdir"] is None and hidden["spec"]["dataset"] == HIDDEN_PATH
    assert hidden["result"] == {"images_path": HIDDEN_PATH, "num_images": 3, "paths": [HIDDEN_PATH, "b"]}
    assert hidden["spec"]["steps"] == made["spec"]["steps"]
