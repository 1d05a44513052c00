"""Drawing images from a trained checkpoint with the DDPM or DDIM sampler.

Writes, into the job's workdir:

- ``samples.npy``: uint8 array N x H x W x C (C = the model's channels, 1 for the digits), values 0..255;
- ``grid.png``: the same images tiled in a near-square grid, enlarged (nearest neighbour) to at least
  GRID_MIN_SIDE_PX pixels so that 8x8 images can be seen.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from PIL import Image

from workers.diffusion import checkpoints
from workers.diffusion.runtime import autocast, prepare_torch
from workers.kinds.diffusion_sample import SampleSpec, inference_steps
from workers.kinds.diffusion_train import DIGITS
from workers.kinds.progress import Pacer, Report, ShouldStop, never_stop, no_report

SAMPLES_FILE = "samples.npy"
GRID_FILE = "grid.png"
#: The grid image is enlarged to at least this many pixels on its longer side.
GRID_MIN_SIDE_PX = 256


def sample(
    spec: SampleSpec,
    workdir: str | os.PathLike,
    report: Report = no_report,
    should_stop: ShouldStop = never_stop,
) -> dict[str, Any]:
    """Draw spec.num_images images from spec.checkpoint and write samples.npy and grid.png into workdir.

    report(dict) receives ``{"step", "total", "images_done"}`` on the first and last step and at most every
    0.5 s; step and total count denoising steps of single images (a step of a batch of 3 counts 3), the
    kind's work units. should_stop() is polled before every denoising step; on True the
    images of finished batches are written and the result says ``"stopped": True``.

    Returns ``stopped``, ``num_images`` (images written), ``images_path``, ``grid_path`` (None if no image
    was finished), ``sampler``, ``num_inference_steps``, ``checkpoint``, ``image_shape`` ([H, W, C]), ``sample_s``
    (seconds denoising, without loading or scoring) and ``quality`` (``workers.generative.quality``, for a model
    trained on the digits; else None).
    """
    device = prepare_torch()
    checkpoint = checkpoints.resolve_checkpoint(spec.checkpoint)
    model = checkpoints.load_unet(checkpoint).to(device).eval()
    config = DDPMScheduler.load_config(checkpoint / checkpoints.SCHEDULER_DIR)
    scheduler = (DDIMScheduler if spec.sampler == "ddim" else DDPMScheduler).from_config(config)
    num_steps = inference_steps(spec.sampler, spec.num_inference_steps, scheduler.config.num_train_timesteps)
    scheduler.set_timesteps(num_steps)

    size, channels = model.config.sample_size, model.config.in_channels
    generator = torch.Generator().manual_seed(spec.seed)
    starts = range(0, spec.num_images, spec.batch_size)
    batch_sizes = [min(spec.batch_size, spec.num_images - start) for start in starts]
    total_steps = spec.num_images * num_steps
    done_steps, images_done, stopped, batches = 0, 0, False, []
    pacer = Pacer()
    began_s = time.perf_counter()
    with torch.inference_mode():
        for batch_size in batch_sizes:
            # Drawn on the CPU generator so that a seed gives the same starting noise on any device.
            latents = torch.randn((batch_size, channels, size, size), generator=generator).to(device)
            for index, timestep in enumerate(scheduler.timesteps):
                if should_stop():
                    stopped = True
                    break
                with autocast(device, spec.mixed_precision):
                    predicted_noise = model(latents, timestep).sample
                latents = scheduler.step(predicted_noise.float(), timestep, latents, generator=generator).prev_sample
                done_steps += batch_size
                if pacer.due(last_step=done_steps == total_steps):
                    finished = images_done + (batch_size if index == num_steps - 1 else 0)
                    report({"step": done_steps, "total": total_steps, "images_done": finished})
            if stopped:
                break
            batches.append(_to_uint8(latents))
            images_done += batch_size

    sample_s = time.perf_counter() - began_s
    images = np.concatenate(batches) if batches else None
    quality = None
    if images is not None and checkpoints.read_spec(checkpoint).get("dataset") == DIGITS:
        from workers.generative.quality import digit_quality

        quality = digit_quality(images)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    images_path = grid_path = None
    if images is not None:
        images_path = _write_atomically(workdir / SAMPLES_FILE, lambda tmp: np.save(tmp, images))
        grid_path = _write_atomically(workdir / GRID_FILE, lambda tmp: make_grid(images).save(tmp, format="PNG"))
    return {
        "stopped": stopped,
        "num_images": 0 if images is None else len(images),
        "images_path": None if images_path is None else str(images_path),
        "grid_path": None if grid_path is None else str(grid_path),
        "sampler": spec.sampler,
        "num_inference_steps": num_steps,
        "checkpoint": str(checkpoint),
        "image_shape": [size, size, channels],
        "sample_s": sample_s,
        "quality": quality,
    }


def _to_uint8(latents: torch.Tensor) -> np.ndarray:
    """Model space N x C x H x W in [-1, 1] -> uint8 N x H x W x C in 0..255."""
    pixels = ((latents.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray) -> Image.Image:
    """Tile uint8 images N x H x W x C (C = 1, 3 or 4) in a near-square grid, enlarged for viewing."""
    count, height, width, channels = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        canvas[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    # Pillow reads the mode from the array: L for H x W, RGB or RGBA for H x W x 3 or 4.
    grid = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    scale = max(1, GRID_MIN_SIDE_PX // max(canvas.shape[:2]))
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call write(temporary path) and rename the result to path, so readers never see a half-written file."""
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    write(temporary)
    os.replace(temporary, path)
    return path
