"""The data every trainer in examples/train/ uses: scikit-learn's digits.

The 1,797 8x8 grey-level digits bundled with scikit-learn (nothing is
downloaded) are up-sampled x2 (bilinear) to 1x16x16, so that the networks run
their convolutions at 16x16 and 8x8 and have real work to skip, and split,
stratified and seeded, into train / val / test (about 60 / 20 / 20 %).

Dynamic networks only pay off when inputs differ in difficulty, and the clean
digits are all easy. So a fixed, seeded half of the val and test samples is
replaced by a *hard* variant (rotation up to +-25 degrees, shift up to +-2
pixels, blur, a small erased patch and Gaussian noise); `Split.hard` marks
them. The train split is returned clean; trainers call `augment_hard` on each
batch so that the networks see both kinds.

Everything is standardised with one scalar mean and standard deviation taken
from the (clean) train split.

API (shared by d2nn.py and exits.py):
    IMAGE, NUM_CLASSES
    Split(x, y, hard)
    load_splits(seed=0) -> {"train", "val", "test"}
    augment_hard(x, rng, fraction=0.5) -> x with a random fraction made hard
    write_data(out_dir)  -> writes val.npz and test.npz
"""

from __future__ import annotations

import functools
import os
import pathlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

IMAGE = 16
NUM_CLASSES = 10

# Fractions of the whole set that go to validation and to test.
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2

# Strength of the hard variant (noise in standardised units).
MAX_ROTATION_DEGREES = 25.0
MAX_SHIFT_PIXELS = 2.0
NOISE_STD = 0.35
BLUR_PROBABILITY = 0.5
BLUR_SIGMA = 0.8
ERASE_PROBABILITY = 0.5
ERASE_SIZE = 4

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"


@dataclass
class Split:
    x: np.ndarray  # float32 [N, 1, 16, 16], standardised with the train split's mean/std
    y: np.ndarray  # int64 [N]
    hard: np.ndarray  # bool [N]: the sample is the hard variant


def upsample_digits(images_8x8: np.ndarray) -> np.ndarray:
    """Bilinear x2 up-sampling of [N, 8, 8] images in [0, 1] to [N, 1, 16, 16].

    Written out in NumPy (half-pixel centres, edge clamping: the same as
    torch's F.interpolate(scale_factor=2, mode="bilinear",
    align_corners=False)) so that the data does not depend on torch."""
    n, h, w = images_8x8.shape
    out_size = 2 * h
    # Source coordinate of each output pixel centre, clamped at the border.
    src = (np.arange(out_size) + 0.5) / 2.0 - 0.5
    src = np.clip(src, 0.0, h - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, h - 1)
    frac = (src - lo).astype(np.float64)
    img = images_8x8.astype(np.float64)
    rows = img[:, lo, :] * (1 - frac)[None, :, None] + img[:, hi, :] * frac[None, :, None]
    both = rows[:, :, lo] * (1 - frac)[None, None, :] + rows[:, :, hi] * frac[None, None, :]
    return both[:, None, :, :].astype(np.float32)


def make_hard(image: np.ndarray, rng: np.random.Generator, background: float) -> np.ndarray:
    """The hard variant of one standardised [1, 16, 16] image.

    A random rotation and shift (about the centre, filled with the background
    value), sometimes a blur, sometimes an erased square, then Gaussian
    noise. Each on its own is mild; together they cost a small CNN several
    points of accuracy, which is what a dynamic network should react to."""
    plane = image[0].astype(np.float64)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))
    shift = rng.uniform(-MAX_SHIFT_PIXELS, MAX_SHIFT_PIXELS, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    centre = np.array([(IMAGE - 1) / 2.0, (IMAGE - 1) / 2.0])
    # affine_transform maps output coordinates to input ones: in = R (out - c - s) + c
    offset = centre - rotation @ (centre + shift)
    plane = ndimage.affine_transform(plane, rotation, offset=offset, order=1, mode="constant", cval=background)
    if rng.random() < BLUR_PROBABILITY:
        plane = ndimage.gaussian_filter(plane, BLUR_SIGMA, mode="nearest")
    if rng.random() < ERASE_PROBABILITY:
        top, left = rng.integers(2, IMAGE - ERASE_SIZE - 2, size=2)
        plane[top : top + ERASE_SIZE, left : left + ERASE_SIZE] = background
    plane = plane + rng.normal(0.0, NOISE_STD, size=plane.shape)
    return plane[None].astype(np.float32)


def augment_hard(x: np.ndarray, rng: np.random.Generator, fraction: float = 0.5) -> np.ndarray:
    """Return a copy of a clean, standardised training batch [B, 1, 16, 16] in
    which a random `fraction` of the samples are replaced by their hard
    variant (the same transform as the val/test hard samples)."""
    out = x.copy()
    # The background (a 0 pixel) is the smallest value of a clean standardised batch.
    background = float(x.min())
    chosen = rng.random(len(x)) < fraction
    for i in np.flatnonzero(chosen):
        out[i] = make_hard(x[i], rng, background)
    return out


@functools.lru_cache(maxsize=4)
def _cached_splits(seed: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    digits = load_digits()
    images = upsample_digits(digits.images.astype(np.float32) / 16.0)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    train_idx, rest_idx = train_test_split(
        index, test_size=VAL_FRACTION + TEST_FRACTION, stratify=labels, random_state=seed
    )
    val_idx, test_idx = train_test_split(
        rest_idx,
        test_size=TEST_FRACTION / (VAL_FRACTION + TEST_FRACTION),
        stratify=labels[rest_idx],
        random_state=seed,
    )
    train_idx, val_idx, test_idx = np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)

    # One scalar mean/std from the clean training images.
    mean = float(images[train_idx].mean(dtype=np.float64))
    std = float(images[train_idx].std(dtype=np.float64))
    standardised = ((images - mean) / std).astype(np.float32)
    background = (0.0 - mean) / std

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD161]))
    out = []
    for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        x = standardised[idx].copy()
        hard = np.zeros(len(idx), dtype=bool)
        if name != "train":
            # A fixed half of the samples, chosen per split, become hard.
            hard[rng.choice(len(idx), size=len(idx) // 2, replace=False)] = True
            for i in np.flatnonzero(hard):
                x[i] = make_hard(x[i], rng, background)
        out.append((x, labels[idx].copy(), hard))
    return tuple(out)


def load_splits(seed: int = 0) -> dict[str, Split]:
    """The train / val / test splits (fresh copies; deterministic for a seed)."""
    parts = _cached_splits(seed)
    return {
        name: Split(x=x.copy(), y=y.copy(), hard=hard.copy())
        for name, (x, y, hard) in zip(("train", "val", "test"), parts)
    }


def write_data(out_dir: str | os.PathLike = DATA_DIR, seed: int = 0) -> dict[str, pathlib.Path]:
    """Write val.npz and test.npz (arrays x, y, hard) into out_dir.

    np.savez_compressed stores fixed zip timestamps, so the bytes are the same
    on every run."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(seed)
    written = {}
    for name in ("val", "test"):
        path = out_dir / f"{name}.npz"
        s = splits[name]
        np.savez_compressed(path, x=s.x, y=s.y, hard=s.hard)
        written[name] = path
    return written


if __name__ == "__main__":
    for name, split in load_splits().items():
        print(f"{name}: x {split.x.shape} {split.x.dtype}, {int(split.hard.sum())} hard, classes {np.bincount(split.y)}")
