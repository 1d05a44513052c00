"""Job kinds: what the scheduler is told of a job's work is what its runner does.

The estimate of a job's length is its kind's ``work_units`` x a rate; the runner reports progress as
``{"step", "total"}``. These must be the same units and the same total, or estimates drift from the runs (a
default DDPM sampling job was estimated at 800 units while it ran 16,000).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock

from scheduler.daemon.estimates import SAFETY_FACTOR, WorkEstimator
from scheduler.errors import InvalidRequest
from scheduler.store.engine import make_engine, make_session_factory, upgrade
from scheduler.store.jobs import JobStore
from workers.diffusion import train
from workers.kinds import JobContext, JobKind, KindRegistry, builtin_kinds
from workers.kinds.diffusion_train import DiffusionTrain

KINDS = builtin_kinds()
# Small enough for a few seconds on one CPU thread; the schedule length is the default (1000 timesteps), which
# is what a DDPM job without num_inference_steps runs.
TINY_MODEL = {"image_size": 8, "channels": [8, 16], "batch_size": 8, "max_images": 64}


@pytest.fixture(scope="module")
def default_checkpoint(tmp_path_factory) -> Path:
    """A training workdir whose model has the default noise schedule (one training step: only its shape counts)."""
    workdir = tmp_path_factory.mktemp("trained")
    train(DiffusionTrain().parse({**TINY_MODEL, "steps": 1}), workdir)
    # A GAN generator beside it, for generative-sample (its file does not clash with the diffusion checkpoints).
    KINDS.get("gan-train").run(KINDS.get("gan-train").validate({"steps": 1, "hidden": 16}), JobContext(workdir))
    return workdir


def first_report(kind: JobKind, spec: dict[str, Any], workdir: Path) -> tuple[dict, dict]:
    """Run a job of ``kind`` until its first progress report, then stop it; returns (that report, the result)."""
    reports: list[dict] = []
    result = kind.run(spec, JobContext(workdir, reports.append, lambda: bool(reports)))
    assert reports, result
    return reports[0], result


def default_specs(checkpoint: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every built-in kind with its default spec (sampling needs a checkpoint, so both samplers get one)."""
    return [("diffusion-train", {}), ("diffusion-sample", {"checkpoint": str(checkpoint)}),
            ("diffusion-sample", {"checkpoint": str(checkpoint), "sampler": "ddpm"}), ("synthetic", {}),
            ("gan-train", {}), ("vae-train", {}), ("generative-sample", {"checkpoint": str(checkpoint)})]


def test_every_built_in_kind_has_a_default_spec_here():
    # but the command kind's: its work is what its own progress lines say (tests/test_command_launcher.py)
    assert {name for name, _ in default_specs(Path("x"))} == set(KINDS.names()) - {"command"}


@pytest.mark.parametrize("case", range(len(default_specs(Path("x")))))
def test_the_estimated_work_of_a_default_spec_is_the_total_its_runner_reports(case, default_checkpoint, tmp_path):
    name, given = default_specs(default_checkpoint)[case]
    kind = KINDS.get(name)
    spec = kind.validate(given)
    report, result = first_report(kind, spec, tmp_path / "job")
    assert report["total"] == kind.work_units(spec)
    assert result["stopped"] is True


def test_a_default_ddpm_sampling_job_is_estimated_at_the_16000_image_steps_it_runs(default_checkpoint, tmp_path):
    kind = KINDS.get("diffusion-sample")
    spec = kind.validate({"checkpoint": str(default_checkpoint), "sampler": "ddpm"})
    report, _ = first_report(kind, spec, tmp_path)
    # 16 images x the checkpoint's 1000 timesteps; one step of a batch of 16 counts 16
    assert (report["step"], report["total"]) == (16, 16_000)
    assert kind.work_units(spec) == 16_000
    nominal = WorkEstimator([])
    assert nominal.duration_s("diffusion-sample", spec) == pytest.approx(
        SAFETY_FACTOR * (kind.startup_s + 16_000 * kind.nominal_s_per_unit(spec)))


@pytest.mark.parametrize("given", [{"num_images": 5, "batch_size": 2, "num_inference_steps": 3},
                                   {"num_images": 3, "batch_size": 3, "num_inference_steps": 2, "sampler": "ddpm"}])
def test_a_finished_sampling_run_did_the_work_it_was_estimated_at(given, default_checkpoint, tmp_path):
    kind = KINDS.get("diffusion-sample")
    spec = kind.validate({"checkpoint": str(default_checkpoint), **given})
    reports: list[dict] = []
    result = kind.run(spec, JobContext(tmp_path, reports.append))
    expected = given["num_images"] * given["num_inference_steps"]
    assert reports[-1]["step"] == reports[-1]["total"] == expected == kind.work_units(spec)
    assert kind.units_done(spec, result) == expected  # what estimates learn a rate from


def test_a_resumed_run_is_credited_only_with_the_steps_it_did(tmp_path):
    kind = KINDS.get("synthetic")
    spec = kind.validate({"steps": 6, "step_s": 0, "checkpoint_every": 100})
    stops = iter([False, False, True])
    first = kind.run(spec, JobContext(tmp_path, should_stop=lambda: next(stops)))
    second = kind.run(spec, JobContext(tmp_path))
    assert (first["steps_done"], second["resumed_from_step"], second["steps_done"]) == (2, 2, 6)
    assert (kind.units_done(spec, first), kind.units_done(spec, second)) == (2, 4)


def test_estimates_ask_the_kind_for_its_start_up_rate_and_whether_progress_survives_a_stop():
    estimator = WorkEstimator([])
    synthetic, sample = KINDS.get("synthetic"), KINDS.get("diffusion-sample")
    # the synthetic load's nominal rate is its spec's pace
    assert estimator.duration_s("synthetic", {"steps": 40, "step_s": 0.5}) == pytest.approx(
        SAFETY_FACTOR * (synthetic.startup_s + 40 * 0.5))
    # it resumes from its checkpoint, so what is done is not run again...
    assert estimator.duration_s("synthetic", {"steps": 40, "step_s": 0.5}, {"step": 30, "total": 40}) == (
        pytest.approx(SAFETY_FACTOR * (synthetic.startup_s + 10 * 0.5)))
    # ...while a sampling job starts over
    spec = sample.validate({"checkpoint": "/x", "num_inference_steps": 10})
    assert estimator.duration_s("diffusion-sample", spec, {"step": 100, "total": 160}) == pytest.approx(
        SAFETY_FACTOR * (sample.startup_s + 160 * sample.nominal_s_per_unit(spec)))


class Echo(JobKind):
    """A kind of the tests' own: what registering a kind outside the built-ins takes."""

    name = "echo"
    startup_s = 0.1

    def validate(self, spec: Any) -> dict[str, Any]:
        return {"words": list(spec.get("words", []))}

    def work_units(self, spec):
        return float(len(spec["words"]))

    def nominal_s_per_unit(self, spec):
        return 0.01

    def run(self, spec, context):
        return {"stopped": False, "words": spec["words"]}


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(db_url, tmp_path):
    engine = make_engine(db_url)
    upgrade(engine)
    yield JobStore(make_session_factory(engine), FakeClock(T0), tmp_path / "jobs",
                   kinds=KindRegistry([*builtin_kinds(), Echo()]))
    engine.dispose()


def test_the_store_submits_any_registered_kind_and_lets_only_interruptible_kinds_be_interruptible(store):
    echo = store.submit(store.validate("echo", {"words": ("a", "b")}))
    assert (echo.kind, echo.spec) == ("echo", {"words": ["a", "b"]})
    synthetic = store.submit(store.validate("synthetic", {"steps": 5}, interruptible=True))
    assert synthetic.interruptible and synthetic.spec == {"steps": 5, "step_s": 0.05, "checkpoint_every": 10,
                                                             "memory_mib": 0}
    for name, spec in (("echo", {}), ("diffusion-sample", {"checkpoint": "/x"})):
        with pytest.raises(InvalidRequest, match=f"interruptible: {name} jobs cannot be suspended and resumed; "
                                                 "kinds that can: diffusion-train, synthetic, command") as caught:
            store.validate(name, spec, interruptible=True)
        assert caught.value.field == "interruptible"
    with pytest.raises(InvalidRequest,
                       match="'diffusion-train', 'diffusion-sample', 'synthetic', 'command', 'gan-train', 'vae-train', "
                             "'generative-sample', 'echo', got 'x'"):
        store.validate("x", {})


def test_a_sampling_job_naming_its_training_job_is_estimated_at_the_steps_that_job_s_checkpoint_gives(store):
    sample_kind = KINDS.get("diffusion-sample")
    trainer = store.submit(store.validate("diffusion-train", {**TINY_MODEL, "steps": 1, "num_train_timesteps": 20}))
    given = {"checkpoint": f"job:{trainer.id}", "num_images": 3, "batch_size": 2}
    ddpm = store.validate("diffusion-sample", {**given, "sampler": "ddpm"}).spec
    ddim = store.validate("diffusion-sample", given).spec
    # the training job's schedule decides the steps: DDPM all 20 of them, DDIM 50 capped at 20
    assert (ddpm["checkpoint"], ddpm["num_inference_steps"], ddim["num_inference_steps"]) == (trainer.workdir, 20, 20)
    assert sample_kind.work_units(ddpm) == 3 * 20
    # what its runner then does, once the training job has written its checkpoint there
    train(DiffusionTrain().parse(trainer.spec), trainer.workdir)
    report, _ = first_report(sample_kind, ddpm, Path(store.jobs_dir) / "sample")
    assert report["total"] == sample_kind.work_units(ddpm)
    # a path tells the scheduler nothing of the schedule: the default training schedule is assumed
    by_path = store.validate("diffusion-sample", {"checkpoint": trainer.workdir, "sampler": "ddpm"}).spec
    assert by_path["num_inference_steps"] is None and sample_kind.work_units(by_path) == 16 * 1000
    with pytest.raises(InvalidRequest, match="^spec.checkpoint: no job with id 'nope'$") as caught:
        store.validate("diffusion-sample", {"checkpoint": "job:nope"})
    assert caught.value.field == "spec.checkpoint"
