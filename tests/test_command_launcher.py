"""The pieces of a command job that need no Ray: a node's rank layout, the launcher on real processes (failure of
one rank, the stop protocol), the progress file, the command spec, and who may submit command jobs."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest

from scheduler.api.command_access import check_command_access, listens_on_loopback
from scheduler.cli.commands import command_spec, split_command_line
from scheduler.config import Settings
from scheduler.daemon.estimates import SAFETY_FACTOR, WorkEstimator
from scheduler.errors import ConfigError, Forbidden
from workers.errors import SpecError
from workers.kinds import builtin_kinds
from workers.launcher import Launcher, NodeLayout, ProcessSpec, describe_returncode, free_port
from workers.progress_file import ProgressFile, parse_progress_line

#: Bounds a test that fails; processes here start in well under a second.
TIMEOUT_S = 120
COMMAND = builtin_kinds().get("command")


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def processes(tmp_path, *codes: str) -> list[ProcessSpec]:
    return [ProcessSpec(rank, python(code), {"PATH": "/usr/bin:/bin"}, str(tmp_path))
            for rank, code in enumerate(codes)]


def wait_for_file(path, timeout_s: float = TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} not written within {timeout_s} s"
        time.sleep(0.02)
    return path.read_text()


# --- the rank layout -------------------------------------------------------------------------------------------


def test_per_gpu_gives_each_process_torchruns_environment_and_its_own_gpu():
    layout = NodeLayout(("0", "1"), "per-gpu", master_port=29500)
    assert [rank for rank, _ in layout.rank_envs()] == [0, 1]
    for local_rank, (rank, env) in enumerate(layout.rank_envs()):
        assert env == {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "NODE_RANK": "0", "GROUP_RANK": "0",
                       "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(local_rank),
                       "LOCAL_WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": str(local_rank)}


def test_the_second_node_of_a_gang_numbers_its_ranks_after_the_first_nodes():
    layout = NodeLayout((4, 5), "per-gpu", node_rank=1, nnodes=2, master_addr="10.0.0.1", master_port=1234)
    assert layout.world_size == 4
    assert [(r, e["LOCAL_RANK"], e["CUDA_VISIBLE_DEVICES"]) for r, e in layout.rank_envs()] == [(2, "0", "4"),
                                                                                                (3, "1", "5")]
    assert {e["MASTER_ADDR"] for _, e in layout.rank_envs()} == {"10.0.0.1"}


def test_per_node_is_one_process_with_every_gpu_and_the_nodes_place():
    [(rank, env)] = NodeLayout((0, 1, 2), "per-node", node_rank=1, nnodes=2, master_port=7).rank_envs()
    assert rank == 1
    assert env == {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "7", "NODE_RANK": "1", "NNODES": "2",
                   "CUDA_VISIBLE_DEVICES": "0,1,2"}
    with pytest.raises(ValueError, match="mode"):
        NodeLayout((0,), "per-core")


def test_a_free_port_can_be_bound():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


# --- the launcher on real processes ----------------------------------------------------------------------------


def test_processes_that_all_succeed_end_without_a_failure(tmp_path):
    launcher = Launcher(processes(tmp_path, "pass", "pass"), grace_s=60)
    launcher.start()
    assert launcher.wait(TIMEOUT_S)
    assert launcher.returncodes == {0: 0, 1: 0} and launcher.failure is None and not launcher.signalled


def test_a_failing_rank_stops_the_others_with_the_stop_signal_and_is_named(tmp_path):
    # Rank 0 waits for its stop signal (SIGUSR1 here) and says so; rank 1 fails with code 3.
    stopped = tmp_path / "rank0-stopped"
    rank0 = ("import signal, sys, time\n"
             f"signal.signal(signal.SIGUSR1, lambda *a: (open({str(stopped)!r}, 'w').write('stopped'), sys.exit(0)))\n"
             "open('ready', 'w').close()\n"
             "while True: time.sleep(0.05)\n")
    rank1 = ("import os, time\n"
             "while not os.path.exists('ready'): time.sleep(0.02)\n"
             "raise SystemExit(3)\n")
    launcher = Launcher(processes(tmp_path, rank0, rank1), signal.SIGUSR1, grace_s=60)
    launcher.start()
    assert launcher.wait(TIMEOUT_S)
    assert (launcher.failure.rank, launcher.failure.returncode, launcher.failure.cause) == (1, 3, "exited with code 3")
    assert launcher.returncodes[0] == 0 and stopped.read_text() == "stopped"  # it had its chance to checkpoint
    assert launcher.stop_reason == "rank 1 exited with code 3"


def test_a_rank_that_ignores_the_stop_signal_is_killed_after_the_grace(tmp_path):
    ignores = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('ready', 'w').write('1')\n"
               "while True: time.sleep(0.05)\n")
    launcher = Launcher(processes(tmp_path, ignores), signal.SIGTERM, grace_s=0.5)
    launcher.start()
    wait_for_file(tmp_path / "ready")
    assert launcher.stop() is True and launcher.stop() is False  # one signal, however often it is asked
    assert launcher.wait(TIMEOUT_S)
    assert launcher.returncodes == {0: -signal.SIGKILL} and launcher.killed and launcher.failure is None


def test_a_sigkill_the_launcher_did_not_send_reads_as_a_likely_out_of_memory_kill(tmp_path):
    launcher = Launcher(processes(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                                  "import time; time.sleep(600)"), grace_s=60)
    launcher.start()
    assert launcher.wait(TIMEOUT_S)
    assert launcher.failure.rank == 0
    assert launcher.failure.cause == "was killed by SIGKILL (killed: out of memory?)"
    assert launcher.returncodes[1] == -signal.SIGTERM  # stopped by the launcher, with the default stop signal
    assert describe_returncode(-signal.SIGKILL, killed_by_us=True) == "was killed by SIGKILL"
    assert describe_returncode(-signal.SIGSEGV) == "was killed by SIGSEGV"


def test_a_signal_reaches_the_helpers_of_a_process_through_its_group(tmp_path):
    # The process starts a helper of its own (as a data loader would) and then waits; both must stop.
    helper = tmp_path / "helper.pid"
    code = ("import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            f"open({str(helper)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(600)\n")
    launcher = Launcher(processes(tmp_path, code), grace_s=60)
    launcher.start()
    helper_pid = int(wait_for_file(helper))
    launcher.stop()
    assert launcher.wait(TIMEOUT_S)
    import psutil

    deadline = time.monotonic() + TIMEOUT_S
    while psutil.pid_exists(helper_pid) and psutil.Process(helper_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the helper outlived the stop signal to its group"
        time.sleep(0.02)


def test_a_command_that_cannot_be_started_raises_and_leaves_nothing_running(tmp_path):
    specs = [*processes(tmp_path, "import time; time.sleep(600)"),
             ProcessSpec(1, ("/no/such/program",), {}, str(tmp_path))]
    launcher = Launcher(specs, grace_s=60)
    with pytest.raises(OSError):
        launcher.start()
    assert all(p.poll() is not None for p in launcher.popens)


# --- the progress file -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("line,good", [
    ('{"step": 120, "total": 5000}', True),
    ('{"step": 1, "loss": 0.5, "note": "warm-up"}', True),
    ("not json", False),
    ("[1, 2]", False),
    ('{"step": -1}', False),
    ('{"step": "ten"}', False),
    ('{"total": true}', False),
    ('{"step": NaN}', False),
    ('{"loss": Infinity}', False),
    ('{"step": 1, "pad": "' + "x" * 5000 + '"}', False),
    ('{"step": 1, "note": "\\ud800"}', False),  # a lone surrogate: PostgreSQL cannot store it
    ('{"step": 1, "note": "a\\u0000b"}', False),  # nor a NUL
    ('{"step": 1, "\\u0000": 2}', False),
    ('{"step": 1, "note": "\u00e9t\u00e9"}', True),
])
def test_progress_lines_are_json_objects_with_numeric_step_and_total(line, good):
    assert (parse_progress_line(line) is not None) == good


def test_the_progress_file_gives_the_latest_good_line_and_counts_the_bad_ones(tmp_path):
    path = tmp_path / "progress.jsonl"
    path.write_text('{"step": 1, "total": 9}\n')  # an earlier run's: not this one's
    progress = ProgressFile(path)
    assert progress.read() is None
    with open(path, "a") as f:
        f.write('{"step": 2, "total": 9}\nbroken\n{"step": 3, "tot')
    assert progress.read() == {"step": 2, "total": 9}
    assert (progress.lines, progress.ignored) == (2, 1)
    with open(path, "a") as f:
        f.write('al": 9}\n' + "y" * 10_000)  # a half-written line completes; a huge one never counts
    assert progress.read() == {"step": 3, "total": 9}
    with open(path, "a") as f:
        f.write("y\n" + json.dumps({"step": 4, "total": 9}) + "\n")
    assert progress.read() == {"step": 4, "total": 9}
    assert (progress.lines, progress.ignored) == (5, 2)


def test_a_missing_progress_file_is_no_progress(tmp_path):
    assert ProgressFile(tmp_path / "none.jsonl").read() is None


# --- the command spec ------------------------------------------------------------------------------------------


def test_a_command_spec_is_normalised():
    assert COMMAND.validate({"argv": ("python", "train.py")}) == {"argv": ["python", "train.py"], "cwd": None,
                                                                  "env": None}
    spec = {"argv": ["bash", "-c", "echo hi"], "cwd": "code", "env": {"HF_HOME": "/data/hf"}}
    assert COMMAND.validate(spec) == spec
    assert COMMAND.argv(spec) == ["bash", "-c", "echo hi"]


@pytest.mark.parametrize("spec,field", [
    ({}, "spec.argv"),
    ({"argv": []}, "spec.argv"),
    ({"argv": "python train.py"}, "spec.argv"),
    ({"argv": [""]}, "spec.argv"),
    ({"argv": ["python", 3]}, "spec.argv"),
    ({"argv": ["python", "a\0b"]}, "spec.argv"),
    ({"argv": ["x" * 4097]}, "spec.argv"),
    ({"argv": ["x"] * 257}, "spec.argv"),
    ({"argv": ["python"], "cwd": ""}, "spec.cwd"),
    ({"argv": ["python"], "cwd": "a\0"}, "spec.cwd"),
    ({"argv": ["python"], "env": {"A": 1}}, "spec.env"),
    ({"argv": ["python"], "env": {"A=B": "1"}}, "spec.env"),
    ({"argv": ["python"], "env": {"A": "x\0"}}, "spec.env"),
    ({"argv": ["python"], "env": ["A=1"]}, "spec.env"),
    ({"argv": ["python"], "env": {"WATTSCHED_JOB_DIR": "/tmp"}}, "spec.env.WATTSCHED_JOB_DIR"),
    ({"argv": ["python"], "shell": True}, "spec.shell"),
])
def test_a_bad_command_spec_names_the_field(spec, field):
    with pytest.raises(SpecError) as caught:
        COMMAND.validate(spec)
    assert caught.value.field == field


def test_a_command_jobs_length_is_unknown_until_its_own_progress_and_runs_tell():
    spec = COMMAND.validate({"argv": ["python", "train.py"]})
    assert COMMAND.work_units(spec) is None and COMMAND.units_done(spec, {"stopped": False}) is None
    estimator = WorkEstimator([])
    assert estimator.duration_s("command", spec) is None
    assert estimator.duration_s("command", spec, {"step": 100, "total": 400}) is None  # no time measured yet
    # 100 of 400 steps in 51 s of one run (1 s of it start-up): 300 more steps take 150 s
    remaining_s = estimator.duration_s("command", spec, {"step": 100, "total": 400}, (51.0, 1))
    assert remaining_s == pytest.approx(SAFETY_FACTOR * (COMMAND.startup_s + 300 * 0.5))


# --- the command line ------------------------------------------------------------------------------------------


def test_everything_after_the_double_dash_of_submit_is_the_command_line():
    argv, command = split_command_line(["submit", "command", "--gpus", "2", "--", "python", "t.py", "--lr", "1e-4"])
    assert argv == ["submit", "command", "--gpus", "2"] and command == ["python", "t.py", "--lr", "1e-4"]
    assert split_command_line(["list", "--state", "running"]) == (["list", "--state", "running"], None)
    spec = command_spec({}, command, "code", ["A=1", "B=x=y"])
    assert spec == {"argv": ["python", "t.py", "--lr", "1e-4"], "cwd": "code", "env": {"A": "1", "B": "x=y"}}
    with pytest.raises(ValueError, match="after --"):
        command_spec({}, None, None, [])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        command_spec({}, ["x"], None, ["novalue"])


def test_the_cli_refuses_a_command_line_for_another_kind(capsys):
    from scheduler.cli.commands import main

    assert main(["--url", "http://127.0.0.1:9", "--token", "t", "submit", "synthetic", "--", "python"]) == 1
    assert "for command jobs" in capsys.readouterr().err


# --- who may submit command jobs -------------------------------------------------------------------------------


@pytest.mark.parametrize("setting,host,admin,allowed", [
    ("loopback", "127.0.0.1", True, True),
    ("loopback", "::1", True, True),
    ("loopback", "localhost", True, True),
    ("loopback", "127.0.0.1", False, False),  # another local user's token would run code as the daemon's user
    ("loopback", "0.0.0.0", True, False),
    ("loopback", "10.1.2.3", True, False),
    ("admins", "10.1.2.3", True, True),
    ("admins", "10.1.2.3", False, False),
    ("all", "10.1.2.3", False, True),
    ("off", "127.0.0.1", True, False),
])
def test_who_may_submit_command_jobs(setting, host, admin, allowed):
    if allowed:
        check_command_access(setting, host, admin)
    else:
        with pytest.raises(Forbidden) as caught:
            check_command_access(setting, host, admin)
        assert caught.value.field == "kind" and "WATTSCHED_COMMAND_JOBS" in str(caught.value)


def test_the_setting_is_read_and_checked():
    assert Settings.from_env(environ={}).command_jobs == "loopback"
    assert Settings.from_env(environ={"WATTSCHED_COMMAND_JOBS": "admins"}).command_jobs == "admins"
    with pytest.raises(ConfigError, match="WATTSCHED_COMMAND_JOBS='everyone' must be one of off, loopback"):
        Settings.from_env(environ={"WATTSCHED_COMMAND_JOBS": "everyone"})
    assert listens_on_loopback("127.0.0.2") and not listens_on_loopback("example.org")
