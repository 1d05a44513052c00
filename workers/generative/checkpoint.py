"""A trained GAN generator or VAE decoder on disk: ``generative-checkpoint.pt`` in the training job's workdir.

It holds ``{"family", "latent_dim", "hidden", "shape": [C, H, W], "dataset", "state": the generator's weights}``
and loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from workers.errors import SpecError
from workers.generative.models import Generator

CHECKPOINT_FILE = "generative-checkpoint.pt"


def save(workdir: Path, generator: Generator, meta: dict[str, Any]) -> Path:
    """Write the generator and its meta atomically (a reader never sees half a file)."""
    path = workdir / CHECKPOINT_FILE
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    torch.save({**meta, "state": generator.state_dict()}, temporary)
    os.replace(temporary, path)
    return path


def load(checkpoint: str | os.PathLike) -> tuple[Generator, dict[str, Any]]:
    """The generator of a checkpoint file or of a training job's workdir, with the checkpoint's meta."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        accepted = f"a gan-train or vae-train job's workdir, holding {CHECKPOINT_FILE}"
        raise SpecError(f"spec.checkpoint: {str(path)!r} does not exist; give {accepted}", field="spec.checkpoint",
                        accepted=accepted)
    data = torch.load(path, map_location="cpu", weights_only=True)
    generator = Generator(data["latent_dim"], data["hidden"], tuple(data["shape"]))
    generator.load_state_dict(data.pop("state"))
    return generator, data
