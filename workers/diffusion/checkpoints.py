"""Training checkpoints: written atomically, found again by a resumed training job or by a sampling job.

A training job's workdir holds::

    checkpoints/step-000050/    a periodic checkpoint, or one written on a stop request (the 2 latest are kept)
    checkpoints/final/          written when training reached spec.steps

and every checkpoint holds::

    unet/                 the model (UNet2DModel.save_pretrained: config.json + safetensors)
    scheduler/            the DDPM noise schedule (scheduler_config.json)
    training_state.pt     optimizer state, the RNG state of batches and noise, and the fp16 gradient scaler's
                          state (empty without fp16); loads with weights_only=True
    meta.json             {"step": optimizer steps done, "loss": loss of the last step}
    spec.json             the normalised TrainSpec that wrote it

A checkpoint is written into a hidden folder and renamed into place, so a kill mid-write never leaves a
half-written checkpoint under a real name; hidden leftovers are removed when training starts again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

from workers.errors import SpecError
from workers.kinds.diffusion_train import TrainSpec

CHECKPOINTS_DIR = "checkpoints"
FINAL = "final"
UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
SPEC_FILE = "spec.json"
#: Periodic checkpoints kept per job: the latest, and one more in case the latest is somehow damaged.
KEEP_STEP_CHECKPOINTS = 2
_STEP_PREFIX = "step-"
_PARTIAL_PREFIXES = (".tmp-", ".old-")


def step_name(step: int) -> str:
    """The folder name of the periodic checkpoint after `step` optimizer steps."""
    return f"{_STEP_PREFIX}{step:06d}"


def read_meta(checkpoint: Path) -> dict[str, Any]:
    """The step and loss a checkpoint was written at."""
    return json.loads((checkpoint / META_FILE).read_text())


def read_spec(checkpoint: Path) -> dict[str, Any]:
    """The normalised training spec (as a dict) that wrote a checkpoint."""
    return json.loads((checkpoint / SPEC_FILE).read_text())


def load_unet(checkpoint: Path) -> UNet2DModel:
    """The model saved in a checkpoint, on the CPU, in float32."""
    # low_cpu_mem_usage needs the accelerate package, which wattsched does not require; asking for it
    # without accelerate only logs a warning.
    return UNet2DModel.from_pretrained(checkpoint / UNET_DIR, low_cpu_mem_usage=False)


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    """The optimizer state (``"optimizer"``), batch/noise RNG state (``"rng"``) and gradient scaler state
    (``"scaler"``: empty without fp16, absent from checkpoints written before fp16 existed) saved in a checkpoint."""
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)


def save_checkpoint(
    root: Path,
    name: str,
    *,
    model: Any,
    noise_scheduler: Any,
    training_state: dict[str, Any],
    meta: dict[str, Any],
    spec: TrainSpec,
) -> Path:
    """Write a checkpoint atomically as ``root/name`` (replacing one of that name) and return its path."""
    partial = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial / UNET_DIR)
    noise_scheduler.save_pretrained(partial / SCHEDULER_DIR)
    torch.save(training_state, partial / STATE_FILE)
    (partial / META_FILE).write_text(json.dumps(meta))
    (partial / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    target = root / name
    if target.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first. A kill between the
        # two renames loses only this name; the periodic checkpoints remain.
        old = root / f".old-{name}-{os.getpid()}"
        os.rename(target, old)
        os.rename(partial, target)
        shutil.rmtree(old)
    else:
        os.rename(partial, target)
    _prune(root)
    return target


def _prune(root: Path) -> None:
    # Sorted by number, not name: step-1000000 comes after step-999999.
    steps = sorted(
        (p for p in root.iterdir() if p.name.startswith(_STEP_PREFIX)), key=lambda p: int(p.name[len(_STEP_PREFIX) :])
    )
    for old in steps[:-KEEP_STEP_CHECKPOINTS]:
        shutil.rmtree(old)


def remove_partial(root: Path) -> None:
    """Delete what an interrupted save left behind (hidden folders only; real checkpoints are untouched)."""
    for path in root.iterdir():
        if path.name.startswith(_PARTIAL_PREFIXES):
            shutil.rmtree(path)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint in ``root`` with the most steps (``final`` wins a tie), or None if there is none."""
    if not root.is_dir():
        return None
    candidates = [p for p in root.iterdir() if p.name == FINAL or p.name.startswith(_STEP_PREFIX)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (read_meta(p)["step"], p.name == FINAL))


def resolve_checkpoint(path: str) -> Path:
    """The checkpoint a sampling spec means: a checkpoint folder, or a training workdir's latest checkpoint."""
    given = Path(path).expanduser()
    if (given / UNET_DIR).is_dir():
        return given
    for root in (given / CHECKPOINTS_DIR, given):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    accepted = "a checkpoint folder (holding unet/), or a training job's workdir (holding checkpoints/)"
    raise SpecError(
        f"spec.checkpoint: {path!r} holds no checkpoint; give {accepted}", field="spec.checkpoint", accepted=accepted
    )
