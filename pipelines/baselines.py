"""Classical full-reference baselines (PSNR, SSIM) for the results table.

Both come from scikit-image (``skimage.metrics``), computed on the decoded RGB images at
their native size. A reference whose size differs from its distorted image is resized to
it (bicubic) first; IQA datasets keep them equal, so this only guards odd inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cache.manifest import Manifest
from extract.images import load_image

BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": lambda ref, dist: float(peak_signal_noise_ratio(ref, dist, data_range=255)),
    "ssim": lambda ref, dist: float(
        structural_similarity(ref, dist, channel_axis=-1, data_range=255)
    ),
}


def _pair(manifest: Manifest, image_id: str, ref_id: str) -> tuple[np.ndarray, np.ndarray]:
    dist = load_image(manifest.resolve(image_id))
    ref = load_image(manifest.resolve(ref_id))
    if ref.shape != dist.shape:
        size = (dist.shape[1], dist.shape[0])
        ref = np.asarray(Image.fromarray(ref).resize(size, Image.Resampling.BICUBIC))
    return ref, dist


def baseline_scores(manifest: Manifest, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """PSNR and SSIM of each id against its reference (identical images give inf PSNR).

    Raises:
        ValueError: when the manifest has no reference for one of ``ids``.
    """
    refs = {r.image: r.ref for r in manifest.rows}
    out: dict[str, list[float]] = {name: [] for name in BASELINES}
    for image_id in ids:
        if not refs.get(image_id):
            raise ValueError(f"{image_id}: no reference image, PSNR/SSIM need one (FR data)")
        ref, dist = _pair(manifest, image_id, refs[image_id])
        for name, fn in BASELINES.items():
            out[name].append(fn(ref, dist))
    return {name: np.asarray(values) for name, values in out.items()}
