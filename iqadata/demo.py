"""A small, synthetic, KADID-style demo dataset built from photographs in scikit-image.

**The labels are synthetic.** No human rated these images, and no image-quality metric
made the labels either (so no baseline row of a report is trivially perfect). Each label
comes from a documented *synthetic observer*: a fixed table of how strong each level of
each distortion type looks (``Distortion.strength``, rising with the level), scaled by
how busy the reference photograph is, since busy content hides noise-like distortions and
shows blur-like ones (contrast masking)::

    activity   = clip(mean |grad Y| / 24, 0, 1)                      # of the reference
    visibility = strength[level] * (1 + masking * (activity - 0.5))
    pseudo_mos = 1 + 4 * (1 - clip(visibility, 0, 1))                # KADID-like 1..5

with ``masking`` -0.5 for noise-like types, +0.5 for blur-like ones and 0 otherwise. It
is deterministic (no rater noise), falls strictly with the level for every reference and
distortion (tested), and is not a perceptual metric: it knows the distortion type and
level, which no method is told. The set exists so the whole pipeline (import, split,
extract, train, evaluate) runs with meaningful numbers on a fresh machine with no
dataset download; PSNR and SSIM stay honest baselines on it.

References: colour photographs that ship inside the scikit-image wheel and load with no
network (``skimage.data``: astronaut, chelsea, coffee, rocket, immunohistochemistry,
retina, hubble_deep_field, stereo_motorcycle) and grey-scale ones (camera, coins, moon,
clock, grass, gravel). The two large colour photos each also give a second,
non-overlapping half; halves of one photo share a ``group``, so splits stay
content-disjoint. Grey-scale photos get a fixed warm tone (``GREY_TONE``) so that a
saturation change alters them too. Each reference is centre-cropped to the target aspect
ratio and resized (Lanczos) to ``size``.

Distortions follow KADID-10k's types (Lin et al. 2019) in spirit, not its exact
parameters.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from skimage import data as skdata

from cache.console import progress as make_progress
from cache.outputs import check_output_dir, prepare_output_dir
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow, write_hashed_manifest
from iqadata.splits import make_splits, write_splits

MAX_LEVELS = 5
DEMO_KIND = "demo-set"
DEMO_DATASET = "demo"  # the manifest's dataset name (a dataset key beside the importers')

DistortionFn = Callable[[Image.Image, float, np.random.Generator], Image.Image]


def _blur(img: Image.Image, radius: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def _white_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    noisy = arr + rng.normal(0.0, sigma, size=arr.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def _impulse_noise(img: Image.Image, amount: float, rng: np.random.Generator) -> Image.Image:
    arr = np.array(img)
    hit = rng.random(arr.shape[:2]) < amount
    arr[hit] = np.where(rng.random((int(hit.sum()), 1)) < 0.5, 0, 255)
    return Image.fromarray(arr)


def _jpeg(img: Image.Image, quality: float, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _resample(img: Image.Image, factor: float, method: Image.Resampling) -> Image.Image:
    small = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    return img.resize(small, method).resize(img.size, method)


def _resampling_blur(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    return _resample(img, factor, Image.Resampling.BILINEAR)


def _pixelate(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    return _resample(img, factor, Image.Resampling.NEAREST)


def _enhance(kind: Callable[[Image.Image], ImageEnhance._Enhance]) -> DistortionFn:
    def apply(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
        return kind(img).enhance(factor)

    return apply


def _quantize(img: Image.Image, bits: float, rng: np.random.Generator) -> Image.Image:
    return ImageOps.posterize(img, int(bits))


@dataclass(frozen=True)
class Distortion:
    """One distortion type: how to apply it and how strong each level looks.

    Attributes:
        apply: ``(image, parameter, rng) -> image``.
        params: one parameter per level, mildest first.
        strength: the synthetic observer's visibility of each level (0..1, rising).
        masking: how the reference's activity changes visibility (see the module docstring).
    """

    apply: DistortionFn
    params: tuple[float, ...]
    strength: tuple[float, ...]
    masking: float = 0.0


NOISE_LIKE, BLUR_LIKE = -0.5, 0.5
DISTORTIONS: dict[str, Distortion] = {
    "gaussian_blur": Distortion(_blur, (0.6, 1.2, 2.0, 3.2, 5.0),
                                (0.10, 0.25, 0.45, 0.65, 0.85), BLUR_LIKE),
    "white_noise": Distortion(_white_noise, (4.0, 9.0, 16.0, 28.0, 45.0),
                              (0.08, 0.22, 0.40, 0.62, 0.85), NOISE_LIKE),
    "jpeg": Distortion(_jpeg, (60, 30, 15, 8, 3), (0.05, 0.15, 0.32, 0.55, 0.90), NOISE_LIKE),
    "contrast_change": Distortion(_enhance(ImageEnhance.Contrast), (0.75, 0.55, 0.4, 0.27, 0.15),
                                  (0.08, 0.18, 0.32, 0.48, 0.65)),
    "color_saturation": Distortion(_enhance(ImageEnhance.Color), (0.6, 0.4, 0.25, 0.1, 0.0),
                                   (0.04, 0.10, 0.18, 0.28, 0.40)),
    "resampling_blur": Distortion(_resampling_blur, (1.5, 2.0, 3.0, 4.0, 6.0),
                                  (0.10, 0.20, 0.38, 0.55, 0.75), BLUR_LIKE),
    "pixelate": Distortion(_pixelate, (2.0, 3.0, 4.0, 6.0, 8.0),
                           (0.12, 0.28, 0.45, 0.65, 0.85), BLUR_LIKE),
    "impulse_noise": Distortion(_impulse_noise, (0.01, 0.03, 0.06, 0.1, 0.16),
                                (0.10, 0.28, 0.48, 0.68, 0.88), NOISE_LIKE),
    "darken": Distortion(_enhance(ImageEnhance.Brightness), (0.85, 0.7, 0.55, 0.4, 0.25),
                         (0.05, 0.14, 0.28, 0.45, 0.65)),
    "quantization": Distortion(_quantize, (5, 4, 3, 2, 1), (0.06, 0.15, 0.30, 0.55, 0.85),
                               NOISE_LIKE),
}

# reference name -> (skimage.data loader, group, horizontal half or None)
def _whole(*names: str) -> dict[str, tuple[str, str, int | None]]:
    """Whole photographs: each its own loader and group."""
    return {name: (name, name, None) for name in names}


REFERENCES: dict[str, tuple[str, str, int | None]] = {
    **_whole("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina"),
    "hubble_a": ("hubble_deep_field", "hubble_deep_field", 0),
    "motorcycle_a": ("stereo_motorcycle", "motorcycle", 0),
    "hubble_b": ("hubble_deep_field", "hubble_deep_field", 1),
    "motorcycle_b": ("stereo_motorcycle", "motorcycle", 1),
    **_whole("camera", "coins", "moon", "clock", "grass", "gravel"),
}

# Grey-scale photographs get this fixed warm tone (an RGB gain per channel), so colour
# distortions (saturation) change them as they change a colour photograph.
GREY_TONE = (1.0, 0.86, 0.68)


ACTIVITY_SCALE = 24.0  # mean gradient magnitude (0-255 scale) of a busy photograph


def activity(image: np.ndarray) -> float:
    """How busy a reference is: ``clip(mean |grad Y| / 24, 0, 1)`` (ITU-R 601 luminance)."""
    y = np.asarray(image, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])  # (H, W)
    gy, gx = np.gradient(y)
    return float(np.clip(np.hypot(gx, gy).mean() / ACTIVITY_SCALE, 0.0, 1.0))


def pseudo_mos(strength: float, masking: float, busy: float) -> float:
    """The synthetic observer's 1..5 score (5 = no visible distortion; see above)."""
    visibility = strength * (1.0 + masking * (busy - 0.5))
    return 1.0 + 4.0 * (1.0 - float(np.clip(visibility, 0.0, 1.0)))


def _source_array(loader: str, half: int | None) -> np.ndarray:
    arr = getattr(skdata, loader)()
    if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
        arr = arr[0]
    if half is not None:
        mid = arr.shape[1] // 2
        arr = arr[:, :mid] if half == 0 else arr[:, mid:]  # (H, W/2, 3)
    if arr.ndim == 2:  # grey-scale photograph: a fixed warm tone
        arr = np.rint(arr[..., None] * np.asarray(GREY_TONE)).astype(np.uint8)  # (H, W, 3)
    return np.ascontiguousarray(arr[..., :3])


def load_reference(name: str, size: tuple[int, int]) -> Image.Image:
    """Reference ``name`` centre-cropped to the aspect of ``size`` (h, w) and resized."""
    loader, _, half = REFERENCES[name]
    img = Image.fromarray(_source_array(loader, half)).convert("RGB")
    return ImageOps.fit(img, (size[1], size[0]), Image.Resampling.LANCZOS)


def _level_indices(levels: int) -> list[int]:
    if not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be between 1 and {MAX_LEVELS}, got {levels}")
    return [int(i) for i in np.rint(np.linspace(0, MAX_LEVELS - 1, levels))] if levels > 1 else [2]


@dataclass(frozen=True)
class DemoSplits:
    """The demo set's split files: how many (0 for none) and their ratios, (train, val,
    test) or (train, test)."""

    count: int = 10
    ratios: Sequence[float] = (0.6, 0.2, 0.2)


def _check_args(n_refs: int, distortions: Sequence[str], size: tuple[int, int]) -> None:
    if not 1 <= n_refs <= len(REFERENCES):
        raise ValueError(f"n_refs must be between 1 and {len(REFERENCES)}, got {n_refs}")
    unknown = [d for d in distortions if d not in DISTORTIONS]
    if unknown:
        raise ValueError(f"unknown distortion(s) {unknown}; known: {list(DISTORTIONS)}")
    if min(size) < 16:
        raise ValueError(f"size must be at least 16x16 (SSIM needs a 7x7 window), got {size}")


def _save_png(img: Image.Image, path: Path) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", compress_level=1)
    return np.asarray(img)


def _distorted_rows(
    out: Path,
    ref_name: str,
    ref_index: int,
    ref_img: Image.Image,
    plan: list[tuple[int, tuple[str, int]]],
    seed: int,
) -> list[ManifestRow]:
    busy = activity(np.asarray(ref_img))
    rows = []
    for type_index, (dname, level) in plan:
        rng = np.random.default_rng([seed, ref_index, type_index, level])
        kind = DISTORTIONS[dname]
        image = f"images/{ref_name}_{dname}_{level}.png"
        _save_png(kind.apply(ref_img, kind.params[level - 1], rng), out / image)
        strength = kind.strength[level - 1]
        rows.append(ManifestRow(
            image=image, score=round(pseudo_mos(strength, kind.masking, busy), 6),
            group=REFERENCES[ref_name][1], ref=f"refs/{ref_name}.png", distortion=dname,
            extra={"level": str(level), "strength": f"{strength:g}", "activity": f"{busy:.4f}"},
        ))
    return rows


def build_demo(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    n_refs: int = 16,
    levels: int = 5,
    size: tuple[int, int] = (192, 256),
    *,
    distortions: Sequence[str] | None = None,
    splits: DemoSplits = DemoSplits(),
    progress: bool = False,
) -> Manifest:
    """Build the demo set: PNGs, ``manifest.csv`` (root ``.``) and ``splits/split_NN.json``.

    Args:
        out_dir: output folder (``refs/``, ``images/``, ``manifest.csv``, ``splits/``):
            new, empty, or an earlier demo set (nothing else is overwritten).
        seed: seeds the noise patterns and the splits; same seed, byte-identical files.
        n_refs: number of references (up to 16), taken in :data:`REFERENCES` order.
        levels: levels per distortion (1-5, spread over the 5 defined levels).
        size: (height, width) of every image.
        distortions: distortion names (default: all of :data:`DISTORTIONS`).
        splits: how many split files to write, and their ratios (:class:`DemoSplits`).
        progress: report progress per reference (a bar, or lines in a log).

    Returns:
        The manifest, read back from ``manifest.csv``.
    """
    names = list(distortions or DISTORTIONS)
    _check_args(n_refs, names, size)
    check_output_dir(out_dir, DEMO_KIND)
    plan = [(t, (d, lv + 1)) for t, d in enumerate(names) for lv in _level_indices(levels)]
    out = prepare_output_dir(out_dir, DEMO_KIND)
    rows: list[ManifestRow] = []
    refs = list(REFERENCES)[:n_refs]
    with make_progress(len(refs), "demo set", "ref", enabled=progress) as bar:
        for i, ref_name in enumerate(refs):
            ref_img = load_reference(ref_name, size)
            _save_png(ref_img, out / "refs" / f"{ref_name}.png")
            rows.extend(_distorted_rows(out, ref_name, i, ref_img, plan, seed))
            bar.update(1)
    info = DatasetInfo(DEMO_DATASET, "pseudo-MOS", False, (1.0, 5.0), ".")
    manifest = write_hashed_manifest(info, rows, out)
    if splits.count > 0:
        write_splits(make_splits(manifest, splits.ratios, splits.count, seed), out / "splits")
    return manifest
