"""How good generated digits are, judged by a small classifier trained on scikit-learn's digits (no download).

A multi-layer perceptron (64 hidden ReLU units, fixed seed) is trained on the 8x8 digits. For a batch of generated
images (uint8 N x H x W x C, the first channel, averaged down to 8x8; at most the first
``QUALITY_IMAGES``, so that scores of jobs of different sizes compare) it gives:

- ``mean_confidence``: the mean of the classifier's top class probability (a digit-like image scores high);
- ``class_coverage``: the share of the 10 classes that at least one image is confidently (p >= 0.5) classified
  as (a generator that draws only ones scores 0.1);
- ``fid_lite``: the Fréchet distance between Gaussians fitted to the classifier's hidden features of the generated
  images and of the real digits. It is NOT the standard FID (no Inception network, 64 features of an 8x8 digit
  classifier): compare it only with other FID-lite figures from the same number of images.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

#: Named in every result, so that no report mistakes the score for the standard FID.
METHOD = "fid-lite: digits MLP classifier features (not the standard FID)"
#: The classifier's confidence that counts an image as a clear member of its class.
CONFIDENT_P = 0.5
#: Images scored at most (the first ones): FID-lite depends on the number of images, so every score uses as many.
QUALITY_IMAGES = 64
_CLASSES = 10
_RIDGE = 1e-6
_SIDE = 8


@functools.lru_cache(maxsize=1)
def _classifier():
    """The classifier and the mean and covariance of its hidden features over the real digits."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    features = digits.data / 16.0
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
    with warnings.catch_warnings():  # 200 iterations are enough to tell digits apart; full convergence is not needed
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, digits.target)
    hidden = _hidden(model, features)
    return model, hidden.mean(axis=0), np.cov(hidden, rowvar=False)


def _hidden(model, features: np.ndarray) -> np.ndarray:
    # The first layer's ReLU activations: the classifier's own representation of an image.
    return np.maximum(features @ model.coefs_[0] + model.intercepts_[0], 0.0)


def to_digit_features(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x C (the first channel is read) or N x H x W -> N x 64 floats in [0, 1], the classifier's
    input: averaged down to 8x8 (exactly when the sides are multiples of 8, else by a box filter)."""
    array = np.asarray(images, dtype=np.float64)
    if array.ndim == 4:
        array = array[..., 0]
    count, height, width = array.shape
    if height % _SIDE == 0 and width % _SIDE == 0:
        small = array.reshape(count, _SIDE, height // _SIDE, _SIDE, width // _SIDE).mean(axis=(2, 4))
    else:
        from PIL import Image

        small = np.stack([np.asarray(Image.fromarray(image.astype(np.float32))
                                     .resize((_SIDE, _SIDE), Image.Resampling.BOX)) for image in array])
    return small.reshape(count, _SIDE * _SIDE) / 255.0


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)), the Fréchet distance of two Gaussians."""
    from scipy import linalg

    # A small ridge, as common FID code adds: dead ReLU features make the covariances singular.
    ridge = _RIDGE * np.eye(len(cov_a))
    root, _ = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge), disp=False)
    root = np.real(root)  # rounding leaves tiny imaginary parts
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def digit_quality(images: np.ndarray) -> dict[str, Any]:
    """Mean confidence, class coverage and FID-lite of generated digits (see the module's docstring)."""
    model, real_mean, real_cov = _classifier()
    features = to_digit_features(images[:QUALITY_IMAGES])
    probabilities = model.predict_proba(features)
    confident = probabilities.max(axis=1) >= CONFIDENT_P
    classes = set(probabilities.argmax(axis=1)[confident].tolist())
    hidden = _hidden(model, features)
    # One image has no covariance: its Fréchet distance uses a zero covariance, and is reported as such.
    cov = np.cov(hidden, rowvar=False) if len(hidden) > 1 else np.zeros_like(real_cov)
    return {
        "method": METHOD,
        "num_images": int(len(features)),
        "mean_confidence": float(probabilities.max(axis=1).mean()),
        "class_coverage": len(classes) / _CLASSES,
        "fid_lite": frechet_distance(hidden.mean(axis=0), cov, real_mean, real_cov),
    }


def reference_quality(seed: int = 0) -> dict[str, Any]:
    """The scores of QUALITY_IMAGES real digits drawn at random: what a perfect generator would get at this number
    of images (FID-lite's floor is not zero, since a sample's statistics differ from the whole set's)."""
    from sklearn.datasets import load_digits

    images = load_digits().images  # N x 8 x 8, values 0..16
    chosen = np.random.default_rng(seed).choice(len(images), QUALITY_IMAGES, replace=False)
    return digit_quality(np.round(images[chosen] * (255.0 / 16.0)).astype(np.uint8)[..., None])
