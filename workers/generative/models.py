"""The GAN and VAE networks: small multi-layer perceptrons over flattened images, sized like the diffusion UNet.

With the defaults (8x8 grey digits, hidden 256) each has about 0.1-0.2 M parameters, the order of the default
diffusion UNet's (channels 16/32), so the families are compared at a similar model size. Images are in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """Noise (latent_dim) -> image (C x H x W) in [-1, 1]."""

    def __init__(self, latent_dim: int, hidden: int, shape: tuple[int, int, int]):
        super().__init__()
        self.shape = shape
        self.body = _mlp([latent_dim, hidden, hidden, shape[0] * shape[1] * shape[2]])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(z)).view(-1, *self.shape)


class Discriminator(nn.Module):
    """Image -> one logit (real vs generated)."""

    def __init__(self, hidden: int, shape: tuple[int, int, int]):
        super().__init__()
        self.body = _mlp([shape[0] * shape[1] * shape[2], hidden, hidden, 1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.flatten(1)).squeeze(1)


class Vae(nn.Module):
    """A Gaussian VAE: image -> (mean, log variance) of the latent; latent -> image in [-1, 1]."""

    def __init__(self, latent_dim: int, hidden: int, shape: tuple[int, int, int]):
        super().__init__()
        pixels = shape[0] * shape[1] * shape[2]
        self.encoder = _mlp([pixels, hidden, hidden, 2 * latent_dim])
        self.decoder = Generator(latent_dim, hidden, shape)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(images.flatten(1)).chunk(2, dim=1)
        return mean, log_var

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_var = self.encode(images)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        return self.decoder(z), mean, log_var


def parameter_count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
