"""Estimates of the memory (RAM) a job's process holds, from its spec alone (``JobKind.memory_bytes``).

Estimates, not measurements: they count the large things a job keeps (a model's weights, gradients and optimizer
state, its activations for one batch, the images it holds) and a nominal figure for the interpreter and its
libraries; allocator overheads and framework caches come on top. They let the scheduler refuse on submit a job
that cannot fit on any node; a job's memory limit is what bounds what it really takes.
"""

from __future__ import annotations

from collections.abc import Sequence

MIB = 1024**2
GIB = 1024**3
#: Bytes of one float32 number.
FLOAT32_BYTES = 4
#: The interpreter with torch and diffusers imported, nominal (what such a process holds before its model and
#: data; tens of MiB more or less from one version or platform to another).
TORCH_RUNTIME_BYTES = 512 * MIB
#: The interpreter with only wattsched's workers imported (the synthetic kind), nominal.
PYTHON_RUNTIME_BYTES = 32 * MIB
#: Float32 numbers kept per parameter while training with AdamW: the weight, its gradient and Adam's two moments.
ADAM_FLOATS_PER_PARAMETER = 4
#: Feature maps a ResNet block keeps for the backward pass (its input, two norms, two activations, two convs, the
#: sum), each as large as the block's output; 1 with gradient checkpointing (its input, the rest recomputed).
TENSORS_PER_RESNET = 8


def unet_parameters(channels: Sequence[int], layers_per_block: int, image_channels: int) -> int:
    """Parameters of the UNet the diffusion-train kind builds (diffusers' UNet2DModel with ``channels`` as its
    block_out_channels, plain ResNet down and up blocks, attention in the middle block only), counted layer by
    layer: convolutions, the time embedding and its projections, norms, the middle block's attention."""
    temb = 4 * channels[0]

    def conv(c_in: int, c_out: int, k: int = 3) -> int:
        return k * k * c_in * c_out + c_out

    def resnet(c_in: int, c_out: int) -> int:
        shortcut = conv(c_in, c_out, 1) if c_in != c_out else 0
        norms = 2 * c_in + 2 * c_out
        return norms + conv(c_in, c_out) + (temb * c_out + c_out) + conv(c_out, c_out) + shortcut

    total = conv(image_channels, channels[0]) + (channels[0] * temb + temb) + (temb * temb + temb)
    skips = [channels[0]]
    c_prev = channels[0]
    for i, c in enumerate(channels):  # down blocks: each halves the image except the last
        for layer in range(layers_per_block):
            total += resnet(c_prev if layer == 0 else c, c)
            skips.append(c)
        if i < len(channels) - 1:
            total += conv(c, c)
            skips.append(c)
        c_prev = c
    last = channels[-1]
    total += 2 * resnet(last, last) + 2 * last + 4 * (last * last + last)  # middle: norm and q, k, v, out
    reversed_channels = list(reversed(channels))
    c_prev = last
    for i, c in enumerate(reversed_channels):  # up blocks: one ResNet more, each fed a skip connection
        for layer in range(layers_per_block + 1):
            skip = skips.pop()
            total += resnet((c_prev if layer == 0 else c) + skip, c)
        if i < len(channels) - 1:
            total += conv(c, c)
        c_prev = c
    return total + 2 * channels[0] + conv(channels[0], image_channels)  # the output norm and convolution


def unet_activation_bytes(channels: Sequence[int], layers_per_block: int, image_size: int,
                          checkpointing: bool = False) -> int:
    """Bytes of the feature maps one training image keeps for the backward pass (float32), and the middle
    block's attention scores (heads of 8 channels, over every pair of its pixels)."""
    per_resnet = 1 if checkpointing else TENSORS_PER_RESNET
    floats = 0
    for i, c in enumerate(channels):
        pixels = (image_size // 2**i) ** 2
        # a down block's ResNets, then the up block's at the same size (one more, with the skip concatenated)
        floats += per_resnet * pixels * c * (layers_per_block + 2 * (layers_per_block + 1))
    last_pixels = (image_size // 2 ** (len(channels) - 1)) ** 2
    heads = max(1, channels[-1] // 8)
    floats += heads * last_pixels**2 + 2 * per_resnet * last_pixels * channels[-1]
    return floats * FLOAT32_BYTES
