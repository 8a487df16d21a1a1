"""A tiny LIVE Release 2 (``databaserelease2``) with real, decodable images.

The release's layout and label files exactly as published (``dmos_realigned.mat`` with
``dmos_new`` and ``orgs``, ``dmos.mat``, ``refnames_all.mat``, ``refimgs/``, the five
distortion folders ``jp2k/ jpeg/ wn/ gblur/ fastfading/`` with ``img1.bmp`` ...) at the
official counts (982 label entries, 203 of them reference copies: 779 distorted images
and 29 references), but every image is a small BMP (48x64 by default) so a whole
pipeline runs on it in seconds. The references are smooth random textures; each entry is
its reference distorted with a strength drawn per entry (JPEG 2000 and JPEG at falling
quality, white noise, Gaussian blur, JPEG 2000 with lost blocks), and its DMOS rises with
that strength, so a head trained on it learns something that can be checked.

``make_mine`` writes a small full-reference set in no official layout, with the
``my.csv`` label list the docs' generic ``import csv`` command reads.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import _layouts as L
import numpy as np
from PIL import Image, ImageFilter
from scipy.io import savemat

SIZE = (48, 64)  # H, W
Distort = Callable[[Image.Image, float, np.random.Generator], Image.Image]


def reference(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> Image.Image:
    """A smooth random colour texture: three octaves of upsampled noise."""
    h, w = size
    out = np.zeros((h, w, 3))
    for cells, weight in ((4, 1.0), (8, 0.7), (16, 0.5)):
        coarse = rng.uniform(0, 255, (cells, cells * w // h, 3)).astype(np.uint8)
        up = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        out += weight * np.asarray(up, dtype=float)
    out = (out - out.min()) / (np.ptp(out) + 1e-9) * 235 + 10
    return Image.fromarray(out.astype(np.uint8))


def _reencode(img: Image.Image, fmt: str, **options: object) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _jp2k(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _reencode(img, "JPEG2000", quality_mode="rates", quality_layers=[5 * 6**s])


def _jpeg(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _reencode(img, "JPEG", quality=int(round(90 - 85 * s)))


def _noise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    noisy = np.asarray(img, dtype=float) + rng.normal(0, 3 + 45 * s, (*img.size[::-1], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _blur(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(0.4 + 2.6 * s))


def _fastfading(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    out = np.array(_jp2k(img, 0.3 * s, rng))
    for _ in range(int(1 + 10 * s)):  # 8x8 blocks lost in transmission, filled flat
        y, x = rng.integers(0, img.size[1] - 8), rng.integers(0, img.size[0] - 8)
        out[y : y + 8, x : x + 8] = out[y : y + 8, x : x + 8].mean(axis=(0, 1))
    return Image.fromarray(out)


DISTORTIONS: dict[str, Distort] = {
    "jp2k": _jp2k,
    "jpeg": _jpeg,
    "wn": _noise,
    "gblur": _blur,
    "fastfading": _fastfading,
}


def _strengths(n: int, refs: list[int], rng: np.random.Generator) -> np.ndarray:
    """Per entry a strength in (0, 1): the entries of one reference spread evenly."""
    out = np.empty(n)
    for r in set(refs):
        idx = [k for k, ref in enumerate(refs) if ref == r]
        out[idx] = (rng.permutation(len(idx)) + rng.uniform(0.2, 0.8, len(idx))) / len(idx)
    return out


def make_live_images(
    root: Path, seed: int = 0, size: tuple[int, int] = SIZE
) -> list[tuple[str, float]]:
    """Write a ``databaserelease2`` folder at ``root`` (official names and counts).

    Returns:
        (path relative to ``root``, DMOS) of each distorted image.
    """
    rng = np.random.default_rng(seed)
    refs = [reference(rng, size) for _ in L.LIVE_REFS]
    (root / "refimgs").mkdir(parents=True)
    for name, img in zip(L.LIVE_REFS, refs, strict=True):
        img.save(root / "refimgs" / name)
    entries = [(f, j) for f, m in L.LIVE_FOLDERS.items() for j in range(1, m + 1)]
    ref_of = [k % len(refs) for k in range(len(entries))]
    orgs = np.zeros(len(entries))
    orgs[rng.permutation(len(entries))[:203]] = 1  # the release's reference copies
    dmos = np.zeros(len(entries))
    for folder in L.LIVE_FOLDERS:
        (root / folder).mkdir()
        ks = [k for k, (f, _) in enumerate(entries) if f == folder and not orgs[k]]
        strength = _strengths(len(ks), [ref_of[k] for k in ks], rng)
        for k, s in zip(ks, strength, strict=True):
            img = DISTORTIONS[folder](refs[ref_of[k]], float(s), rng)
            img.save(root / folder / f"img{entries[k][1]}.bmp")
            dmos[k] = np.clip(100 * s + rng.normal(0, 4), -2.6, 111.8)
    for k in np.flatnonzero(orgs):  # a copy of its reference, DMOS 0, as in the release
        refs[ref_of[k]].save(root / entries[k][0] / f"img{entries[k][1]}.bmp")
    names = L.cells([L.LIVE_REFS[r] for r in ref_of])
    savemat(root / "dmos_realigned.mat", {"dmos_new": dmos[None, :], "orgs": orgs[None, :]})
    savemat(root / "dmos.mat", {"dmos": dmos[None, :] + 1, "orgs": orgs[None, :]})
    savemat(root / "refnames_all.mat", {"refnames_all": names})
    return [(f"{f}/img{j}.bmp", float(dmos[k])) for k, (f, j) in enumerate(entries) if not orgs[k]]


MINE_DISTORTIONS = ("jpeg", "gblur", "wn")


def make_mine(
    workspace: Path, root: str = "data/raw/mine", n_refs: int = 4, levels: int = 3, seed: int = 1
) -> None:
    """``my.csv`` (dist_name, ref_name, dmos on 0..100) and its images under ``root``."""
    rng = np.random.default_rng(seed)
    base = workspace / root
    (base / "ref").mkdir(parents=True)
    (base / "dist").mkdir()
    lines = ["dist_name,ref_name,dmos"]
    for r in range(n_refs):
        ref = reference(rng)
        ref.save(base / "ref" / f"scene{r}.bmp")
        for kind in MINE_DISTORTIONS:
            for level in range(1, levels + 1):
                s = (level - rng.uniform(0.1, 0.9)) / levels
                name = f"dist/scene{r}_{kind}_{level}.bmp"
                DISTORTIONS[kind](ref, s, rng).save(base / name)
                lines.append(f"{name},ref/scene{r}.bmp,{100 * s:.2f}")
    (workspace / "my.csv").write_text("\n".join(lines) + "\n")
