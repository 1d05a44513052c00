"""Job specs, as each kind validates them: good specs normalise with defaults filled; each bad field is refused by
name, with what it accepts."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from workers.errors import DuplicateKind, JobFailed, MeterError, SpecError, WorkersError
from workers.kinds import builtin_kinds
from workers.kinds.diffusion_sample import SampleSpec
from workers.kinds.diffusion_train import TrainSpec

TRAIN, SAMPLE, SYNTHETIC = "diffusion-train", "diffusion-sample", "synthetic"
KINDS = builtin_kinds()


def validate(kind, spec):
    """What submitting ``spec`` for ``kind`` stores: the kind's normalised spec."""
    return KINDS.get(kind).validate(spec)

TRAIN_DEFAULTS = {
    "dataset": "digits",
    "image_size": 16,
    "channels": [16, 32],
    "layers_per_block": 1,
    "steps": 200,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "num_train_timesteps": 1000,
    "mixed_precision": "no",
    "gradient_checkpointing": False,
    "checkpoint_every": 50,
    "seed": 0,
    "resume": True,
    "max_images": None,
}
SAMPLE_DEFAULTS = {
    "checkpoint": "runs/job-1",
    "sampler": "ddim",
    "num_inference_steps": None,
    "num_images": 16,
    "batch_size": 16,
    "seed": 0,
    "mixed_precision": "no",
}
SYNTHETIC_DEFAULTS = {"steps": 100, "step_s": 0.05, "checkpoint_every": 10, "memory_mib": 0}
DEFAULTS = {TRAIN: TRAIN_DEFAULTS, SAMPLE: SAMPLE_DEFAULTS, SYNTHETIC: SYNTHETIC_DEFAULTS}


@pytest.mark.parametrize(
    ("kind", "given", "normalised"),
    [
        (TRAIN, {}, None),
        (TRAIN, {"channels": (8, 16), "learning_rate": 1}, {"channels": [8, 16], "learning_rate": 1.0}),
        (TRAIN, {"dataset": "/data/faces", "image_size": 64, "channels": [32, 64, 64, 128]}, None),
        (TRAIN, {"mixed_precision": "bf16", "gradient_checkpointing": True, "resume": False, "max_images": 9}, None),
        (TRAIN, {"image_size": 8, "channels": [8], "steps": 5}, None),
        (SAMPLE, {"checkpoint": "runs/job-1"}, None),
        (SAMPLE, {"checkpoint": "runs/job-1", "sampler": "ddpm", "num_inference_steps": 1000}, None),
        (SAMPLE, {"checkpoint": "runs/job-1", "num_images": 1, "batch_size": 1, "seed": 7}, None),
        (SAMPLE, {"checkpoint": "runs/job-1", "mixed_precision": "bf16"}, None),
        (SYNTHETIC, {}, None),
        (SYNTHETIC, {"steps": 3, "step_s": 0, "checkpoint_every": 1},
         {"steps": 3, "step_s": 0.0, "checkpoint_every": 1}),
        (SYNTHETIC, {"step_s": 2}, {"step_s": 2.0}),
    ],
)
def test_good_specs_normalise_with_defaults(kind, given, normalised):
    """normalised: how the given fields read after parsing; None when they read as given."""
    spec = validate(kind, given)
    assert spec == {**DEFAULTS[kind], **(given if normalised is None else normalised)}
    # The normalised dict is JSON and validates to itself.
    assert validate(kind, json.loads(json.dumps(spec))) == spec


@pytest.mark.parametrize(
    ("kind", "given", "field", "accepted"),
    [
        (TRAIN, {"steps": "abc"}, "spec.steps", "an integer from 1 to 1000000"),
        (TRAIN, {"steps": 0}, "spec.steps", "an integer from 1 to 1000000"),
        (TRAIN, {"steps": True}, "spec.steps", "an integer from 1 to 1000000"),
        (TRAIN, {"steps": 2.0}, "spec.steps", "an integer from 1 to 1000000"),
        (TRAIN, {"dataset": ""}, "spec.dataset", "'digits'"),
        (TRAIN, {"dataset": 3}, "spec.dataset", "'digits'"),
        (TRAIN, {"image_size": 4}, "spec.image_size", "an integer from 8 to 256"),
        (TRAIN, {"image_size": 512}, "spec.image_size", "an integer from 8 to 256"),
        (TRAIN, {"image_size": 20, "channels": [8, 16, 32, 32]}, "spec.image_size", "a multiple of 8"),
        (TRAIN, {"channels": []}, "spec.channels", "a list of 1 to 4 integers"),
        (TRAIN, {"channels": [8, 12]}, "spec.channels", "multiple of 8"),
        (TRAIN, {"channels": 16}, "spec.channels", "a list of 1 to 4 integers"),
        (TRAIN, {"channels": [8, 16, 32, 64, 128]}, "spec.channels", "a list of 1 to 4 integers"),
        (TRAIN, {"layers_per_block": 0}, "spec.layers_per_block", "an integer from 1 to 4"),
        (TRAIN, {"batch_size": 0}, "spec.batch_size", "an integer from 1 to 4096"),
        (TRAIN, {"learning_rate": 0}, "spec.learning_rate", "greater than 0"),
        (TRAIN, {"learning_rate": float("nan")}, "spec.learning_rate", "greater than 0"),
        (TRAIN, {"learning_rate": "1e-3"}, "spec.learning_rate", "greater than 0"),
        (TRAIN, {"num_train_timesteps": 1}, "spec.num_train_timesteps", "an integer from 2 to 10000"),
        (TRAIN, {"mixed_precision": "fp8"}, "spec.mixed_precision", "one of 'no', 'bf16', 'fp16'"),
        (TRAIN, {"gradient_checkpointing": "yes"}, "spec.gradient_checkpointing", "true or false"),
        (TRAIN, {"checkpoint_every": 0}, "spec.checkpoint_every", "an integer from 1 to 1000000"),
        (TRAIN, {"seed": -1}, "spec.seed", "an integer from 0 to 4294967295"),
        (TRAIN, {"resume": 1}, "spec.resume", "true or false"),
        (TRAIN, {"max_images": 0}, "spec.max_images", "null or an integer from 1"),
        (TRAIN, {"checkpoint": "x"}, "spec.checkpoint", "dataset, image_size"),
        (SAMPLE, {}, "spec.checkpoint", "a path to a checkpoint directory"),
        (SAMPLE, {"checkpoint": None}, "spec.checkpoint", "a path to a checkpoint directory"),
        (SAMPLE, {"checkpoint": ""}, "spec.checkpoint", "a path to a checkpoint directory"),
        (SAMPLE, {"checkpoint": "c", "sampler": "euler"}, "spec.sampler", "one of 'ddpm', 'ddim'"),
        (SAMPLE, {"checkpoint": "c", "num_inference_steps": 0}, "spec.num_inference_steps", "null or an integer"),
        (SAMPLE, {"checkpoint": "c", "num_images": 0}, "spec.num_images", "an integer from 1 to 100000"),
        (SAMPLE, {"checkpoint": "c", "batch_size": "8"}, "spec.batch_size", "an integer from 1 to 4096"),
        (SAMPLE, {"checkpoint": "c", "steps": 10}, "spec.steps", "checkpoint, sampler"),
        (SAMPLE, ["checkpoint"], "spec", "a JSON object"),
        (SYNTHETIC, {"steps": 0}, "spec.steps", "an integer from 1 to 10000000"),
        (SYNTHETIC, {"step_s": -0.1}, "spec.step_s", "a number from 0 to 3600"),
        (SYNTHETIC, {"step_s": float("inf")}, "spec.step_s", "a number from 0 to 3600"),
        (SYNTHETIC, {"checkpoint_every": None}, "spec.checkpoint_every", "an integer from 1"),
        (SYNTHETIC, {"sleep": 1}, "spec.sleep", "steps, step_s, checkpoint_every"),
        ("diffusion", {}, "kind", "one of 'diffusion-train', 'diffusion-sample', 'synthetic'"),
        (["diffusion-train"], {}, "kind", "one of 'diffusion-train'"),
    ],
)
def test_bad_fields_are_named_with_what_they_accept(kind, given, field, accepted):
    with pytest.raises(SpecError) as caught:
        validate(kind, given)
    assert caught.value.field == field
    assert accepted in caught.value.accepted
    message = str(caught.value)
    assert message.startswith(field + ":")
    assert accepted in message


def test_the_message_shows_the_rejected_value():
    with pytest.raises(SpecError, match=r"^spec\.steps: must be an integer from 1 to 1000000, got 'abc'$"):
        validate(TRAIN, {"steps": "abc"})


def test_constructing_a_spec_directly_validates_it_too():
    with pytest.raises(SpecError) as caught:
        TrainSpec(batch_size=-1)
    assert caught.value.field == "spec.batch_size"
    assert SampleSpec(checkpoint="c").sampler == "ddim"


def test_the_built_in_kinds_are_the_two_diffusion_jobs_the_synthetic_load_commands_and_the_gan_and_vae():
    assert KINDS.names() == ["diffusion-train", "diffusion-sample", "synthetic", "command", "gan-train", "vae-train",
                             "generative-sample"]
    assert {k.name: k.interruptible for k in KINDS} == {TRAIN: True, SAMPLE: False, SYNTHETIC: True, "command": True,
                                                        "gan-train": False, "vae-train": False,
                                                        "generative-sample": False}


def test_a_kind_registered_twice_is_refused_and_an_unknown_one_lists_the_valid_names():
    with pytest.raises(DuplicateKind, match="'synthetic' is already registered"):
        KINDS.register(KINDS.get(SYNTHETIC))
    with pytest.raises(SpecError, match=r"^kind: must be one of 'diffusion-train', 'diffusion-sample', 'synthetic', "
                                        r"'command', 'gan-train', 'vae-train', 'generative-sample', got 'shell'$"):
        KINDS.get("shell")
    assert "shell" not in KINDS and SYNTHETIC in KINDS


def test_spec_error_survives_pickling():
    # Ray carries exceptions from a worker to the controller by pickling them.
    error = SpecError("spec.steps: must be ...", field="spec.steps", accepted="an integer")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.field, copy.accepted) == (str(error), error.field, error.accepted)


def test_every_workers_error_shares_one_base():
    for error_class in (SpecError, JobFailed, MeterError, DuplicateKind):
        assert issubclass(error_class, WorkersError)


def test_importing_the_kinds_does_not_import_torch():
    # The scheduler validates specs and estimates work on submit and must not pay for (or need) torch.
    code = ("import sys, workers.kinds; workers.kinds.builtin_kinds(); "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
