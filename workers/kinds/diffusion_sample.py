"""The ``diffusion-sample`` kind: images drawn from a trained checkpoint with DDPM or DDIM.

A unit of work is one denoising step of one image, so a job's work is ``num_images x denoising steps``
(``workers.diffusion.sample`` reports its progress in these units). Torch-free; the sampler runs in
``workers.diffusion.sample``, imported only where the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.errors import SpecError
from workers.kinds.base import JOB_REF_PREFIX, FindJob, JobContext, JobKind
from workers.kinds.diffusion_train import MIXED_PRECISION, TrainSpec
from workers.kinds.diffusion_train import NAME as TRAIN_NAME
from workers.kinds.memory import TORCH_RUNTIME_BYTES
from workers.kinds.spec_fields import (
    SEED, Rule, choice, default_of, integer, is_non_empty_string, optional_integer, parse_fields, spec_field,
    to_dict, validate_fields,
)

NAME = "diffusion-sample"
#: DDIM's denoising steps when the spec leaves them out (at most the checkpoint's training timesteps).
DEFAULT_DDIM_STEPS = 50
#: The schedule length assumed for a checkpoint given as a path, which the scheduler cannot read (it may not see
#: the workers' files): a training job's default. Only a job that leaves num_inference_steps out depends on it;
#: a checkpoint given as ``job:<id>`` tells its schedule length by the training job's spec.
ASSUMED_TRAIN_TIMESTEPS = default_of(TrainSpec, "num_train_timesteps")

#: Bytes of the smallest image a training job makes (8 x 8, one channel, uint8): what a sampling job's images are
#: counted at, since their real size is the checkpoint's, which the scheduler cannot read.
SMALLEST_IMAGE_BYTES = 8 * 8

_CHECKPOINT = Rule(
    f"a path to a checkpoint directory or to a training job's workdir, or {JOB_REF_PREFIX}<id> of a training job",
    is_non_empty_string,
)


@dataclass(frozen=True)
class SampleSpec:
    """Images drawn from a trained checkpoint with DDPM or DDIM.

    checkpoint: a checkpoint directory, or a training job's workdir (its final, else latest, checkpoint).
    sampler: ``"ddpm"`` or ``"ddim"``.
    num_inference_steps: denoising steps; null means 50 for DDIM (at most the training timesteps) and the
        checkpoint's num_train_timesteps for DDPM.
    num_images: how many images to draw.
    batch_size: images denoised together.
    seed: seeds the initial noise (and DDPM's per-step noise).
    mixed_precision: ``"no"`` or ``"bf16"``.
    """

    checkpoint: str = spec_field(None, _CHECKPOINT, required=True)
    sampler: str = spec_field("ddim", choice("ddpm", "ddim"))
    num_inference_steps: int | None = spec_field(None, optional_integer(1, 10_000))
    num_images: int = spec_field(16, integer(1, 100_000))
    batch_size: int = spec_field(16, integer(1, 4096))
    seed: int = spec_field(0, SEED)
    mixed_precision: str = spec_field("no", MIXED_PRECISION)

    def __post_init__(self) -> None:
        validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict with every default filled in (num_inference_steps may stay null)."""
        return to_dict(self)


def inference_steps(sampler: str, num_inference_steps: int | None, train_timesteps: int) -> int:
    """The denoising steps a job runs, given its checkpoint's schedule length (the runner and estimates agree)."""
    if num_inference_steps is None:
        return min(DEFAULT_DDIM_STEPS, train_timesteps) if sampler == "ddim" else train_timesteps
    if num_inference_steps > train_timesteps:
        accepted = f"an integer from 1 to {train_timesteps} (the checkpoint's num_train_timesteps), or null"
        raise SpecError(
            f"spec.num_inference_steps: must be {accepted}, got {num_inference_steps}",
            field="spec.num_inference_steps",
            accepted=accepted,
        )
    return num_inference_steps


class DiffusionSample(JobKind):
    """Sampling from a checkpoint. Not interruptible: a stopped job keeps its finished batches but cannot resume."""

    name = NAME
    interruptible = False
    #: Interpreter, torch and diffusers imports, loading the checkpoint.
    startup_s = 6.0
    #: One denoising step of one 8x8 image of the default model on one CPU thread, roughly.
    NOMINAL_S_PER_IMAGE_STEP = 0.004

    def parse(self, spec: Any) -> SampleSpec:
        """The user's spec as a SampleSpec (SpecError naming the field otherwise)."""
        return parse_fields(SampleSpec, self.name, spec)

    def validate(self, spec: Any) -> dict[str, Any]:
        return self.parse(spec).to_dict()

    def resolve(self, spec: dict[str, Any], find_job: FindJob) -> dict[str, Any]:
        """``"checkpoint": "job:<id>"`` becomes that job's workdir; when it is a training job, a spec that leaves
        num_inference_steps out gets the steps its checkpoint will give (so its work is known on submit)."""
        ref = spec["checkpoint"]
        if not ref.startswith(JOB_REF_PREFIX):
            return spec
        job_id = ref[len(JOB_REF_PREFIX):]
        job = find_job(job_id)
        if job is None:
            accepted = _CHECKPOINT.accepted
            # Cut: the id comes from a user and may be huge.
            raise SpecError(f"spec.checkpoint: no job with id {job_id!r:.60}", field="spec.checkpoint",
                            accepted=accepted)
        resolved = {**spec, "checkpoint": job.workdir}
        if job.kind == TRAIN_NAME and spec["num_inference_steps"] is None:
            timesteps = job.spec.get("num_train_timesteps", ASSUMED_TRAIN_TIMESTEPS)
            resolved["num_inference_steps"] = inference_steps(spec["sampler"], None, timesteps)
        return resolved

    def paths(self, spec: Mapping[str, Any]) -> dict[str, str]:
        checkpoint = spec["checkpoint"]  # a job:<id> not yet resolved names no path
        return {} if checkpoint.startswith(JOB_REF_PREFIX) else {"checkpoint": checkpoint}

    def work_units(self, spec: Mapping[str, Any]) -> float:
        steps = spec.get("num_inference_steps")
        if steps is None:  # the checkpoint decides; the scheduler assumes a default training schedule
            steps = inference_steps(spec.get("sampler", default_of(SampleSpec, "sampler")), None,
                                    ASSUMED_TRAIN_TIMESTEPS)
        return float(spec.get("num_images", default_of(SampleSpec, "num_images")) * steps)

    def nominal_s_per_unit(self, spec: Mapping[str, Any]) -> float:
        return self.NOMINAL_S_PER_IMAGE_STEP

    def units_done(self, spec: Mapping[str, Any], result: Mapping[str, Any] | None) -> float | None:
        # The result knows the steps the checkpoint really gave, and how many images were written.
        if result and result.get("num_inference_steps"):
            return float(result.get("num_images", 0)) * float(result["num_inference_steps"])
        return self.work_units(spec)

    def memory_bytes(self, spec: Mapping[str, Any], gpus: int = 1) -> int | None:
        """At least this much: the images the job keeps until it writes them (uint8, and once more when they are
        put together), counted at the smallest image there is, and the interpreter with torch. A job of
        100,000 images of 256 x 256 RGB holds about 37 GiB: the job's memory limit is what bounds that."""
        return 2 * spec["num_images"] * SMALLEST_IMAGE_BYTES + TORCH_RUNTIME_BYTES

    def run(self, spec: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        checked = self.parse(self.checked_spec(spec, context.workdir))  # before anything is opened
        from workers.diffusion.sample import sample  # torch and diffusers: only where the job runs

        return sample(checked, context.workdir, context.report, context.should_stop)
