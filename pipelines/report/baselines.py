"""Classical full-reference baselines (PSNR, SSIM) for the results table.

Both come from scikit-image (``skimage.metrics``), computed on the decoded RGB images at
their native size. A reference whose size differs from its distorted image is resized to
it (bicubic) first; IQA datasets keep them equal, so this only guards odd inputs.

The report scores them on the test images of the same split files the heads were tested
on (the paths each run's ``metrics.json`` records), so a baseline row and a head row of
one table always describe the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from extract.images import load_image
from iqadata.manifest import Manifest, read_split
from pipelines.report.runs import LabelScale, Predictions

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


def resolve_split(path: str, manifest: Manifest) -> Path:
    """A recorded split path, or the file of that name beside the manifest (``splits/``)."""
    given = Path(path)
    if given.is_file() or manifest.path is None:
        return given
    beside = manifest.path.parent / "splits" / given.name
    return beside if beside.is_file() else given


def _finite(values: np.ndarray) -> np.ndarray:
    """Identical images give an infinite PSNR: rank them above every finite value."""
    finite = values[np.isfinite(values)]
    top = float(finite.max()) + 10.0 if finite.size else 100.0
    return np.nan_to_num(values, posinf=top)


def baseline_predictions(
    manifest: Manifest, split_paths: Sequence[str], scale: LabelScale
) -> dict[str, Predictions]:
    """PSNR and SSIM of each split's test images, shaped like a run's test predictions.

    Repeat ``k`` is the ``k``-th split; ``prediction`` holds the raw PSNR / SSIM values
    (higher is better) and ``predicted_score`` is None: they are not on the dataset's scale.
    """
    rows = manifest.by_id()
    seen: dict[str, dict[str, float]] = {}
    parts: dict[str, list[tuple[int, str, float]]] = {name: [] for name in BASELINES}
    for k, split_path in enumerate(split_paths):
        ids = list(read_split(resolve_split(split_path, manifest)).test)
        todo = [i for i in ids if i not in seen]
        for name, values in baseline_scores(manifest, todo).items():
            for i, v in zip(todo, values, strict=True):
                seen.setdefault(i, {})[name] = float(v)
        for name in BASELINES:
            parts[name] += [(k, i, seen[i][name]) for i in ids]
    out = {}
    for name, triples in parts.items():
        ids = [i for _, i, _ in triples]
        score = np.array([rows[i].score for i in ids], dtype=np.float64)
        out[name] = Predictions(
            run=np.array([k for k, _, _ in triples], dtype=np.int64), ids=ids,
            distortion=[rows[i].distortion for i in ids], target=scale.to_target(score),
            prediction=_finite(np.array([v for _, _, v in triples], dtype=np.float64)),
            score=score, predicted_score=None,
        )
    return out
