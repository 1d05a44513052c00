"""Drawing images from a GAN generator or VAE decoder checkpoint; writes ``samples.npy`` into the job's workdir."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.diffusion.runtime import prepare_torch
from workers.generative import checkpoint
from workers.kinds.diffusion_train import DIGITS
from workers.kinds.generative_sample import GenerativeSampleSpec
from workers.kinds.progress import Pacer, Report, ShouldStop, never_stop, no_report

SAMPLES_FILE = "samples.npy"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model space N x C x H x W in [-1, 1] -> uint8 N x H x W x C in 0..255."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def sample(spec: GenerativeSampleSpec, workdir: str | Path, report: Report = no_report,
           should_stop: ShouldStop = never_stop) -> dict[str, Any]:
    """Draw spec.num_images images (batches of spec.batch_size) and write them; score them on the digits.

    Returns ``stopped``, ``family``, ``num_images``, ``images_path``, ``image_shape`` ([H, W, C]), ``sample_s``
    (seconds generating, without loading or scoring) and ``quality`` (None off the digits).
    """
    device = prepare_torch()
    generator, meta = checkpoint.load(spec.checkpoint)
    generator = generator.to(device).eval()
    noise_source = torch.Generator().manual_seed(spec.seed)
    batches, done, pacer = [], 0, Pacer()
    began_s = time.perf_counter()
    with torch.inference_mode():
        while done < spec.num_images and not should_stop():
            count = min(spec.batch_size, spec.num_images - done)
            noise = torch.randn((count, meta["latent_dim"]), generator=noise_source)
            batches.append(to_uint8(generator(noise.to(device))))
            done += count
            if pacer.due(last_step=done == spec.num_images):
                report({"step": done, "total": spec.num_images})
    sample_s = time.perf_counter() - began_s
    images = np.concatenate(batches) if batches else None
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    images_path = None
    if images is not None:
        images_path = workdir / SAMPLES_FILE
        temporary = images_path.with_name(f".tmp-{os.getpid()}-{SAMPLES_FILE}")
        with temporary.open("wb") as handle:
            np.save(handle, images)
        os.replace(temporary, images_path)
    quality = None
    if images is not None and meta.get("dataset") == DIGITS:
        from workers.generative.quality import digit_quality

        quality = digit_quality(images)
    return {
        "stopped": done < spec.num_images, "family": meta["family"], "num_images": done,
        "images_path": None if images_path is None else str(images_path),
        "image_shape": [meta["shape"][1], meta["shape"][2], meta["shape"][0]], "sample_s": sample_s,
        "quality": quality,
    }
