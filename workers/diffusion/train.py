"""Training a small DDPM (diffusers UNet2DModel + DDPMScheduler) on a dataset, resumable and stoppable.

Every random draw after weight initialisation (batch indices, noise, timesteps) comes from one CPU generator
whose state is checkpointed with the optimizer, so a job stopped at step k and resumed runs the same steps an
uninterrupted job would have, and ends after the same total number of steps.

With several processes (torchrun's environment, see ``workers.diffusion.data_parallel``) the job trains
data-parallel: spec.batch_size is the global batch. Every rank draws the whole global batch from the same
generator and trains on its own contiguous slice of it, under DistributedDataParallel, which averages the
gradients; so N ranks take the steps one process would at the same batch_size, up to float rounding. Rank 0
alone writes checkpoints and reports progress; every rank resumes from the checkpoint rank 0 chose.

Under ``mixed_precision: fp16`` a gradient scaler multiplies the loss before the backward pass and divides the
gradients before the optimizer step, which it skips when they overflowed (the scale then halves). Under DDP the
gradients it checks are already averaged over the ranks, so every rank takes the same decision. Its state (the
scale and its growth tracker) is checkpointed, so a resumed job goes on with the scale it had reached.
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
from torch.nn.parallel import DistributedDataParallel

from workers.diffusion import checkpoints
from workers.diffusion.data_parallel import ProcessGroup, Ranks
from workers.diffusion.data import load_images
from workers.diffusion.runtime import autocast, grad_scaler, peak_memory, prepare_torch, reset_peak_memory
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

    report(dict) receives ``{"step", "total", "loss"}`` on the first and last step and at most every 0.5 s
    (on rank 0 only, when there are several ranks). should_stop() is polled before every step; on True (on any
    rank) a checkpoint is written and the result says ``"stopped": True``. With ``spec.resume`` the job
    continues from the latest checkpoint in ``workdir/checkpoints``; without it, existing checkpoints there are
    deleted and training starts over.

    Returns ``stopped``, ``steps_done`` (total), ``total_steps``, ``resumed_from_step``, ``steps_this_run``,
    ``images_seen`` (images this run processed, over every rank: the energy measured for this run covers these),
    ``final_loss`` (loss of the last step over the global batch, or None before any), ``checkpoint`` (path, or
    None), ``world_size``, ``images_per_epoch`` (the dataset's images: an epoch is that many images seen),
    ``parameters`` (the UNet's) and
    ``peak_memory_bytes`` (this rank's) with its ``peak_memory_method`` (``workers.diffusion.runtime.peak_memory``);
    the other fields are the same on every rank.
    """
    ranks = Ranks.from_env()
    if spec.batch_size % ranks.world_size:
        # Refused before joining the group: every rank sees the same spec and fails at once, none waits.
        accepted = f"a multiple of {ranks.world_size}, the job's GPUs (the batch is split evenly between them)"
        raise SpecError(
            f"spec.batch_size: must be {accepted}, got {spec.batch_size}", field="spec.batch_size", accepted=accepted
        )
    device = prepare_torch(ranks.local_rank)
    reset_peak_memory(device)
    with ProcessGroup(ranks, device) as group:
        return _train(spec, Path(workdir), report if ranks.is_main else no_report, should_stop, group)


def _train(
    spec: TrainSpec, workdir: Path, report: Report, should_stop: ShouldStop, group: ProcessGroup
) -> dict[str, Any]:
    device, ranks = group.device, group.ranks
    root = workdir / checkpoints.CHECKPOINTS_DIR
    if ranks.is_main:
        if not spec.resume:
            shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_partial(root)
    # Rank 0 chooses, so that every rank resumes from the same checkpoint even if one is written meanwhile;
    # the broadcast also keeps the others from looking before rank 0 has cleaned up.
    found = group.from_main(checkpoints.latest_checkpoint(root))
    checkpoint = None if found is None else Path(found)
    if checkpoint is not None and not checkpoint.is_dir():
        raise JobFailed(
            f"rank {ranks.rank} cannot see the checkpoint {str(checkpoint)!r} that rank 0 resumes from; the job"
            " directory must be on a filesystem shared by every node, at the same path"
        )

    images = load_images(spec.dataset, spec.image_size, spec.max_images)
    noise_scheduler = DDPMScheduler(num_train_timesteps=spec.num_train_timesteps)
    generator = torch.Generator().manual_seed(spec.seed)
    if checkpoint is not None:
        _check_resumable(checkpoint, spec)
        unet = checkpoints.load_unet(checkpoint)
        meta = checkpoints.read_meta(checkpoint)
        step, loss = meta["step"], meta["loss"]
        log.info("resuming from %s at step %d", checkpoint, step)
    else:
        # Forked so that seeding the weights leaves the caller's global RNG alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            unet = build_unet(spec, image_channels=images.shape[1])
        step, loss = 0, None
    unet.to(device).train()
    if spec.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    # DDP averages the gradients over the ranks (and starts every rank from rank 0's weights).
    model = unet if not ranks.distributed else DistributedDataParallel(
        unet, device_ids=[device.index] if device.type == "cuda" else None
    )
    optimizer = torch.optim.AdamW(unet.parameters(), lr=spec.learning_rate)
    scaler = grad_scaler(device, spec.mixed_precision)
    if checkpoint is not None:
        state = checkpoints.load_training_state(checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"])
        # A checkpoint written without fp16 has no scale to go on with (an empty state): the scaler starts afresh.
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        # load_state_dict restores the old learning rate; the spec's is the one asked for now.
        for param_group in optimizer.param_groups:
            param_group["lr"] = spec.learning_rate

    def save(name: str) -> Path:
        # Reads step and loss when called: a checkpoint holds the state after the latest step.
        path = root / name
        if ranks.is_main:
            checkpoints.save_checkpoint(
                root,
                name,
                model=unet,
                noise_scheduler=noise_scheduler,
                training_state={"optimizer": optimizer.state_dict(), "rng": generator.get_state(),
                                "scaler": scaler.state_dict()},
                meta={"step": step, "loss": loss},
                spec=spec,
            )
        return path

    start_step, checkpoint_step = step, step
    pacer = Pacer()
    # Every rank takes the same decision to stop, after the same step: one that went on alone would wait forever
    # for the others' gradients.
    _, stop = group.mean_and_any(0.0, should_stop())
    while step < spec.steps and not stop:
        local_loss = _train_step(model, noise_scheduler, optimizer, scaler, images, generator, spec, device, ranks)
        loss, stop = group.mean_and_any(local_loss, should_stop())
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
        "world_size": ranks.world_size,
        "images_per_epoch": len(images),
        "parameters": sum(p.numel() for p in unet.parameters()),
        **peak_memory(device),
    }


def _train_step(
    model: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: torch.Tensor,
    generator: torch.Generator,
    spec: TrainSpec,
    device: torch.device,
    ranks: Ranks,
) -> float:
    """One optimizer step of the DDPM objective (MSE between true and predicted noise) on this rank's slice of
    the global batch, through the gradient scaler (a pass-through unless fp16); returns this rank's loss."""
    # Drawn on the CPU generator, whatever the device, so the checkpointed RNG state is all there is to restore.
    # Every rank draws the whole global batch, so the generators stay in step, and keeps its own slice.
    index = torch.randint(len(images), (spec.batch_size,), generator=generator)
    noise = torch.randn((spec.batch_size, *images.shape[1:]), generator=generator)
    timesteps = torch.randint(spec.num_train_timesteps, (spec.batch_size,), generator=generator)
    share = spec.batch_size // ranks.world_size
    mine = slice(ranks.rank * share, (ranks.rank + 1) * share)
    clean, noise, timesteps = images[index[mine]].to(device), noise[mine].to(device), timesteps[mine].to(device)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    with autocast(device, spec.mixed_precision):
        predicted = model(noisy, timesteps).sample
    # The mean over this rank's slice; DDP's average of equal slices' gradients is the global batch's gradient.
    loss = F.mse_loss(predicted.float(), noise)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
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
