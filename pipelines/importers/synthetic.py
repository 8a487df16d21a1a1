"""Importers for the synthetic-distortion (full-reference) sets: LIVE, CSIQ, TID2013, KADID-10k.

Each reads the label files of the official download layout (conventions as documented
by the dataset authors and as read by hyperIQA ``folders.py`` and PromptIQA
``utils/dataset/folders.py``; none of their code is used) and sets ``group`` to the
reference image's stem, so splits are content-disjoint.

Deviations from those loaders, on purpose:

* LIVE uses ``dmos_realigned.mat`` by default (the release's recommended, realigned
  scores, as hyperIQA and PromptIQA do); ``realigned=False`` reads ``dmos.mat`` (pyiqa).
* TID2013 and KADID-10k file names are matched case-insensitively and recorded with the
  case found on disk, so ids are real paths on case-sensitive file systems.
* Labels stay raw (DMOS stays DMOS); orientation and range go into the metadata and
  the heads normalise.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from cache.manifest import DatasetInfo, Manifest, ManifestError, ManifestRow
from pipelines.importers._common import (
    Expected,
    ExpectedLike,
    Located,
    as_expected,
    build_manifest,
    dataset_root,
    folder_index,
    load_mat,
    mat_strings,
    parse_float,
    require_file,
    text_lines,
)

LIVE_FOLDERS = {"jp2k": 227, "jpeg": 233, "wn": 174, "gblur": 174, "fastfading": 174}
LIVE_DISTORTIONS = {
    "jp2k": "jpeg2000",
    "jpeg": "jpeg",
    "wn": "white_noise",
    "gblur": "gaussian_blur",
    "fastfading": "fast_fading",
}
CSIQ_DISTORTIONS = {
    "awgn": "white_noise",
    "blur": "gaussian_blur",
    "jpeg": "jpeg",
    "jpeg2000": "jpeg2000",
    "fnoise": "pink_noise",
    "contrast": "contrast_change",
}
TID2013_DISTORTIONS = (
    "additive_gaussian_noise", "color_component_noise", "spatially_correlated_noise",
    "masked_noise", "high_frequency_noise", "impulse_noise", "quantization_noise",
    "gaussian_blur", "image_denoising", "jpeg", "jpeg2000", "jpeg_transmission_errors",
    "jpeg2000_transmission_errors", "non_eccentricity_pattern_noise",
    "local_blockwise_distortions", "mean_shift", "contrast_change", "color_saturation_change",
    "multiplicative_gaussian_noise", "comfort_noise", "lossy_compression_of_noisy_images",
    "color_quantization_with_dither", "chromatic_aberrations", "sparse_sampling_reconstruction",
)  # fmt: skip
KADID_DISTORTIONS = (
    "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift",
    "color_quantization", "color_saturation_1", "color_saturation_2", "jpeg2000", "jpeg",
    "white_noise", "white_noise_color_component", "impulse_noise", "multiplicative_noise",
    "denoise", "brighten", "darken", "mean_shift", "jitter", "non_eccentricity_patch",
    "pixelate", "quantization", "color_block", "high_sharpen", "contrast_change",
)  # fmt: skip
_TID_NAME = re.compile(r"^i(\d\d)_(\d\d)_(\d)\.bmp$", re.IGNORECASE)
_KADID_NAME = re.compile(r"^I(\d\d)_(\d\d)_(\d\d)\.png$", re.IGNORECASE)


def _live_entries(folders: dict[str, int]) -> list[tuple[str, str]]:
    """(folder, image id) for every entry of the LIVE label arrays, in their order."""
    return [(f, f"{f}/img{j}.bmp") for f, n in folders.items() for j in range(1, n + 1)]


def import_live(
    root: str | os.PathLike[str],
    *,
    realigned: bool = True,
    folders: dict[str, int] | None = None,
    expected: ExpectedLike = Expected(779, 29),
) -> Manifest:
    """LIVE Release 2: 982 label entries, reference copies (``orgs``) dropped -> 779 / 29.

    Args:
        root: the ``databaserelease2`` folder.
        realigned: read ``dmos_realigned.mat`` (``dmos_new``) instead of ``dmos.mat``.
        folders: distortion folder -> number of entries, in label order (official default).
        expected: (images, refs) to check, or None.
    """
    base = dataset_root(root)
    label, key = ("dmos_realigned.mat", "dmos_new") if realigned else ("dmos.mat", "dmos")
    label_path = require_file(base, label)
    scores = load_mat(label_path, key).reshape(-1)
    orgs = load_mat(label_path, "orgs").reshape(-1)
    refs = mat_strings(load_mat(require_file(base, "refnames_all.mat"), "refnames_all"))
    entries = _live_entries(folders or LIVE_FOLDERS)
    if not len(scores) == len(orgs) == len(refs) == len(entries):
        raise ManifestError(
            f"{label_path}: {len(scores)} scores, {len(orgs)} orgs flags and {len(refs)}"
            f" reference names, but the folders list {len(entries)} entries"
        )
    located = []
    for k, ((folder, image), ref) in enumerate(zip(entries, refs, strict=True)):
        if orgs[k]:
            continue
        where = f"{label_path}: entry {k + 1} ({image})"
        row = ManifestRow(
            image=image,
            ref=f"refimgs/{ref}",
            score=parse_float(scores[k], where),
            group=Path(ref).stem,
            distortion=LIVE_DISTORTIONS.get(folder, folder),
        )
        located.append(Located(row, where))
    info = DatasetInfo("live", "DMOS", True, (0.0, 100.0), str(base))
    return build_manifest(info, located, as_expected(expected), str(label_path))


def import_csiq(
    root: str | os.PathLike[str],
    *,
    label_file: str = "csiq_label.txt",
    image_dir: str = "dst_imgs_all",
    ref_dir: str = "src_imgs",
    expected: ExpectedLike = Expected(866, 30),
) -> Manifest:
    """CSIQ: ``<name> <dmos>`` lines, names ``<ref>.<TYPE>.<level>.png``; 866 / 30."""
    base = dataset_root(root)
    label_path = require_file(base, label_file)
    located = []
    for lineno, fields in text_lines(label_path):
        where = f"{label_path}:{lineno}"
        parts = fields[0].split(".") if len(fields) == 2 else []
        if len(parts) != 4:
            raise ManifestError(
                f"{where}: expected '<ref>.<type>.<level>.png <dmos>', got {fields}"
            )
        row = ManifestRow(
            image=f"{image_dir}/{fields[0]}",
            ref=f"{ref_dir}/{parts[0]}.png",
            score=parse_float(fields[1], where),
            group=parts[0],
            distortion=CSIQ_DISTORTIONS.get(parts[1].lower(), parts[1].lower()),
            extra={"level": parts[2]},
        )
        located.append(Located(row, where))
    info = DatasetInfo("csiq", "DMOS", True, (0.0, 1.0), str(base))
    return build_manifest(info, located, as_expected(expected), str(label_path))


def _on_disk(index: dict[str, str], folder: str, name: str, where: str) -> str:
    actual = index.get(name.lower())
    if actual is None:
        raise ManifestError(f"{where}: file missing (any case): {folder}/{name}")
    return f"{folder}/{actual}"


def import_tid2013(
    root: str | os.PathLike[str],
    *,
    label_file: str = "mos_with_names.txt",
    image_dir: str = "distorted_images",
    ref_dir: str = "reference_images",
    expected: ExpectedLike = Expected(3000, 25),
) -> Manifest:
    """TID2013: ``<mos> <name>`` lines, names ``I<ref>_<type>_<level>.bmp``; 3000 / 25."""
    base = dataset_root(root)
    label_path = require_file(base, label_file)
    images, refs = folder_index(base / image_dir), folder_index(base / ref_dir)
    located = []
    for lineno, fields in text_lines(label_path):
        where = f"{label_path}:{lineno}"
        match = _TID_NAME.match(fields[1]) if len(fields) == 2 else None
        if match is None:
            raise ManifestError(f"{where}: expected '<mos> I##_##_#.bmp', got {fields}")
        ref_no, dist_no, level = match.groups()
        row = ManifestRow(
            image=_on_disk(images, image_dir, fields[1], where),
            ref=_on_disk(refs, ref_dir, f"I{ref_no}.bmp", where),
            score=parse_float(fields[0], where),
            group=f"I{ref_no}",
            distortion=_lookup(TID2013_DISTORTIONS, dist_no, where),
            extra={"level": level},
        )
        located.append(Located(row, where))
    info = DatasetInfo("tid2013", "MOS", False, (0.0, 9.0), str(base))
    return build_manifest(info, located, as_expected(expected), str(label_path))


def _lookup(names: tuple[str, ...], number: str, where: str) -> str:
    index = int(number) - 1
    if not 0 <= index < len(names):
        raise ManifestError(f"{where}: unknown distortion type {number!r}")
    return names[index]


def import_kadid10k(
    root: str | os.PathLike[str],
    *,
    label_file: str = "dmos.csv",
    image_dir: str = "images",
    expected: ExpectedLike = Expected(10125, 81),
) -> Manifest:
    """KADID-10k: ``dist_img,ref_img,dmos,var``; ``dmos`` is a 1-5 MOS (higher = better).

    ``var`` (a variance, not a std) is kept in the ``var`` extra column.
    """
    base = dataset_root(root)
    label_path = require_file(base, label_file)
    located = []
    with open(label_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"dist_img", "ref_img", "dmos"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{label_path}:1: missing columns {sorted(missing)}")
        for lineno, rec in enumerate(reader, start=2):
            located.append(_kadid_row(rec, image_dir, f"{label_path}:{lineno}"))
    info = DatasetInfo("kadid10k", "MOS", False, (1.0, 5.0), str(base))
    return build_manifest(info, located, as_expected(expected), str(label_path))


def _kadid_row(rec: dict[str, str], image_dir: str, where: str) -> Located:
    match = _KADID_NAME.match(rec.get("dist_img") or "")
    if match is None or not rec.get("ref_img"):
        raise ManifestError(f"{where}: expected 'I##_##_##.png,I##.png,<mos>', got {rec}")
    ref_no, dist_no, level = match.groups()
    extra = {"level": str(int(level))}
    if rec.get("var"):
        extra["var"] = rec["var"]
    row = ManifestRow(
        image=f"{image_dir}/{rec['dist_img']}",
        ref=f"{image_dir}/{rec['ref_img']}",
        score=parse_float(rec["dmos"], where),
        group=Path(rec["ref_img"]).stem,
        distortion=_lookup(KADID_DISTORTIONS, dist_no, where),
        extra=extra,
    )
    return Located(row, where)
