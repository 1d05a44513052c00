"""The study's grid: which jobs are submitted, what each one varies, and which jobs a figure is computed from.

A grid is a list of ``GridJob``s. A job names the jobs it needs (a sampler its training job) with ``after``; its
spec then refers to them as ``job:{name}``, replaced by the job's id when it is submitted. Baselines (a job of
one step or one image) measure what a job costs before its first unit of work (start-up, loading, scoring), so
that per-step and per-image figures can be given net of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Groups of jobs, as the report's sections use them.
TRAINING, SAMPLING, FAMILIES, BASELINE = "training", "sampling", "families", "baseline"


@dataclass(frozen=True)
class GridJob:
    """One job of the grid: a unique name (the report's row), its group, its kind and spec, and what it varies.

    lever: the setting it stands for, in words (``bf16``, ``DDIM 25``); after: names of jobs it depends on.
    family: the model family it belongs to (``diffusion``, ``gan``, ``vae``).
    """

    name: str
    group: str
    kind: str
    spec: dict[str, Any]
    lever: str
    family: str = "diffusion"
    after: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Grid:
    """A named grid of jobs, in submission order (a job's dependencies before it)."""

    name: str
    jobs: tuple[GridJob, ...]


def _diffusion(steps: int, images: int, ddpm_images: int, timesteps: int, image_size: int = 8,
               channels: tuple[int, ...] = (16, 32), batch: int = 32, fp16: bool = False) -> list[GridJob]:
    """The diffusion jobs; ``fp16`` adds fp16 autocast with a gradient scaler, a lever for CUDA GPUs (on a CPU
    torch runs float16 without fast kernels, many times slower than fp32)."""
    train = {"dataset": "digits", "image_size": image_size, "channels": list(channels), "steps": steps,
             "batch_size": batch, "learning_rate": 2e-3, "num_train_timesteps": timesteps,
             "checkpoint_every": 100_000}
    jobs = [
        GridJob("diffusion fp32", TRAINING, "diffusion-train", train, f"fp32, batch {batch}"),
        GridJob("diffusion bf16", TRAINING, "diffusion-train", {**train, "mixed_precision": "bf16"},
                "bf16 autocast"),
        *([GridJob("diffusion fp16", TRAINING, "diffusion-train", {**train, "mixed_precision": "fp16"},
                   "fp16 autocast + grad scaler")] if fp16 else []),
        GridJob("diffusion checkpointing", TRAINING, "diffusion-train", {**train, "gradient_checkpointing": True},
                "gradient checkpointing"),
        GridJob(f"diffusion batch {2 * batch}", TRAINING, "diffusion-train", {**train, "batch_size": 2 * batch},
                f"batch {2 * batch}"),
        GridJob("diffusion train start-up", BASELINE, "diffusion-train", {**train, "steps": 1},
                "1 step (start-up)"),
    ]
    checkpoint = {"checkpoint": "job:diffusion fp32", "num_images": images, "batch_size": images}
    after = ("diffusion fp32",)
    ddpm_steps = timesteps
    for sampler, steps_, count in (("ddpm", ddpm_steps, ddpm_images), ("ddim", 50, images), ("ddim", 25, images),
                                   ("ddim", 10, images)):
        spec = {**checkpoint, "sampler": sampler, "num_inference_steps": steps_, "num_images": count,
                "batch_size": count}
        jobs.append(GridJob(f"{sampler.upper()} {steps_}", SAMPLING, "diffusion-sample", spec,
                            f"{sampler.upper()} {steps_} steps, batch {count}", after=after))
    small_batch = max(1, images // 4)
    jobs.append(GridJob(f"DDIM 25 batch {small_batch}", SAMPLING, "diffusion-sample",
                        {**checkpoint, "sampler": "ddim", "num_inference_steps": 25, "batch_size": small_batch},
                        f"DDIM 25 steps, batch {small_batch}", after=after))
    jobs.append(GridJob("diffusion sample start-up", BASELINE, "diffusion-sample",
                        {**checkpoint, "sampler": "ddim", "num_inference_steps": 1, "num_images": 1, "batch_size": 1},
                        "1 image, 1 step (start-up)", after=after))
    return jobs


def _families(gan_steps: int, vae_steps: int, eval_every: int, images: int, eval_images: int, image_size: int = 8,
              hidden: int = 256) -> list[GridJob]:
    common = {"dataset": "digits", "image_size": image_size, "hidden": hidden, "eval_images": eval_images}
    jobs = [
        GridJob("gan", FAMILIES, "gan-train", {**common, "steps": gan_steps, "eval_every": eval_every}, "GAN",
                family="gan"),
        GridJob("vae", FAMILIES, "vae-train", {**common, "steps": vae_steps, "eval_every": eval_every}, "VAE",
                family="vae"),
        GridJob("gan train start-up", BASELINE, "gan-train", {**common, "steps": 1}, "1 step (start-up)",
                family="gan"),
    ]
    for family in ("gan", "vae"):
        jobs.append(GridJob(f"{family} sample", FAMILIES, "generative-sample",
                            {"checkpoint": f"job:{family}", "num_images": images, "batch_size": min(images, 1024)},
                            f"{images} images", family=family, after=(family,)))
    jobs.append(GridJob("gan sample start-up", BASELINE, "generative-sample",
                        {"checkpoint": "job:gan", "num_images": 1, "batch_size": 1}, "1 image (start-up)",
                        family="gan", after=("gan",)))
    return jobs


def default_grid() -> Grid:
    """The default grid: about ten minutes of jobs on a 2-core CPU (two at a time), 8x8 digits throughout.

    Every sampler scores 64 images (FID-lite depends on the number of images, so every figure uses the same).
    No fp16 row: it runs on a CPU, but there its 300 steps alone would take longer than the whole grid.
    """
    return Grid("default", tuple(_diffusion(steps=300, images=64, ddpm_images=64, timesteps=1000)
                                 + _families(gan_steps=2000, vae_steps=1000, eval_every=250, images=20_000,
                                             eval_images=64)))


def gpu_grid() -> Grid:
    """A grid for one GPU per job: the digits upscaled to 32x32, a UNet of channels 64/128/256 and MLPs of
    hidden 1536 (10 M and about 8 M parameters), larger batches and more images, so that the work outweighs the
    start-up; with an fp16 training row beside fp32 and bf16. Not run on the CPU-only development machine: size
    it to your GPUs before relying on it.
    """
    return Grid("gpu", tuple(_diffusion(steps=1000, images=64, ddpm_images=64, timesteps=1000, image_size=32,
                                        channels=(64, 128, 256), batch=128, fp16=True)
                             + _families(gan_steps=4000, vae_steps=2000, eval_every=500, images=50_000,
                                         eval_images=64, image_size=32, hidden=1536)))


def tiny_grid() -> Grid:
    """Four jobs of a few steps (for tests): a diffusion training and its DDIM 25 sampler, a VAE and its sampler.

    Nothing is learned; every section of the report but the training levers' comparisons has a row.
    """
    train = {"dataset": "digits", "image_size": 8, "channels": [8, 16], "steps": 2, "batch_size": 8,
             "num_train_timesteps": 25, "checkpoint_every": 100_000}
    return Grid("tiny", (
        GridJob("diffusion fp32", TRAINING, "diffusion-train", train, "fp32, batch 8"),
        GridJob("DDIM 25", SAMPLING, "diffusion-sample",
                {"checkpoint": "job:diffusion fp32", "sampler": "ddim", "num_inference_steps": 25, "num_images": 2,
                 "batch_size": 2}, "DDIM 25 steps, batch 2", after=("diffusion fp32",)),
        GridJob("vae", FAMILIES, "vae-train", {"dataset": "digits", "image_size": 8, "hidden": 32, "steps": 2,
                                               "eval_every": 1, "eval_images": 16}, "VAE", family="vae"),
        GridJob("vae sample", FAMILIES, "generative-sample", {"checkpoint": "job:vae", "num_images": 16},
                "16 images", family="vae", after=("vae",)),
    ))


GRIDS = {"default": default_grid, "gpu": gpu_grid, "tiny": tiny_grid}
