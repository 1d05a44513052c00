"""The ``vae-train`` kind: a small VAE (MLP encoder and decoder) trained on the diffusion jobs' data."""

from __future__ import annotations

from dataclasses import dataclass

from workers.kinds.generative_train import GenerativeSpec, GenerativeTrain
from workers.kinds.spec_fields import integer, positive_number, spec_field

NAME = "vae-train"


@dataclass(frozen=True)
class VaeSpec(GenerativeSpec):
    """A GenerativeSpec with a VAE's usual learning rate and a smaller latent."""

    learning_rate: float = spec_field(1e-3, positive_number(1.0))
    latent_dim: int = spec_field(16, integer(2, 1024))


class VaeTrain(GenerativeTrain):
    """Training a VAE; the checkpoint holds the decoder, which ``generative-sample`` draws from the prior with."""

    name = NAME
    family = "vae"
    spec_class = VaeSpec
