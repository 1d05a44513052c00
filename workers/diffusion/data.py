"""The training images of a diffusion job, loaded from the dataset its spec names.

Every source ends as one float32 tensor N x C x H x W in [-1, 1] (the range a DDPM learns) at the spec's
image_size, held in memory: the built-in jobs are small. Sources:

- ``"digits"``: scikit-learn's bundled 8x8 digits (1797 grey images, values 0..16), upscaled.
- a folder of PNG/JPEG images (sorted by name): grey if every image is grey, otherwise RGB (alpha dropped);
  each is centre-cropped square and resized.
- a ``.npy`` array N x H x W or N x H x W x C (C = 1, 3 or 4): integers in 0..255, or floats in [0, 1];
  centre-cropped square and resized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from workers.errors import SpecError
from workers.kinds.diffusion_train import DIGITS

#: File name endings read as images in a dataset folder (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: PIL modes that hold a grey image; a folder of only these trains a one-channel model.
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")

_FIELD = "spec.dataset"
_ACCEPTED = f"{DIGITS!r}, a folder of PNG/JPEG images, or a .npy array N x H x W or N x H x W x C"


def _refuse(problem: str) -> SpecError:
    return SpecError(f"{_FIELD}: {problem}; give {_ACCEPTED}", field=_FIELD, accepted=_ACCEPTED)


def load_images(dataset: str, image_size: int, max_images: int | None = None) -> torch.Tensor:
    """Load a dataset as float32 N x C x image_size x image_size in [-1, 1]; at most max_images (the first)."""
    if dataset == DIGITS:
        array = _digits(max_images)
    else:
        path = Path(dataset).expanduser()
        if path.is_dir():
            array = _folder(path, image_size, max_images)
        elif path.suffix.lower() == ".npy" and path.is_file():
            array = _npy(path, max_images)
        else:
            raise _refuse(f"{dataset!r} is neither {DIGITS!r}, a folder, nor an existing .npy file")
    return _to_training_tensor(array, image_size)


def _digits(max_images: int | None) -> np.ndarray:
    # Imported here: scikit-learn is only needed by jobs that train on the digits.
    from sklearn.datasets import load_digits

    images = load_digits().images[:max_images]  # N x 8 x 8, values 0..16
    return (images / 16.0).astype(np.float32)[..., None]


def _folder(path: Path, image_size: int, max_images: int | None) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:max_images]
    if not files:
        raise _refuse(f"the folder {str(path)!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    images = []
    for file in files:
        try:
            image = Image.open(file)
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise _refuse(f"cannot read the image {str(file)!r} ({exc})") from exc
        images.append(image)
    mode = "L" if all(image.mode in _GREY_MODES for image in images) else "RGB"
    # Resized one by one here because a folder's images may differ in size.
    pixels = [np.asarray(_square(image.convert(mode), image_size)) for image in images]
    array = np.stack(pixels).astype(np.float32) / 255.0
    return array[..., None] if mode == "L" else array


def _square(image: Image.Image, size: int) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)


def _npy(path: Path, max_images: int | None) -> np.ndarray:
    try:
        # Memory-mapped so that max_images reads only the images it keeps.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise _refuse(f"cannot read {str(path)!r} as a numeric array ({exc})") from exc
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or len(array) == 0:
        raise _refuse(f"{str(path)!r} has shape {array.shape}, not N x H x W or N x H x W x C with C in 1, 3, 4")
    array = np.asarray(array[:max_images])
    if np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.float32) / 255.0
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1:
        return array.astype(np.float32)
    raise _refuse(f"{str(path)!r} holds {array.dtype} values outside 0..255 (integers) or [0, 1] (floats)")


def _to_training_tensor(array: np.ndarray, image_size: int) -> torch.Tensor:
    """N x H x W x C floats in [0, 1] -> N x C x image_size x image_size in [-1, 1], centre-cropped square."""
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    images = images[..., top : top + side, left : left + side]
    if side != image_size:
        # Antialiasing only matters when shrinking; the digits are enlarged.
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=side > image_size)
    return images.clamp(0.0, 1.0).mul(2.0).sub(1.0).contiguous()
