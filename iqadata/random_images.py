"""Images of random pixels, for PromptIQA's Table 5 "random images" prompt probe.

PromptIQA (ECCV 2024, sec. 4.4 C, Table 5, p. 13) replaces "images or scores in the ISPP by
generated random numbers". Its encoder is part of the model, so a random image goes through
it like any other. Here the encoder is frozen and cached, so the random images are written
as image files with a manifest: ``iqa-extract`` computes their features through the same
backbone and preprocessing as the trained head's store, and ``iqa-test-head --probe
random_images --random-images STORE`` prompts with them. Features of random images, not
random feature vectors: MoNet's 128-d feature is a pooled post-ReLU map (non-negative),
which N(0, 1) vectors are not.

Pixels are i.i.d. uniform integers 0-255 per channel (``numpy.random.default_rng(seed)``),
saved as PNG. Their manifest scores are seeded U(0, 1) draws, marked ``pseudo-MOS``; no
probe reads them (``random_images`` keeps the real prompt's scores, ``random_images_scores``
draws its own). The output folder is new, empty, or an earlier output of this command.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from cache.outputs import check_output_dir, prepare_output_dir
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow, write_hashed_manifest

KIND = "random-images"


def write_random_images(
    out_dir: str | os.PathLike[str],
    count: int = 32,
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
) -> Manifest:
    """Write ``count`` random-pixel PNG images of ``size`` (H, W) and their manifest.

    Returns:
        The manifest, read back from ``OUT/manifest.csv``.
    """
    if count < 1 or min(size) < 1:
        raise ValueError(f"need count >= 1 and a positive size, got {count} and {size}")
    check_output_dir(out_dir, KIND)
    out = prepare_output_dir(out_dir, KIND)
    rng = np.random.default_rng(seed)
    rows = []
    (out / "images").mkdir(exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)  # (H, W, 3)
        name = f"images/random_{i:04d}.png"
        Image.fromarray(pixels).save(out / name, format="PNG", compress_level=1)
        rows.append(ManifestRow(image=name, score=round(float(rng.random()), 6), group=name))
    info = DatasetInfo("random_images", "pseudo-MOS", False, (0.0, 1.0), ".")
    return write_hashed_manifest(info, rows, out)
