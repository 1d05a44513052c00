"""Training a small GAN or VAE (``workers.generative.models``) on a dataset, scoring its samples as it goes.

Every random draw after weight initialisation (batches, noise) comes from one CPU generator seeded by the spec,
so a job is repeatable on a given machine. The quality of ``eval_images`` images, drawn from fixed noise, is
scored every ``eval_every`` steps and at the end when the dataset is the digits (``workers.generative.quality``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from workers.diffusion.data import load_images
from workers.diffusion.runtime import autocast, peak_memory, prepare_torch, reset_peak_memory
from workers.errors import JobFailed
from workers.generative import checkpoint
from workers.generative.models import Discriminator, Generator, Vae, parameter_count
from workers.kinds.diffusion_train import DIGITS
from workers.kinds.generative_train import GenerativeSpec
from workers.kinds.progress import Pacer, Report, ShouldStop, never_stop, no_report

FAMILIES = ("gan", "vae")


def train(family: str, spec: GenerativeSpec, workdir: str | Path, report: Report = no_report,
          should_stop: ShouldStop = never_stop) -> dict[str, Any]:
    """Train ``family`` for spec.steps steps (or until should_stop()); write the generator's checkpoint.

    Returns ``stopped``, ``family``, ``steps_done``, ``total_steps``, ``steps_this_run``, ``images_seen``,
    ``images_per_epoch`` (the dataset's images), ``final_loss`` (GAN: generator + discriminator loss; VAE: the
    negative ELBO per image), ``quality`` (the last score, or None off the digits), ``quality_curve``
    (``[[step, fid_lite, mean_confidence], ...]``), ``eval_s`` (seconds spent scoring), ``parameters``,
    ``peak_memory_bytes``, ``peak_memory_method`` and ``checkpoint``.
    """
    if family not in FAMILIES:
        raise JobFailed(f"unknown generative family {family!r}; known: {', '.join(FAMILIES)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = prepare_torch()
    reset_peak_memory(device)
    images = load_images(spec.dataset, spec.image_size, spec.max_images)
    shape = tuple(images.shape[1:])
    with torch.random.fork_rng(devices=[]):  # seeding the weights leaves the caller's global RNG alone
        torch.manual_seed(spec.seed)
        if family == "gan":
            generator, critic = Generator(spec.latent_dim, spec.hidden, shape), Discriminator(spec.hidden, shape)
            models = (generator.to(device), critic.to(device))
        else:
            vae = Vae(spec.latent_dim, spec.hidden, shape).to(device)
            generator, models = vae.decoder, (vae,)
    draws = torch.Generator().manual_seed(spec.seed)
    eval_noise = torch.randn((spec.eval_images, spec.latent_dim), generator=torch.Generator().manual_seed(1))
    if family == "gan":
        optimizers = [torch.optim.Adam(m.parameters(), lr=spec.learning_rate, betas=(0.5, 0.999)) for m in models]
        step_once = _gan_step
    else:
        optimizers = [torch.optim.Adam(vae.parameters(), lr=spec.learning_rate)]
        step_once = _vae_step

    curve, eval_s, quality, loss, step = [], 0.0, None, None, 0
    pacer = Pacer()
    while step < spec.steps and not should_stop():
        index = torch.randint(len(images), (spec.batch_size,), generator=draws)
        noise = torch.randn((spec.batch_size, spec.latent_dim), generator=draws)
        loss = step_once(models, optimizers, images[index].to(device), noise.to(device), device, spec)
        step += 1
        if not math.isfinite(loss):
            raise JobFailed(f"the loss became {loss} at step {step}; lower spec.learning_rate")
        if spec.dataset == DIGITS and (step == spec.steps or (spec.eval_every and step % spec.eval_every == 0)):
            began = time.perf_counter()
            quality = _score(generator, eval_noise, device)
            curve.append([step, quality["fid_lite"], quality["mean_confidence"]])
            eval_s += time.perf_counter() - began
        if pacer.due(last_step=step == spec.steps):
            report({"step": step, "total": spec.steps, "loss": loss})
    path = checkpoint.save(workdir, generator.cpu(), {"family": family, "latent_dim": spec.latent_dim,
                                                      "hidden": spec.hidden, "shape": list(shape),
                                                      "dataset": spec.dataset})
    return {
        "stopped": step < spec.steps, "family": family, "steps_done": step, "total_steps": spec.steps,
        "steps_this_run": step, "images_seen": step * spec.batch_size, "images_per_epoch": len(images),
        "final_loss": loss, "quality": quality, "quality_curve": curve, "eval_s": eval_s,
        "parameters": parameter_count(*models), **peak_memory(device), "checkpoint": str(path),
    }


def _gan_step(models, optimizers, real, noise, device, spec: GenerativeSpec) -> float:
    """One discriminator and one generator update (the non-saturating GAN loss); returns their summed loss."""
    generator, critic = models
    opt_g, opt_d = optimizers
    ones, zeros = torch.ones(len(real), device=device), torch.zeros(len(real), device=device)
    with autocast(device, spec.mixed_precision):
        fake = generator(noise)
        d_real, d_fake = critic(real), critic(fake.detach())
    d_loss = F.binary_cross_entropy_with_logits(d_real.float(), ones) + \
        F.binary_cross_entropy_with_logits(d_fake.float(), zeros)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    with autocast(device, spec.mixed_precision):
        g_logits = critic(fake)
    g_loss = F.binary_cross_entropy_with_logits(g_logits.float(), ones)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return d_loss.item() + g_loss.item()


def _vae_step(models, optimizers, real, noise, device, spec: GenerativeSpec) -> float:
    """One update on the negative ELBO (squared error + KL, per image); returns it."""
    (vae,), (optimizer,) = models, optimizers
    with autocast(device, spec.mixed_precision):
        recon, mean, log_var = vae(real)
    recon, mean, log_var = recon.float(), mean.float(), log_var.float()
    squared = (recon - real).pow(2).flatten(1).sum(1)
    kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(1)
    loss = (squared + kl).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _score(generator: Generator, noise: torch.Tensor, device: torch.device) -> dict[str, Any]:
    from workers.generative.quality import digit_quality
    from workers.generative.sample import to_uint8

    was_training = generator.training
    generator.eval()
    with torch.inference_mode():
        images = to_uint8(generator(noise.to(device)))
    generator.train(was_training)
    return digit_quality(images)
