"""The diffusion jobs in-process, on tiny models: training, checkpoints, resume, datasets, sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.diffusion import sample, train
from workers.diffusion.checkpoints import latest_checkpoint, load_training_state, read_meta
from workers.diffusion.data import load_images
from workers.errors import SpecError
from workers.kinds.diffusion_sample import DiffusionSample
from workers.kinds.diffusion_train import DiffusionTrain

#: Tests that train (or sample from) a real model: seconds each, more on a busy machine.
trains_a_model = pytest.mark.slow
# Small enough for a few seconds on one CPU thread.
TINY = {
    "image_size": 8,
    "channels": [8, 16],
    "batch_size": 8,
    "num_train_timesteps": 20,
    "max_images": 64,
}


def tiny_train(**changes):
    return DiffusionTrain().parse({**TINY, **changes})


def stop_after(polls: int):
    """A should_stop that answers True from its (polls + 1)-th call on: the job stops after `polls` steps."""
    calls = []

    def should_stop() -> bool:
        calls.append(None)
        return len(calls) > polls

    return should_stop


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training workdir holding a finished tiny model (20 timesteps, 8x8 grey digits)."""
    workdir = tmp_path_factory.mktemp("trained")
    train(tiny_train(steps=4), workdir)
    return workdir


@trains_a_model
def test_training_writes_checkpoints_and_reports_a_finite_loss(tmp_path):
    reports = []
    result = train(tiny_train(steps=8, checkpoint_every=2), tmp_path, report=reports.append)

    assert result["stopped"] is False
    assert (result["steps_done"], result["total_steps"], result["steps_this_run"]) == (8, 8, 8)
    assert result["images_seen"] == 8 * 8
    assert math.isfinite(result["final_loss"])
    checkpoints = tmp_path / "checkpoints"
    assert result["checkpoint"] == str(checkpoints / "final")
    # The two latest periodic checkpoints are kept beside the final one.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["final", "step-000004", "step-000006"]
    for name in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
                 "training_state.pt", "meta.json", "spec.json"):
        assert (checkpoints / "final" / name).is_file(), name
    assert read_meta(checkpoints / "final")["step"] == 8
    assert json.loads((checkpoints / "final" / "spec.json").read_text())["steps"] == 8
    assert reports[0]["step"] == 1 and reports[-1] == {"step": 8, "total": 8, "loss": result["final_loss"]}


@trains_a_model
def test_a_stopped_job_resumes_where_it_stopped_and_ends_like_an_uninterrupted_one(tmp_path):
    spec = tiny_train(steps=8, checkpoint_every=100)
    uninterrupted = train(spec, tmp_path / "whole")

    stopped = train(spec, tmp_path / "split", should_stop=stop_after(3))
    assert stopped["stopped"] is True and stopped["steps_done"] == 3
    assert stopped["checkpoint"] == str(tmp_path / "split" / "checkpoints" / "step-000003")
    resumed = train(spec, tmp_path / "split")

    assert resumed["stopped"] is False
    assert (resumed["resumed_from_step"], resumed["steps_this_run"], resumed["steps_done"]) == (3, 5, 8)
    # Optimizer and RNG state were restored, so the same batches and noise were drawn as without the stop.
    assert resumed["final_loss"] == pytest.approx(uninterrupted["final_loss"], rel=1e-5)


@trains_a_model
def test_a_finished_job_resumed_again_does_no_more_steps(trained):
    result = train(tiny_train(steps=4), trained)
    assert (result["steps_done"], result["steps_this_run"], result["images_seen"]) == (4, 0, 0)
    assert math.isfinite(result["final_loss"])


@trains_a_model
def test_resume_false_starts_over(tmp_path):
    train(tiny_train(steps=3), tmp_path)
    result = train(tiny_train(steps=2, resume=False), tmp_path)
    assert (result["resumed_from_step"], result["steps_done"]) == (0, 2)
    assert read_meta(latest_checkpoint(tmp_path / "checkpoints"))["step"] == 2


@trains_a_model
def test_resuming_with_a_different_model_is_refused(tmp_path):
    train(tiny_train(steps=2), tmp_path)
    with pytest.raises(SpecError) as caught:
        train(tiny_train(steps=4, channels=[8, 8]), tmp_path)
    assert caught.value.field == "spec.channels"
    assert "resume" in str(caught.value)


@trains_a_model
def test_a_half_written_checkpoint_is_ignored_and_cleaned_up(tmp_path):
    train(tiny_train(steps=4, checkpoint_every=1), tmp_path, should_stop=stop_after(2))
    # What a kill during a save leaves behind: a hidden folder without a complete checkpoint.
    partial = tmp_path / "checkpoints" / ".tmp-step-000003-999"
    (partial / "unet").mkdir(parents=True)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-000002"

    result = train(tiny_train(steps=4, checkpoint_every=1), tmp_path)
    assert (result["resumed_from_step"], result["steps_done"]) == (2, 4)
    assert not partial.exists()


@trains_a_model
def test_bf16_and_gradient_checkpointing_train(tmp_path):
    result = train(tiny_train(steps=2, mixed_precision="bf16", gradient_checkpointing=True), tmp_path)
    assert result["steps_done"] == 2 and math.isfinite(result["final_loss"])


@trains_a_model
def test_fp16_trains_with_a_loss_scaler_whose_state_a_resumed_job_goes_on_with(tmp_path):
    # torch's CPU autocast supports float16 and GradScaler("cpu") scales, so fp16 runs here as on a CUDA GPU.
    spec = tiny_train(steps=6, checkpoint_every=100, mixed_precision="fp16")
    uninterrupted = train(spec, tmp_path / "whole")
    assert math.isfinite(uninterrupted["final_loss"])
    whole = load_training_state(tmp_path / "whole" / "checkpoints" / "final")["scaler"]
    assert whole["scale"] > 0 and whole["_growth_tracker"] > 0  # an active scaler's state, saved

    stopped = train(spec, tmp_path / "split", should_stop=stop_after(3))
    assert load_training_state(Path(stopped["checkpoint"]))["scaler"]["_growth_tracker"] > 0
    resumed = train(spec, tmp_path / "split")

    assert (resumed["resumed_from_step"], resumed["steps_done"]) == (3, 6)
    # The scaler went on from its checkpointed state: a fresh one would have counted only the resumed steps.
    assert load_training_state(tmp_path / "split" / "checkpoints" / "final")["scaler"] == whole
    assert resumed["final_loss"] == pytest.approx(uninterrupted["final_loss"], rel=1e-5)


@trains_a_model
def test_a_job_resumed_in_fp16_from_a_full_precision_checkpoint_starts_a_fresh_scaler(tmp_path):
    train(tiny_train(steps=2), tmp_path)
    assert load_training_state(tmp_path / "checkpoints" / "final")["scaler"] == {}  # no scale without fp16
    result = train(tiny_train(steps=4, mixed_precision="fp16"), tmp_path)
    assert result["resumed_from_step"] == 2 and math.isfinite(result["final_loss"])
    assert load_training_state(tmp_path / "checkpoints" / "final")["scaler"]["_growth_tracker"] == 2


def test_fp16_is_for_training_only_and_halves_the_activations_like_bf16():
    kind = DiffusionTrain()
    full, bf16, fp16 = (kind.validate({"batch_size": 256, "mixed_precision": m}) for m in ("no", "bf16", "fp16"))
    assert kind.memory_bytes(fp16) == kind.memory_bytes(bf16) < kind.memory_bytes(full)
    with pytest.raises(SpecError) as caught:
        DiffusionSample().validate({"checkpoint": "runs/job-1", "mixed_precision": "fp16"})
    assert caught.value.field == "spec.mixed_precision"


def test_digits_are_upscaled_into_minus_one_to_one():
    images = load_images("digits", 16)
    assert images.shape == (1797, 1, 16, 16)
    assert images.min().item() == pytest.approx(-1.0) and images.max().item() <= 1.0


@trains_a_model
def test_a_folder_of_colour_images_trains_a_colour_model(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (width, height) in enumerate([(10, 12), (8, 8), (20, 9), (16, 16)]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8)).save(folder / "grey.jpg")
    (folder / "notes.txt").write_text("not an image")

    images = load_images(str(folder), 8)
    assert images.shape == (5, 3, 8, 8)
    assert -1.0 <= images.min().item() and images.max().item() <= 1.0

    result = train(tiny_train(dataset=str(folder), steps=2), tmp_path / "run")
    config = json.loads((tmp_path / "run" / "checkpoints" / "final" / "unet" / "config.json").read_text())
    assert result["steps_done"] == 2 and config["in_channels"] == 3


def test_a_folder_of_grey_images_gives_one_channel(tmp_path):
    for i in range(3):
        Image.new("L", (8, 8), color=40 * i).save(tmp_path / f"{i}.png")
    images = load_images(str(tmp_path), 8, max_images=2)
    assert images.shape == (2, 1, 8, 8)
    assert images[0].max().item() == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("array", "shape"),
    [
        (np.full((5, 12, 12), 255, dtype=np.uint8), (5, 1, 8, 8)),
        (np.random.default_rng(0).random((4, 8, 10, 3), dtype=np.float32), (4, 3, 8, 8)),
    ],
)
def test_npy_arrays_load_as_training_images(tmp_path, array, shape):
    path = tmp_path / "images.npy"
    np.save(path, array)
    images = load_images(str(path), 8)
    assert images.shape == shape
    assert -1.0 <= images.min().item() and images.max().item() <= 1.0


@trains_a_model
def test_training_on_an_npy_array(tmp_path):
    np.save(tmp_path / "images.npy", np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8))
    result = train(tiny_train(dataset=str(tmp_path / "images.npy"), steps=2), tmp_path / "run")
    assert result["steps_done"] == 2 and math.isfinite(result["final_loss"])


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: str(d / "missing.npy"), "neither"),
        (lambda d: str(d), "holds no"),
        (lambda d: _save(d / "flat.npy", np.zeros((4, 8), dtype=np.uint8)), "has shape"),
        (lambda d: _save(d / "wide.npy", np.full((2, 8, 8), 2.0, dtype=np.float32)), "outside"),
        (lambda d: _write(d / "broken.png", b"not a png"), "cannot read"),
    ],
)
def test_unusable_datasets_are_refused_as_spec_errors(tmp_path, make, problem):
    with pytest.raises(SpecError, match=problem) as caught:
        load_images(make(tmp_path), 8)
    assert caught.value.field == "spec.dataset"


def _save(path, array):
    np.save(path, array)
    return str(path)


def _write(path, data):
    path.write_bytes(data)
    return str(path.parent)


@trains_a_model
@pytest.mark.parametrize(
    ("sampler", "steps", "expected_steps"),
    # The tiny model trained with 20 timesteps: DDPM defaults to all of them, DDIM to 50 capped at 20.
    [("ddpm", None, 20), ("ddim", 5, 5), ("ddim", None, 20)],
)
def test_sampling_writes_images_and_a_grid(trained, tmp_path, sampler, steps, expected_steps):
    given = {"checkpoint": str(trained), "sampler": sampler, "num_inference_steps": steps}
    spec = DiffusionSample().parse({**given, "num_images": 5, "batch_size": 3})
    reports = []
    result = sample(spec, tmp_path, report=reports.append)

    assert result["stopped"] is False
    assert (result["num_images"], result["sampler"], result["num_inference_steps"]) == (5, sampler, expected_steps)
    assert result["checkpoint"] == str(trained / "checkpoints" / "final")
    images = np.load(result["images_path"])
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
    with Image.open(result["grid_path"]) as grid:
        grid.verify()
        assert grid.format == "PNG"
    # progress counts denoising steps of single images: 5 images x the steps
    assert reports[-1] == {"step": 5 * expected_steps, "total": 5 * expected_steps, "images_done": 5}


@trains_a_model
def test_the_same_seed_draws_the_same_images_from_a_checkpoint_folder(trained, tmp_path):
    checkpoint = str(trained / "checkpoints" / "final")
    spec = DiffusionSample().parse({"checkpoint": checkpoint, "num_inference_steps": 3, "num_images": 2})
    first = np.load(sample(spec, tmp_path / "a")["images_path"])
    second = np.load(sample(spec, tmp_path / "b")["images_path"])
    assert np.array_equal(first, second)


@trains_a_model
def test_bf16_sampling_runs(trained, tmp_path):
    given = {"checkpoint": str(trained), "num_inference_steps": 2, "num_images": 2, "mixed_precision": "bf16"}
    spec = DiffusionSample().parse(given)
    assert np.load(sample(spec, tmp_path)["images_path"]).shape == (2, 8, 8, 1)


@trains_a_model
def test_a_stopped_sampling_job_keeps_the_batches_it_finished(trained, tmp_path):
    given = {"checkpoint": str(trained), "num_inference_steps": 2, "num_images": 5, "batch_size": 2}
    spec = DiffusionSample().parse(given)
    result = sample(spec, tmp_path, should_stop=stop_after(3))
    assert result["stopped"] is True and result["num_images"] == 2
    assert np.load(result["images_path"]).shape == (2, 8, 8, 1)


@trains_a_model
def test_more_inference_steps_than_training_timesteps_is_refused(trained, tmp_path):
    spec = DiffusionSample().parse({"checkpoint": str(trained), "num_inference_steps": 21})
    with pytest.raises(SpecError, match="from 1 to 20") as caught:
        sample(spec, tmp_path)
    assert caught.value.field == "spec.num_inference_steps"


def test_a_checkpoint_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(SpecError) as caught:
        sample(DiffusionSample().parse({"checkpoint": str(tmp_path / "nothing")}), tmp_path)
    assert caught.value.field == "spec.checkpoint"
