"""The ``diffusion-train`` kind: a small DDPM trained on a dataset, resumable from its checkpoints.

This module holds what the scheduler needs (the spec, the work, the rates) and stays torch-free; the training
loop itself is ``workers.diffusion.train``, imported only where the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.errors import SpecError
from workers.kinds.base import JobContext, JobKind
from workers.kinds.memory import (
    ADAM_FLOATS_PER_PARAMETER, FLOAT32_BYTES, TORCH_RUNTIME_BYTES, unet_activation_bytes, unet_parameters,
)
from workers.kinds.spec_fields import (
    BOOLEAN, SEED, Rule, choice, default_of, integer, is_int, is_non_empty_string, optional_integer,
    parse_fields, positive_number, spec_field, to_dict, validate_fields,
)

NAME = "diffusion-train"
#: The dataset name that means scikit-learn's bundled 8x8 digits (1797 grey images, no download).
DIGITS = "digits"
#: Images in the digits dataset.
DIGITS_IMAGES = 1797
#: Colour channels assumed for a dataset the scheduler cannot open (a path on the workers): RGB, the common case.
ASSUMED_IMAGE_CHANNELS = 3

_DATASET = Rule(
    f"{DIGITS!r}, or a path to a folder of PNG/JPEG images or to a .npy array (N x H x W or N x H x W x C)",
    is_non_empty_string,
)
_CHANNELS = Rule(
    "a list of 1 to 4 integers, each a multiple of 8 from 8 to 1024 (the UNet's block_out_channels)",
    lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= 4 and all(is_int(c) and 8 <= c <= 1024 and c % 8 == 0
                                                                        for c in v),
    tuple,
)
#: Precisions of a forward pass (sampling, and the GAN's and VAE's training): full, or bf16 autocast.
MIXED_PRECISION = choice("no", "bf16")
#: Diffusion training also offers fp16 autocast, with a gradient scaler: fp16's narrow range needs one in training.
TRAIN_MIXED_PRECISION = choice("no", "bf16", "fp16")
#: The mixed precisions that halve the activations kept for the backward pass.
HALF_PRECISIONS = ("bf16", "fp16")


@dataclass(frozen=True)
class TrainSpec:
    """A small DDPM (diffusers UNet2DModel + DDPMScheduler) trained on a dataset; the defaults finish on a CPU.

    dataset: ``"digits"`` (scikit-learn's 8x8 digits), a folder of PNG/JPEG images, or a ``.npy`` array
        (uint8 in 0..255, or floats in [0, 1]); images are centre-cropped square and resized to image_size.
    image_size: side of the square training images, in pixels.
    channels: the UNet's block_out_channels; the image is halved ``len(channels) - 1`` times.
    layers_per_block: ResNet layers in each UNet block.
    steps: total optimizer steps of the job, counted across resumes.
    batch_size: images per optimizer step (drawn with replacement), over all the job's GPUs: the global batch,
        split evenly between them, so a multiple of ``gpus``.
    learning_rate: AdamW learning rate.
    num_train_timesteps: length of the DDPM noise schedule.
    mixed_precision: ``"no"``, ``"bf16"`` (bf16 autocast for the forward pass) or ``"fp16"`` (fp16 autocast, and
        a gradient scaler that scales the loss up so that small fp16 gradients do not flush to zero, skipping a
        step whose gradients overflow; its state is checkpointed). fp16 is meant for CUDA GPUs; it also runs on
        the CPU, where torch's autocast supports float16, but there it usually saves nothing.
    gradient_checkpointing: trade compute for memory in the UNet.
    checkpoint_every: write a checkpoint every this many steps (and always at the end or on stop).
    seed: seeds weights, batch order and noise; a resumed job continues the same random stream.
    resume: continue from the latest checkpoint in the workdir, if any; false deletes them and starts over.
    max_images: use at most this many images of the dataset (the first ones); null for all.
    """

    dataset: str = spec_field(DIGITS, _DATASET)
    image_size: int = spec_field(16, integer(8, 256))
    channels: tuple[int, ...] = spec_field((16, 32), _CHANNELS)
    layers_per_block: int = spec_field(1, integer(1, 4))
    steps: int = spec_field(200, integer(1, 1_000_000))
    batch_size: int = spec_field(32, integer(1, 4096))
    learning_rate: float = spec_field(1e-3, positive_number(1.0))
    num_train_timesteps: int = spec_field(1000, integer(2, 10_000))
    mixed_precision: str = spec_field("no", TRAIN_MIXED_PRECISION)
    gradient_checkpointing: bool = spec_field(False, BOOLEAN)
    checkpoint_every: int = spec_field(50, integer(1, 1_000_000))
    seed: int = spec_field(0, SEED)
    resume: bool = spec_field(True, BOOLEAN)
    max_images: int | None = spec_field(None, optional_integer(1, 10_000_000))

    def __post_init__(self) -> None:
        validate_fields(self)
        # Each down block but the last halves the image, so the side must divide evenly that many times.
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            accepted = f"a multiple of {factor} from 8 to 256 when channels has {len(self.channels)} entries"
            raise SpecError(
                f"spec.image_size: must be {accepted}, got {self.image_size!r}", field="spec.image_size",
                accepted=accepted,
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict with every default filled in."""
        return to_dict(self)


class DiffusionTrain(JobKind):
    """Training a small DDPM; a unit of work is one optimizer step. Checkpoints, so it can be suspended."""

    name = NAME
    interruptible = True
    process_per_gpu = True  # gpus > 1: one process per GPU, data-parallel from torchrun's environment
    #: Interpreter, torch and diffusers imports, dataset loading.
    startup_s = 6.0
    #: A step of the default model (16 px, channels 16/32, batch 32) on one CPU thread, roughly.
    NOMINAL_S_PER_STEP = 0.15

    def parse(self, spec: Any) -> TrainSpec:
        """The user's spec as a TrainSpec (SpecError naming the field otherwise)."""
        return parse_fields(TrainSpec, self.name, spec)

    def validate(self, spec: Any) -> dict[str, Any]:
        return self.parse(spec).to_dict()

    def paths(self, spec: Mapping[str, Any]) -> dict[str, str]:
        dataset = spec.get("dataset", DIGITS)
        return {} if dataset == DIGITS else {"dataset": dataset}

    def check_launch(self, spec: Mapping[str, Any], gpus: int, mode: str) -> None:
        # The job starts its ranks itself (one per GPU, data-parallel): a per-node process would train alone on
        # every GPU of its node, and the global batch is split evenly between the ranks.
        if mode != "per-gpu":
            accepted = "per-gpu (diffusion-train starts one data-parallel process per GPU itself)"
            raise SpecError(f"launch: must be {accepted}, got {mode!r}", field="launch", accepted=accepted)
        if spec["batch_size"] % gpus:
            accepted = f"a multiple of gpus ({gpus}): the batch is split evenly between the job's GPUs"
            raise SpecError(f"spec.batch_size: must be {accepted}, got {spec['batch_size']}",
                            field="spec.batch_size", accepted=accepted)

    def memory_bytes(self, spec: Mapping[str, Any], gpus: int = 1) -> int | None:
        """Each rank's estimate: the model's weights, gradients and AdamW state (float32), the activations of its
        share of the batch (halved under bf16 or fp16 autocast), the dataset as the float32 tensor it is loaded
        into (when its size is known: the digits, or ``max_images``), and the interpreter with torch."""
        image_channels = 1 if spec["dataset"] == DIGITS else ASSUMED_IMAGE_CHANNELS
        channels, layers = spec["channels"], spec["layers_per_block"]
        parameters = unet_parameters(channels, layers, image_channels)
        per_image = unet_activation_bytes(channels, layers, spec["image_size"], spec["gradient_checkpointing"])
        if spec["mixed_precision"] in HALF_PRECISIONS:
            per_image //= 2
        batch = -(-spec["batch_size"] // gpus)
        images = DIGITS_IMAGES if spec["dataset"] == DIGITS else None
        if spec.get("max_images") is not None:
            images = min(images or spec["max_images"], spec["max_images"])
        dataset = (images or 0) * image_channels * spec["image_size"] ** 2 * FLOAT32_BYTES
        return (ADAM_FLOATS_PER_PARAMETER * FLOAT32_BYTES * parameters + batch * per_image + dataset
                + TORCH_RUNTIME_BYTES)

    def work_units(self, spec: Mapping[str, Any]) -> float:
        # The job's steps counted across resumes: its progress reports say {"step": done, "total": steps}.
        return float(spec.get("steps", default_of(TrainSpec, "steps")))

    def nominal_s_per_unit(self, spec: Mapping[str, Any]) -> float:
        return self.NOMINAL_S_PER_STEP

    def units_done(self, spec: Mapping[str, Any], result: Mapping[str, Any] | None) -> float | None:
        # A resumed run did only the steps after its checkpoint.
        if result and result.get("steps_this_run") is not None:
            return float(result["steps_this_run"])
        return self.work_units(spec)

    def run(self, spec: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        checked = self.parse(self.checked_spec(spec, context.workdir))  # before anything is opened
        from workers.diffusion.train import train  # torch and diffusers: only where the job runs

        return train(checked, context.workdir, context.report, context.should_stop)
