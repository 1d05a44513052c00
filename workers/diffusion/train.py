"""Training a small DDPM (diffusers UNet2DModel + DDPMScheduler) on a dataset, resumable and stoppable.

Every random draw after weight initialisation (batch indices, noise, timesteps) comes from one CPU generator
whose state is checkpointed with the optimizer, so a job stopped at step k and resumed runs the same steps an
uninterrupted job would have, and ends after the same total number of steps.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from workers.diffusion import checkpoints
from workers.diffusion.data import load_images
from workers.diffusion.runtime import autocast, prepare_torch
from workers.errors import JobFailed, SpecError
from workers.kinds.diffusion_train import TrainSpec
from workers.kinds.progress import Pacer, Report, ShouldStop, never_stop, no_report

log = logging.getLogger(__name__)

#: Spec fields a resumed job must share with its checkpoint: they shape the model or the data it learned.
_RESUME_FIELDS = ("dataset", "image_size", "channels", "layers_per_block", "num_train_timesteps")


def build_unet(spec: TrainSpec, image_channels: int) -> UNet2DModel:
    """The UNet a spec asks for: plain ResNet blocks, attention only in the middle block."""
    # GroupNorm needs a group count that divides every block's channels; 32 is diffusers' default.
    groups = max(g for g in range(1, 33) if all(c % g == 0 for c in spec.channels))
    return UNet2DModel(
        sample_size=spec.image_size,
        in_channels=image_channels,
        out_channels=image_channels,
        layers_per_block=spec.layers_per_block,
        block_out_channels=spec.channels,
        down_block_types=("DownBlock2D",) * len(spec.channels),
        up_block_types=("UpBlock2D",) * len(spec.channels),
        norm_num_groups=groups,
    )


def train(
    spec: TrainSpec,
    workdir: str | os.PathLike,
    report: Report = no_report,
    should_stop: ShouldStop = never_stop,
) -> dict[str, Any]:
    """Train until spec.steps optimizer steps are done (counting earlier runs) or should_stop() answers True.

    report(dict) receives ``{"step", "total", "loss"}`` on the first and last step and at most every 0.5 s.
    should_stop() is polled before every step; on True a checkpoint is written and the result says
    ``"stopped": True``. With ``spec.resume`` the job continues from the latest checkpoint in
    ``workdir/checkpoints``; without it, existing checkpoints there are deleted and training starts over.

    Returns ``stopped``, ``steps_done`` (total), ``total_steps``, ``resumed_from_step``, ``steps_this_run``,
    ``images_seen`` (images this run processed: the energy measured for this run covers these),
    ``final_loss`` (loss of the last step, or None before any) and ``checkpoint`` (path, or None).
    """
    device = prepare_torch()
    root = Path(workdir) / checkpoints.CHECKPOINTS_DIR
    if not spec.resume:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    checkpoints.remove_partial(root)

    images = load_images(spec.dataset, spec.image_size, spec.max_images)
    noise_scheduler = DDPMScheduler(num_train_timesteps=spec.num_train_timesteps)
    generator = torch.Generator().manual_seed(spec.seed)
    checkpoint = checkpoints.latest_checkpoint(root)
    if checkpoint is not None:
        _check_resumable(checkpoint, spec)
        model = checkpoints.load_unet(checkpoint)
        meta = checkpoints.read_meta(checkpoint)
        step, loss = meta["step"], meta["loss"]
        log.info("resuming from %s at step %d", checkpoint, step)
    else:
        # Forked so that seeding the weights leaves the caller's global RNG alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = build_unet(spec, image_channels=images.shape[1])
        step, loss = 0, None
    model.to(device).train()
    if spec.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate)
    if checkpoint is not None:
        state = checkpoints.load_training_state(checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        # load_state_dict restores the old learning rate; the spec's is the one asked for now.
        for group in optimizer.param_groups:
            group["lr"] = spec.learning_rate

    def save(name: str) -> Path:
        # Reads step and loss when called: a checkpoint holds the state after the latest step.
        return checkpoints.save_checkpoint(
            root,
            name,
            model=model,
            noise_scheduler=noise_scheduler,
            training_state={"optimizer": optimizer.state_dict(), "rng": generator.get_state()},
            meta={"step": step, "loss": loss},
            spec=spec,
        )

    start_step, checkpoint_step = step, step
    pacer = Pacer()
    while step < spec.steps and not should_stop():
        loss = _train_step(model, noise_scheduler, optimizer, images, generator, spec, device)
        step += 1
        if not math.isfinite(loss):
            raise JobFailed(
                f"the loss became {loss} at step {step}; lower spec.learning_rate or use mixed_precision 'no'"
            )
        if step % spec.checkpoint_every == 0 and step < spec.steps:
            checkpoint, checkpoint_step = save(checkpoints.step_name(step)), step
        if pacer.due(last_step=step == spec.steps):
            report({"step": step, "total": spec.steps, "loss": loss})

    stopped = step < spec.steps
    if stopped and step > checkpoint_step:
        checkpoint = save(checkpoints.step_name(step))
    elif not stopped and (checkpoint is None or checkpoint.name != checkpoints.FINAL or step > checkpoint_step):
        checkpoint = save(checkpoints.FINAL)
    return {
        "stopped": stopped,
        "steps_done": step,
        "total_steps": spec.steps,
        "resumed_from_step": start_step,
        "steps_this_run": step - start_step,
        "images_seen": (step - start_step) * spec.batch_size,
        "final_loss": loss,
        "checkpoint": None if checkpoint is None else str(checkpoint),
    }


def _train_step(
    model: UNet2DModel,
    noise_scheduler: DDPMScheduler,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    generator: torch.Generator,
    spec: TrainSpec,
    device: torch.device,
) -> float:
    """One optimizer step of the DDPM objective (MSE between true and predicted noise); returns the loss."""
    # Drawn on the CPU generator, whatever the device, so the checkpointed RNG state is all there is to restore.
    index = torch.randint(len(images), (spec.batch_size,), generator=generator)
    clean = images[index].to(device)
    noise = torch.randn(clean.shape, generator=generator).to(device)
    timesteps = torch.randint(spec.num_train_timesteps, (spec.batch_size,), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    with autocast(device, spec.mixed_precision):
        predicted = model(noisy, timesteps).sample
    loss = F.mse_loss(predicted.float(), noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _check_resumable(checkpoint: Path, spec: TrainSpec) -> None:
    saved = checkpoints.read_spec(checkpoint)
    wanted = spec.to_dict()
    for name in _RESUME_FIELDS:
        if saved[name] != wanted[name]:
            accepted = f"{saved[name]!r} (the value the checkpoint was trained with)"
            raise SpecError(
                f"spec.{name}: {wanted[name]!r} differs from {saved[name]!r} in the checkpoint {str(checkpoint)!r};"
                " keep the checkpoint's value, or set spec.resume to false to start over",
                field=f"spec.{name}",
                accepted=accepted,
            )
