"""What the ``gan-train`` and ``vae-train`` kinds share: their spec and their work (torch-free).

Both train a small multi-layer perceptron family (``workers.generative``) on the same images as the diffusion
jobs, so that wattsched can compare the families' energy on one machine. A unit of work is one optimizer step
(for the GAN: one discriminator and one generator update). Not interruptible: the jobs are short; a stopped job
keeps nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from workers.kinds.base import JobContext, JobKind
from workers.kinds.diffusion_train import DIGITS, MIXED_PRECISION
from workers.kinds.spec_fields import (
    SEED, Rule, default_of, integer, is_non_empty_string, optional_integer, parse_fields, positive_number,
    spec_field, to_dict, validate_fields,
)

_DATASET = Rule(
    f"{DIGITS!r}, or a path to a folder of PNG/JPEG images or to a .npy array (N x H x W or N x H x W x C)",
    is_non_empty_string,
)


@dataclass(frozen=True)
class GenerativeSpec:
    """A small GAN or VAE trained on a dataset; the defaults finish in a minute on one CPU thread.

    dataset: as a diffusion-train job's (``"digits"``, a folder of images, or a ``.npy`` array).
    image_size: side of the square training images, in pixels.
    hidden: width of the hidden layers.
    latent_dim: size of the noise (GAN) or latent (VAE) vector.
    steps: optimizer steps.
    batch_size: images per step (drawn with replacement).
    learning_rate: Adam's learning rate.
    mixed_precision: ``"no"`` or ``"bf16"`` (bf16 autocast for the forward passes).
    eval_every: score the quality of eval_images generated images every this many steps (0: at the end only);
        the result's ``quality_curve`` holds the scores, for the energy to reach a quality target.
    eval_images: images generated for each quality score (same number across families, since FID-lite depends
        on it).
    seed: seeds the weights, the batches and the noise.
    max_images: use at most this many images of the dataset (the first ones); null for all.
    """

    dataset: str = spec_field(DIGITS, _DATASET)
    image_size: int = spec_field(8, integer(8, 64))
    hidden: int = spec_field(256, integer(8, 4096))
    latent_dim: int = spec_field(32, integer(2, 1024))
    steps: int = spec_field(2000, integer(1, 1_000_000))
    batch_size: int = spec_field(64, integer(1, 4096))
    learning_rate: float = spec_field(2e-4, positive_number(1.0))
    mixed_precision: str = spec_field("no", MIXED_PRECISION)
    eval_every: int = spec_field(0, integer(0, 1_000_000))
    eval_images: int = spec_field(256, integer(2, 100_000))
    seed: int = spec_field(0, SEED)
    max_images: int | None = spec_field(None, optional_integer(1, 10_000_000))

    def __post_init__(self) -> None:
        validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


class GenerativeTrain(JobKind):
    """Training one family (``family``: ``"gan"`` or ``"vae"``); a unit of work is one optimizer step."""

    family: ClassVar[str]
    spec_class: ClassVar[type[GenerativeSpec]] = GenerativeSpec
    interruptible = False
    #: Interpreter, torch, diffusers' runtime helpers and dataset loading.
    startup_s = 5.0
    #: One step of the default model (8x8, hidden 256, batch 64) on one CPU thread, roughly.
    NOMINAL_S_PER_STEP = 0.004

    def parse(self, spec: Any) -> GenerativeSpec:
        """The user's spec (SpecError naming the field otherwise)."""
        return parse_fields(self.spec_class, self.name, spec)

    def validate(self, spec: Any) -> dict[str, Any]:
        return self.parse(spec).to_dict()

    def paths(self, spec: Mapping[str, Any]) -> dict[str, str]:
        dataset = spec.get("dataset", DIGITS)
        return {} if dataset == DIGITS else {"dataset": dataset}

    def work_units(self, spec: Mapping[str, Any]) -> float:
        return float(spec.get("steps", default_of(self.spec_class, "steps")))

    def nominal_s_per_unit(self, spec: Mapping[str, Any]) -> float:
        return self.NOMINAL_S_PER_STEP

    def run(self, spec: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        checked = self.parse(self.checked_spec(spec, context.workdir))  # before anything is opened
        from workers.generative.train import train  # torch: only where the job runs

        return train(self.family, checked, context.workdir, context.report, context.should_stop)
