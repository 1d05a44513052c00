"""What a user may ask of the built-in diffusion jobs, validated before anything runs.

The scheduler calls ``parse_spec`` when a job is submitted, so a typo is refused at once, with the field and
what it accepts, instead of failing on a GPU an hour later. This module must stay cheap to import: no torch,
no diffusers (a test checks it). What a spec points to (a dataset folder, a checkpoint) is only checked where
the job runs, because the scheduler may not see the same file system.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from workers.errors import SpecError

TRAIN = "diffusion-train"
SAMPLE = "diffusion-sample"
#: The job kinds this package runs.
KINDS = (TRAIN, SAMPLE)

#: The dataset name that means scikit-learn's bundled 8x8 digits (1797 grey images, no download).
DIGITS = "digits"


@dataclass(frozen=True)
class _Rule:
    """How one field is checked: what it accepts (in words, for messages) and how a good value is stored."""

    accepted: str
    check: Callable[[Any], bool]
    normalise: Callable[[Any], Any] = lambda value: value


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, but `"steps": true` is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _integer(low: int, high: int) -> _Rule:
    return _Rule(f"an integer from {low} to {high}", lambda v: _is_int(v) and low <= v <= high)


def _optional_integer(low: int, high: int) -> _Rule:
    return _Rule(
        f"null or an integer from {low} to {high}", lambda v: v is None or (_is_int(v) and low <= v <= high)
    )


def _positive_number(high: float) -> _Rule:
    def check(value: Any) -> bool:
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and 0 < value <= high

    return _Rule(f"a number greater than 0 and at most {high}", check, float)


def _choice(*options: str) -> _Rule:
    return _Rule("one of " + ", ".join(repr(o) for o in options), lambda v: v in options)


_BOOLEAN = _Rule("true or false", lambda v: isinstance(v, bool))
_CHECKPOINT = _Rule("a path to a checkpoint directory or to a training job's workdir", _is_non_empty_string)
_DATASET = _Rule(
    f"{DIGITS!r}, or a path to a folder of PNG/JPEG images or to a .npy array (N x H x W or N x H x W x C)",
    _is_non_empty_string,
)
_CHANNELS = _Rule(
    "a list of 1 to 4 integers, each a multiple of 8 from 8 to 1024 (the UNet's block_out_channels)",
    lambda v: isinstance(v, (list, tuple))
    and 1 <= len(v) <= 4
    and all(_is_int(c) and 8 <= c <= 1024 and c % 8 == 0 for c in v),
    tuple,
)
_SEED = _integer(0, 2**32 - 1)
_MIXED_PRECISION = _choice("no", "bf16")


def _spec_field(default: Any, rule: _Rule) -> Any:
    return field(default=default, metadata={"rule": rule})


def _validate_fields(spec: Any) -> None:
    """Check every field of a spec dataclass against its rule and store the normalised value."""
    for f in fields(spec):
        value = getattr(spec, f.name)
        rule: _Rule = f.metadata["rule"]
        if not rule.check(value):
            raise SpecError(
                f"spec.{f.name}: must be {rule.accepted}, got {value!r}", field=f"spec.{f.name}", accepted=rule.accepted
            )
        # Frozen dataclass: normalising in __post_init__ is the one place a field may be set.
        object.__setattr__(spec, f.name, rule.normalise(value))


def _to_dict(spec: Any) -> dict[str, Any]:
    result = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        result[f.name] = list(value) if isinstance(value, tuple) else value
    return result


@dataclass(frozen=True)
class TrainSpec:
    """A small DDPM (diffusers UNet2DModel + DDPMScheduler) trained on a dataset; the defaults finish on a CPU.

    dataset: ``"digits"`` (scikit-learn's 8x8 digits), a folder of PNG/JPEG images, or a ``.npy`` array
        (uint8 in 0..255, or floats in [0, 1]); images are centre-cropped square and resized to image_size.
    image_size: side of the square training images, in pixels.
    channels: the UNet's block_out_channels; the image is halved ``len(channels) - 1`` times.
    layers_per_block: ResNet layers in each UNet block.
    steps: total optimizer steps of the job, counted across resumes.
    batch_size: images per optimizer step (drawn with replacement).
    learning_rate: AdamW learning rate.
    num_train_timesteps: length of the DDPM noise schedule.
    mixed_precision: ``"no"`` or ``"bf16"`` (bf16 autocast for the forward pass).
    gradient_checkpointing: trade compute for memory in the UNet.
    checkpoint_every: write a checkpoint every this many steps (and always at the end or on stop).
    seed: seeds weights, batch order and noise; a resumed job continues the same random stream.
    resume: continue from the latest checkpoint in the workdir, if any; false deletes them and starts over.
    max_images: use at most this many images of the dataset (the first ones); null for all.
    """

    dataset: str = _spec_field(DIGITS, _DATASET)
    image_size: int = _spec_field(16, _integer(8, 256))
    channels: tuple[int, ...] = _spec_field((16, 32), _CHANNELS)
    layers_per_block: int = _spec_field(1, _integer(1, 4))
    steps: int = _spec_field(200, _integer(1, 1_000_000))
    batch_size: int = _spec_field(32, _integer(1, 4096))
    learning_rate: float = _spec_field(1e-3, _positive_number(1.0))
    num_train_timesteps: int = _spec_field(1000, _integer(2, 10_000))
    mixed_precision: str = _spec_field("no", _MIXED_PRECISION)
    gradient_checkpointing: bool = _spec_field(False, _BOOLEAN)
    checkpoint_every: int = _spec_field(50, _integer(1, 1_000_000))
    seed: int = _spec_field(0, _SEED)
    resume: bool = _spec_field(True, _BOOLEAN)
    max_images: int | None = _spec_field(None, _optional_integer(1, 10_000_000))

    def __post_init__(self) -> None:
        _validate_fields(self)
        # Each down block but the last halves the image, so the side must divide evenly that many times.
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            accepted = f"a multiple of {factor} from 8 to 256 when channels has {len(self.channels)} entries"
            raise SpecError(
                f"spec.image_size: must be {accepted}, got {self.image_size!r}",
                field="spec.image_size",
                accepted=accepted,
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict with every default filled in."""
        return _to_dict(self)


@dataclass(frozen=True)
class SampleSpec:
    """Images drawn from a trained checkpoint with DDPM or DDIM.

    checkpoint: a checkpoint directory, or a training job's workdir (its final, else latest, checkpoint).
    sampler: ``"ddpm"`` or ``"ddim"``.
    num_inference_steps: denoising steps; null means 50 for DDIM (at most the training timesteps) and the
        checkpoint's num_train_timesteps for DDPM.
    num_images: how many images to draw.
    batch_size: images denoised together.
    seed: seeds the initial noise (and DDPM's per-step noise).
    mixed_precision: ``"no"`` or ``"bf16"``.
    """

    checkpoint: str = _spec_field(None, _CHECKPOINT)
    sampler: str = _spec_field("ddim", _choice("ddpm", "ddim"))
    num_inference_steps: int | None = _spec_field(None, _optional_integer(1, 10_000))
    num_images: int = _spec_field(16, _integer(1, 100_000))
    batch_size: int = _spec_field(16, _integer(1, 4096))
    seed: int = _spec_field(0, _SEED)
    mixed_precision: str = _spec_field("no", _MIXED_PRECISION)

    def __post_init__(self) -> None:
        _validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict with every default filled in (num_inference_steps may stay null)."""
        return _to_dict(self)


_SPEC_CLASSES: dict[str, type[TrainSpec] | type[SampleSpec]] = {TRAIN: TrainSpec, SAMPLE: SampleSpec}
#: Fields a user must give, per kind; every other field has a default.
_REQUIRED = {TRAIN: (), SAMPLE: ("checkpoint",)}


def parse_spec(kind: str, spec: Mapping[str, Any]) -> TrainSpec | SampleSpec:
    """Validate a user's spec for a job kind and return it normalised, defaults filled in.

    Raises SpecError naming the offending field (``kind``, ``spec``, ``spec.<name>``) and what it accepts.
    """
    if kind not in _SPEC_CLASSES:
        accepted = "one of " + ", ".join(repr(k) for k in KINDS)
        raise SpecError(f"kind: must be {accepted}, got {kind!r}", field="kind", accepted=accepted)
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec: must be a JSON object, got {spec!r}", field="spec", accepted="a JSON object")
    spec_class = _SPEC_CLASSES[kind]
    names = [f.name for f in fields(spec_class)]
    accepted_keys = "one of the keys " + ", ".join(names)
    for key in spec:
        if key not in names:
            raise SpecError(
                f"spec.{key}: unknown key for a {kind} job; accepted keys are {', '.join(names)}",
                field=f"spec.{key}",
                accepted=accepted_keys,
            )
    for name in _REQUIRED[kind]:
        if spec.get(name) is None:
            rule: _Rule = spec_class.__dataclass_fields__[name].metadata["rule"]
            raise SpecError(
                f"spec.{name}: is required for a {kind} job; give {rule.accepted}",
                field=f"spec.{name}",
                accepted=rule.accepted,
            )
    return spec_class(**spec)
