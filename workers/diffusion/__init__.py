"""The built-in diffusion jobs: train a small DDPM, and draw images from one of its checkpoints.

``train`` and ``sample`` take a validated spec (``workers.kinds.diffusion_train.TrainSpec``,
``workers.kinds.diffusion_sample.SampleSpec``), a workdir, a ``report(dict)`` callback for progress and a
``should_stop()`` poll, and return a JSON-able result dict. They import torch and diffusers; the scheduler only
ever imports the torch-free kinds in ``workers.kinds``, whose ``run`` calls these where the job runs.
"""

from workers.diffusion.sample import sample
from workers.diffusion.train import train

__all__ = ["sample", "train"]
