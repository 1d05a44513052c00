"""The ``gan-train`` kind: a small GAN (MLP generator and discriminator) trained on the diffusion jobs' data."""

from __future__ import annotations

from dataclasses import dataclass

from workers.kinds.generative_train import GenerativeSpec, GenerativeTrain
from workers.kinds.spec_fields import positive_number, spec_field

NAME = "gan-train"


@dataclass(frozen=True)
class GanSpec(GenerativeSpec):
    """A GenerativeSpec with the GAN's usual Adam learning rate."""

    learning_rate: float = spec_field(2e-4, positive_number(1.0))


class GanTrain(GenerativeTrain):
    """Training a GAN; the checkpoint holds the generator, which ``generative-sample`` draws from."""

    name = NAME
    family = "gan"
    spec_class = GanSpec
