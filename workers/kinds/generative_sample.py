"""The ``generative-sample`` kind: images drawn from a ``gan-train`` or ``vae-train`` job's generator.

A unit of work is one generated image. The job writes ``samples.npy`` (uint8 N x H x W x C) into its workdir and,
for a model trained on the digits, scores them (``workers.generative.quality``). Torch-free; the drawing runs in
``workers.generative.sample``, imported only where the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.errors import SpecError
from workers.kinds.base import JOB_REF_PREFIX, FindJob, JobContext, JobKind
from workers.kinds.spec_fields import (
    SEED, Rule, default_of, integer, is_non_empty_string, parse_fields, spec_field, to_dict, validate_fields,
)

NAME = "generative-sample"
#: The kinds whose jobs a ``job:<id>`` checkpoint may name.
TRAIN_KINDS = ("gan-train", "vae-train")

_CHECKPOINT = Rule(
    f"a path to a {' or '.join(TRAIN_KINDS)} job's workdir, or {JOB_REF_PREFIX}<id> of such a job",
    is_non_empty_string,
)


@dataclass(frozen=True)
class GenerativeSampleSpec:
    """Images drawn from a trained GAN generator or VAE decoder.

    checkpoint: the training job's workdir, or ``job:<id>``.
    num_images: how many images to draw.
    batch_size: images generated together.
    seed: seeds the noise.
    """

    checkpoint: str = spec_field(None, _CHECKPOINT, required=True)
    num_images: int = spec_field(256, integer(1, 1_000_000))
    batch_size: int = spec_field(64, integer(1, 65_536))
    seed: int = spec_field(0, SEED)

    def __post_init__(self) -> None:
        validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


class GenerativeSample(JobKind):
    """Sampling from a GAN or VAE. Not interruptible: a job is a few seconds."""

    name = NAME
    interruptible = False
    #: Interpreter, torch, scikit-learn and the quality classifier.
    startup_s = 6.0
    #: One image of the default generator on one CPU thread, roughly.
    NOMINAL_S_PER_IMAGE = 0.0001

    def parse(self, spec: Any) -> GenerativeSampleSpec:
        return parse_fields(GenerativeSampleSpec, self.name, spec)

    def validate(self, spec: Any) -> dict[str, Any]:
        return self.parse(spec).to_dict()

    def resolve(self, spec: dict[str, Any], find_job: FindJob) -> dict[str, Any]:
        """``"checkpoint": "job:<id>"`` becomes that training job's workdir."""
        ref = spec["checkpoint"]
        if not ref.startswith(JOB_REF_PREFIX):
            return spec
        job = find_job(ref[len(JOB_REF_PREFIX):])
        if job is None or job.kind not in TRAIN_KINDS:
            what = "no job" if job is None else f"a {job.kind} job, not one of {', '.join(TRAIN_KINDS)}"
            # Cut: the id comes from a user and may be huge.
            raise SpecError(f"spec.checkpoint: {ref!r:.60} is {what}", field="spec.checkpoint",
                            accepted=_CHECKPOINT.accepted)
        return {**spec, "checkpoint": job.workdir}

    def paths(self, spec: Mapping[str, Any]) -> dict[str, str]:
        checkpoint = spec["checkpoint"]  # a job:<id> not yet resolved names no path
        return {} if checkpoint.startswith(JOB_REF_PREFIX) else {"checkpoint": checkpoint}

    def work_units(self, spec: Mapping[str, Any]) -> float:
        return float(spec.get("num_images", default_of(GenerativeSampleSpec, "num_images")))

    def nominal_s_per_unit(self, spec: Mapping[str, Any]) -> float:
        return self.NOMINAL_S_PER_IMAGE

    def run(self, spec: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        checked = self.parse(self.checked_spec(spec, context.workdir))  # before anything is opened
        from workers.generative.sample import sample  # torch: only where the job runs

        return sample(checked, context.workdir, context.report, context.should_stop)
