"""The job child process end to end, as a worker runs it: JSON lines on stdout, exit codes, SIGTERM.

A diffusion job's child imports torch (seconds, more on a busy machine): those tests are marked slow, and the ones
about the process itself run ``synthetic`` jobs.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from workers.diffusion import train
from workers.kinds.diffusion_sample import DiffusionSample
from workers.kinds.diffusion_train import DiffusionTrain
from workers.kinds.synthetic import CHECKPOINT_FILE

TRAIN, SAMPLE, SYNTHETIC = DiffusionTrain.name, DiffusionSample.name, "synthetic"
TINY = {"image_size": 8, "channels": [8, 16], "batch_size": 8, "num_train_timesteps": 20, "max_images": 64}
# Generous: the child imports torch and diffusers (a few seconds) on a machine other tests keep busy.
TIMEOUT_S = 240


def job_command(tmp_path, kind, spec, workdir, name="job.json"):
    job_file = tmp_path / name
    job_file.write_text(json.dumps({"kind": kind, "spec": spec, "workdir": str(workdir)}))
    return [sys.executable, "-m", "workers.job_process", "--job", str(job_file)]


def run_job(tmp_path, kind, spec, workdir, name="job.json"):
    """Run a job to the end; returns (exit code, the parsed stdout lines, stderr)."""
    done = subprocess.run(
        job_command(tmp_path, kind, spec, workdir, name), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    # Every line must parse: anything else on stdout would break the worker reading it.
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


@pytest.mark.slow
def test_a_training_then_a_sampling_job_speak_json_lines_and_exit_0(tmp_path):
    code, events, stderr = run_job(tmp_path, TRAIN, {**TINY, "steps": 3}, tmp_path / "train", "train.json")
    assert code == 0, stderr
    assert events[0] == {"event": "progress", "step": 1, "total": 3, "loss": events[0]["loss"]}
    assert {e["event"] for e in events[:-1]} == {"progress"}
    assert events[-1]["event"] == "result"
    assert events[-1]["result"]["steps_done"] == 3
    assert events[-1]["result"]["checkpoint"] == str(tmp_path / "train" / "checkpoints" / "final")

    spec = {"checkpoint": str(tmp_path / "train"), "num_images": 3, "num_inference_steps": 2}
    code, events, stderr = run_job(tmp_path, SAMPLE, spec, tmp_path / "sample", "sample.json")
    assert code == 0, stderr
    result = events[-1]["result"]
    assert (result["num_images"], result["sampler"], result["num_inference_steps"]) == (3, "ddim", 2)
    assert np.load(result["images_path"]).shape == (3, 8, 8, 1)


def test_a_bad_spec_exits_1_with_an_error_line_and_a_traceback(tmp_path):
    code, events, stderr = run_job(tmp_path, TRAIN, {"steps": "abc"}, tmp_path / "w")
    assert code == 1
    message = "SpecError: spec.steps: must be an integer from 1 to 1000000, got 'abc'"
    assert events == [{"event": "error", "message": message}]
    assert "Traceback" in stderr


def test_a_job_file_without_a_workdir_is_refused(tmp_path):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"kind": TRAIN, "spec": {}}))
    command = [sys.executable, "-m", "workers.job_process", "--job", str(job_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 1
    assert json.loads(done.stdout.splitlines()[-1])["message"].startswith("SpecError: job file: must be")


def test_what_libraries_print_goes_to_stderr(tmp_path):
    # Python prints and writes by C code or subprocesses to file descriptor 1 must all miss the event stream.
    code = (
        "import os; from workers.job_process import _claim_stdout, _emit; events = _claim_stdout(); "
        "print('python print'); os.system('echo from a subprocess'); _emit(events, {'event': 'progress'})"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.stdout == '{"event": "progress"}\n'
    assert "python print" in done.stderr and "from a subprocess" in done.stderr


@pytest.mark.slow
def test_sigterm_stops_training_with_a_checkpoint_to_resume_from(tmp_path):
    # Far more steps than the test waits for, and no periodic checkpoint: only the stop writes one.
    spec = {**TINY, "steps": 1_000_000, "checkpoint_every": 1_000_000}
    workdir = tmp_path / "w"
    process = subprocess.Popen(
        job_command(tmp_path, TRAIN, spec, workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    try:
        first = json.loads(lines.get(timeout=TIMEOUT_S))
        assert first["event"] == "progress"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=TIMEOUT_S)
    events = [json.loads(lines.get_nowait()) for _ in range(lines.qsize())]

    assert code == 143, process.stderr.read()
    result = events[-1]["result"]
    assert result["stopped"] is True and result["steps_done"] >= 1
    done_steps = result["steps_done"]
    assert result["checkpoint"] == str(workdir / "checkpoints" / f"step-{done_steps:06d}")

    resumed = train(DiffusionTrain().parse({**spec, "steps": done_steps + 2}), workdir)
    assert (resumed["resumed_from_step"], resumed["steps_done"]) == (done_steps, done_steps + 2)


def test_a_second_process_of_a_job_waits_until_the_first_has_exited(tmp_path):
    # A job requeued after its run was lost may start while the lost run's process still runs: never both at once.
    workdir = tmp_path / "w"
    long_spec = {"steps": 1_000_000, "step_s": 0.05, "checkpoint_every": 1_000_000}
    first = subprocess.Popen(job_command(tmp_path, SYNTHETIC, long_spec, workdir, "first.json"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    later = []
    try:
        assert json.loads(first.stdout.readline())["event"] == "progress"  # it runs, so it holds the workdir

        def start_waiting(name):
            process = subprocess.Popen(job_command(tmp_path, SYNTHETIC, {"steps": 3, "step_s": 0.01}, workdir, name),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            later.append(process)
            for line in process.stderr:
                if f"waiting for process {first.pid}," in line:
                    return process
            raise AssertionError(f"{name} did not wait; exit code {process.wait()}")

        stopped = start_waiting("stopped.json")  # asked to stop while it waits: it gives up
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(timeout=TIMEOUT_S) == 1
        assert "stopped while waiting" in json.loads(stopped.stdout.read().splitlines()[-1])["message"]

        second = start_waiting("second.json")
        assert second.poll() is None and first.poll() is None
        first.kill()  # as Ray kills the process of a dead worker; its lock goes with it
        out, _ = second.communicate(timeout=TIMEOUT_S)
        assert second.returncode == 0
        assert json.loads(out.splitlines()[-1])["result"]["steps_done"] == 3
    finally:
        for process in (first, *later):
            if process.poll() is None:
                process.kill()
            process.wait()


# --- the synthetic kind: the same life (progress, stop at a checkpoint, resume) in a torch-free process ---


def start_job(tmp_path, kind, spec, workdir, name="job.json"):
    """Start a job process; returns it and a queue of its stdout lines, read as they come (None at the end)."""
    process = subprocess.Popen(job_command(tmp_path, kind, spec, workdir, name), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def remaining_events(lines):
    """The events still to come from a job process's stdout, up to its end."""
    return [json.loads(line) for line in iter(lambda: lines.get(timeout=TIMEOUT_S), None)]


def checkpoint_step(workdir):
    return json.loads((workdir / CHECKPOINT_FILE).read_text())["step"]


def test_a_synthetic_job_runs_to_the_end_with_progress_and_a_final_checkpoint(tmp_path):
    workdir = tmp_path / "w"
    code, events, stderr = run_job(tmp_path, SYNTHETIC, {"steps": 4, "step_s": 0.01, "checkpoint_every": 2}, workdir)
    assert code == 0, stderr
    assert events[0] == {"event": "progress", "step": 1, "total": 4}
    assert events[-2] == {"event": "progress", "step": 4, "total": 4}
    assert events[-1] == {"event": "result", "result": {
        "stopped": False, "steps_done": 4, "total_steps": 4, "resumed_from_step": 0, "steps_this_run": 4,
        "checkpoint": str(workdir / CHECKPOINT_FILE)}}
    assert checkpoint_step(workdir) == 4


def test_sigterm_stops_a_synthetic_job_at_a_checkpoint_and_the_next_run_resumes_from_it(tmp_path):
    workdir = tmp_path / "w"
    spec = {"steps": 1_000_000, "step_s": 0.01, "checkpoint_every": 1_000_000}  # only the stop checkpoints
    process, lines = start_job(tmp_path, SYNTHETIC, spec, workdir)
    try:
        assert json.loads(lines.get(timeout=TIMEOUT_S))["event"] == "progress"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT_S) == 143, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    result = remaining_events(lines)[-1]["result"]
    done = result["steps_done"]
    assert result["stopped"] is True and done >= 1 and checkpoint_step(workdir) == done

    code, events, stderr = run_job(tmp_path, SYNTHETIC, {**spec, "steps": done + 3}, workdir, "resume.json")
    assert code == 0, stderr
    resumed = events[-1]["result"]
    assert (resumed["resumed_from_step"], resumed["steps_this_run"], resumed["steps_done"]) == (done, 3, done + 3)
    assert events[0] == {"event": "progress", "step": done + 1, "total": done + 3}


def test_a_killed_synthetic_job_resumes_from_its_last_periodic_checkpoint(tmp_path):
    workdir = tmp_path / "w"
    spec = {"steps": 1_000_000, "step_s": 0.01, "checkpoint_every": 3}
    process, lines = start_job(tmp_path, SYNTHETIC, spec, workdir)
    try:
        reported = 0
        while reported < 3:  # a report comes after the checkpoint of its step, so one exists from step 3 on
            reported = json.loads(lines.get(timeout=TIMEOUT_S))["step"]
        process.kill()  # no chance to checkpoint: what is left is the periodic checkpoint
        process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    saved = checkpoint_step(workdir)
    assert saved % 3 == 0 and saved >= reported // 3 * 3

    code, events, stderr = run_job(tmp_path, SYNTHETIC, {**spec, "steps": saved + 1}, workdir, "resume.json")
    assert code == 0, stderr
    assert events[-1]["result"]["resumed_from_step"] == saved


def test_a_synthetic_job_process_never_imports_torch(tmp_path):
    code = (
        "import sys; from workers.job_process import run_job; "
        f"result = run_job({{'kind': 'synthetic', 'spec': {{'steps': 2, 'step_s': 0}}, 'workdir': {str(tmp_path)!r}}}, "
        "lambda progress: None, lambda: False); "
        "assert result['steps_done'] == 2, result; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT_S)
