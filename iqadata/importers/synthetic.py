"""Importers for the synthetic-distortion (full-reference) sets: LIVE, TID2013, KADID-10k, PIPAL.

Each reads the label files of the official download layout (conventions as documented
by the dataset authors and as read by hyperIQA ``folders.py`` and PromptIQA
``utils/dataset/folders.py``; none of their code is used) and sets ``group`` to the
reference image's stem, so splits are content-disjoint. CSIQ is in :mod:`.csiq`.

Deviations from those loaders, on purpose:

* LIVE uses ``dmos_realigned.mat`` by default (the release's recommended, realigned
  scores, as hyperIQA and PromptIQA do); ``realigned=False`` reads ``dmos.mat`` (pyiqa).
* File names are matched case-insensitively and recorded with the case found on disk,
  so ids are real paths on case-sensitive file systems.
* Labels stay raw (DMOS stays DMOS); orientation and range go into the metadata and
  the heads normalise.
* LIVE's range is -3..112, not the nominal 0..100, so that the realigned DMOS (-2.64 to
  111.8) maps into [0, 1] without clipping (see :mod:`.known`); ``score_range=``
  overrides it.
* PIPAL: the public training part only (the NTIRE 2021 validation and test labels were
  not published with it). Its layout and its counts (200 references x 116 distorted
  images) come from the authors' repository and public loaders, not from a download;
  the Elo range 800..2000 is nominal, not published (``score_range=`` overrides it).
  The distorted images are looked for in every top-level folder named like
  ``Distortion_1`` (NTIRE 2021), ``Distortion1`` (NTIRE 2022) or ``Train_Dist``, and in a
  same-named folder nested in one (``Distortion_1/Distortion_1/``, as some archives
  unpack), unless ``image_dir`` names the folders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from iqadata.importers._build import Release, official_release
from iqadata.importers._common import (
    Expected,
    ExpectedLike,
    Located,
    csv_records,
    dataset_root,
    find_label,
    load_mat,
    mat_strings,
    parse_float,
    require_columns,
    text_lines,
)
from iqadata.importers._paths import DiskIndex, join_id, name_key
from iqadata.importers.known import KNOWN
from iqadata.manifest import Manifest, ManifestError, ManifestRow

LIVE_FOLDERS = {"jp2k": 227, "jpeg": 233, "wn": 174, "gblur": 174, "fastfading": 174}
LIVE_DISTORTIONS = {
    "jp2k": "jpeg2000",
    "jpeg": "jpeg",
    "wn": "white_noise",
    "gblur": "gaussian_blur",
    "fastfading": "fast_fading",
}
TID2013_DISTORTIONS = (
    "additive_gaussian_noise", "color_component_noise", "spatially_correlated_noise",
    "masked_noise", "high_frequency_noise", "impulse_noise", "quantization_noise",
    "gaussian_blur", "image_denoising", "jpeg", "jpeg2000", "jpeg_transmission_errors",
    "jpeg2000_transmission_errors", "non_eccentricity_pattern_noise",
    "local_blockwise_distortions", "mean_shift", "contrast_change", "color_saturation_change",
    "multiplicative_gaussian_noise", "comfort_noise", "lossy_compression_of_noisy_images",
    "color_quantization_with_dither", "chromatic_aberrations", "sparse_sampling_reconstruction",
)
KADID_DISTORTIONS = (
    "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift",
    "color_quantization", "color_saturation_1", "color_saturation_2", "jpeg2000", "jpeg",
    "white_noise", "white_noise_color_component", "impulse_noise", "multiplicative_noise",
    "denoise", "brighten", "darken", "mean_shift", "jitter", "non_eccentricity_patch",
    "pixelate", "quantization", "color_block", "high_sharpen", "contrast_change",
)
_PIPAL_DIST_DIR = re.compile(r"^(distortion_?\d+|train_dist)$", re.IGNORECASE)
_TID_NAME = re.compile(r"^i(\d\d)_(\d\d)_(\d)\.bmp$", re.IGNORECASE)
_KADID_NAME = re.compile(r"^I(\d\d)_(\d\d)_(\d\d)\.png$", re.IGNORECASE)
_PIPAL_NAME = re.compile(r"^([A-Za-z]\d+)_(\d+)_(\d+)\.bmp$", re.IGNORECASE)


def _live_entries(folders: dict[str, int], image_dir: str) -> list[tuple[str, str]]:
    """(folder, image path) for every entry of the LIVE label arrays, in their order."""
    return [
        (f, join_id(image_dir, f"{f}/img{j}.bmp")) for f, n in folders.items()
        for j in range(1, n + 1)
    ]


def import_live(
    root: str | os.PathLike[str],
    *,
    realigned: bool = True,
    label_file: str | None = None,
    image_dir: str = "",
    ref_dir: str = "refimgs",
    folders: dict[str, int] | None = None,
    score_range: tuple[float, float] | None = None,
    expected: ExpectedLike = KNOWN["live"].expected,
) -> Manifest:
    """LIVE Release 2: 982 label entries, reference copies (``orgs``) dropped -> 779 / 29.

    Args:
        root: the ``databaserelease2`` folder.
        realigned: read ``dmos_realigned.mat`` (``dmos_new``) instead of ``dmos.mat``.
        label_file: the DMOS file (its variable ``dmos_new`` or ``dmos`` is used);
            ``refnames_all.mat`` is read from the same folder.
        image_dir: folder holding ``jp2k/``, ``jpeg/``, ... ('' for the root).
        ref_dir: folder of the reference images.
        folders: distortion folder -> number of entries, in label order (official default).
        score_range: the range recorded (default -3..112, which covers the realigned DMOS).
        expected: (images, refs) to check, or None.
    """
    label_names = ["dmos_realigned.mat" if realigned else "dmos.mat"]
    release = Release.locate("live", root, label_file, label_names, expected)
    label_path = release.label_path
    scores = load_mat(label_path, ["dmos_new", "dmos"]).reshape(-1)
    orgs = load_mat(label_path, "orgs").reshape(-1)
    names_path = find_label(label_path.parent, None, ["refnames_all.mat"], "LIVE")
    refs = mat_strings(load_mat(names_path, "refnames_all"))
    entries = _live_entries(folders or LIVE_FOLDERS, image_dir)
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
            image=image, ref=join_id(ref_dir, ref), score=parse_float(scores[k], where),
            group=Path(ref).stem, distortion=LIVE_DISTORTIONS.get(folder, folder),
        )
        located.append(Located(row, where))
    return release.manifest(located, score_range)


def _lookup(names: tuple[str, ...], number: str, where: str) -> str:
    index = int(number) - 1
    if not 0 <= index < len(names):
        raise ManifestError(f"{where}: unknown distortion type {number!r}")
    return names[index]


@official_release("tid2013", ["mos_with_names.txt"])
def import_tid2013(
    release: Release, *, image_dir: str = "distorted_images", ref_dir: str = "reference_images"
) -> Manifest:
    """TID2013: ``<mos> <name>`` lines, names ``I<ref>_<type>_<level>.bmp``; 3000 / 25."""
    located = []
    for lineno, fields in text_lines(release.label_path):
        where = f"{release.label_path}:{lineno}"
        match = _TID_NAME.match(fields[1]) if len(fields) == 2 else None
        if match is None:
            raise ManifestError(f"{where}: expected '<mos> I##_##_#.bmp', got {fields}")
        ref_no, dist_no, level = match.groups()
        row = ManifestRow(
            image=join_id(image_dir, fields[1]), ref=join_id(ref_dir, f"I{ref_no}.bmp"),
            score=parse_float(fields[0], where), group=f"I{ref_no}",
            distortion=_lookup(TID2013_DISTORTIONS, dist_no, where), extra={"level": level},
        )
        located.append(Located(row, where))
    return release.manifest(located)


@official_release("kadid10k", ["dmos.csv"])
def import_kadid10k(
    release: Release, *, image_dir: str = "images", ref_dir: str | None = None
) -> Manifest:
    """KADID-10k: ``dist_img,ref_img,dmos,var``; ``dmos`` is a 1-5 MOS (higher = better).

    ``var`` (a variance, not a std) is kept in the ``var`` extra column. References sit
    in ``image_dir`` too unless ``ref_dir`` says otherwise.
    """
    header, records = csv_records(release.label_path)
    require_columns(header, ("dist_img", "ref_img", "dmos"), release.label_path)
    refs = image_dir if ref_dir is None else ref_dir
    located = [_kadid_row(rec, image_dir, refs, where) for where, rec in records]
    return release.manifest(located)


def _kadid_row(rec: dict[str, str], image_dir: str, ref_dir: str, where: str) -> Located:
    match = _KADID_NAME.match(rec["dist_img"])
    if match is None or not rec["ref_img"]:
        raise ManifestError(f"{where}: expected 'I##_##_##.png,I##.png,<mos>', got {rec}")
    ref_no, dist_no, level = match.groups()
    extra = {"level": str(int(level))}
    if rec.get("var"):
        extra["var"] = rec["var"]
    row = ManifestRow(
        image=join_id(image_dir, rec["dist_img"]), ref=join_id(ref_dir, rec["ref_img"]),
        score=parse_float(rec["dmos"], where), group=Path(rec["ref_img"]).stem,
        distortion=_lookup(KADID_DISTORTIONS, dist_no, where), extra=extra,
    )
    return Located(row, where)


def _pipal_dirs(index: DiskIndex, image_dir: str | Sequence[str] | None) -> list[str]:
    """The folders of distorted images: those given, or the release's (see the notes)."""
    if image_dir is not None:
        given = [image_dir] if isinstance(image_dir, str) else list(image_dir)
        for folder in given:
            if not index.is_dir(folder):
                raise ManifestError(f"PIPAL: image folder not found: {index.root / folder}")
        return given
    top = [d for d in index.dirs("") if _PIPAL_DIST_DIR.match(d)]
    nested = [f"{d}/{n}" for d in top for n in index.dirs(d) if _PIPAL_DIST_DIR.match(n)]
    if not top:
        raise ManifestError(
            f"PIPAL: no distorted-image folder (Distortion_1.., Distortion1.. or Train_Dist)"
            f" under {index.root}; name the folders with --image-dir (repeatable)"
        )
    return top + nested


def _pipal_images(index: DiskIndex, folders: Sequence[str]) -> dict[str, list[str]]:
    """Distorted file name (any case and form) -> its paths over ``folders``."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        for name in index.files(folder):
            found.setdefault(name_key(name), []).append(join_id(folder, name))
    return found


def import_pipal(
    root: str | os.PathLike[str],
    *,
    label_file: str | None = None,
    image_dir: str | Sequence[str] | None = None,
    ref_dir: str = "Train_Ref",
    score_range: tuple[float, float] | None = None,
    expected: ExpectedLike = KNOWN["pipal"].expected,
) -> Manifest:
    """PIPAL training set: ``Train_Label/<ref>.txt`` lines ``<ref>_<tt>_<kk>.bmp,<elo>``.

    Args:
        label_file: the folder of per-reference label files (``Train_Label``, any case).
        image_dir: the folder, or folders, of distorted images; default: the release's
            (see the module notes).
        ref_dir: folder of the reference images.
        score_range: nominal Elo range (default 800..2000).
    """
    base = dataset_root(root)
    index = DiskIndex(base)
    labels = _pipal_label_files(base, index, label_file or "Train_Label")
    folders = _pipal_dirs(index, image_dir)
    images = _pipal_images(index, folders)
    located = [item for f in labels for item in _pipal_rows(f, images, folders, ref_dir)]
    return Release("pipal", base, labels[0].parent, expected).manifest(located, score_range)


def _pipal_label_files(base: Path, index: DiskIndex, given: str) -> list[Path]:
    """The ``*.txt`` files (any case) of the label folder (relative to the root or absolute)."""
    folder = Path(given) if Path(given).is_absolute() else None
    if folder is None and (rel := index.folder(given)) is not None:
        folder = base / rel
    names = DiskIndex(folder).files("") if folder is not None else []
    files = [folder / n for n in names if folder is not None and n.lower().endswith(".txt")]
    if not files:
        raise ManifestError(
            f"PIPAL: no label files {base / given}/*.txt; point --root at the training set or"
            " name the label folder with --label-file"
        )
    return files


def _pipal_image(
    images: dict[str, list[str]], name: str, folders: Sequence[str], where: str
) -> str:
    paths = images.get(name_key(name), [])
    if len(paths) == 1:
        return paths[0]
    if paths:
        raise ManifestError(
            f"{where}: image {name} is in more than one image folder ({', '.join(paths)});"
            " name the folders to read with --image-dir"
        )
    raise ManifestError(
        f"{where}: image file missing (any case): {name} in none of the image folders"
        f" {', '.join(folders)}"
    )


def _pipal_rows(
    path: Path, images: dict[str, list[str]], folders: Sequence[str], ref_dir: str
) -> list[Located]:
    rows = []
    for lineno, fields in text_lines(path):
        where = f"{path}:{lineno}"
        name, _, score = "".join(fields).partition(",")
        match = _PIPAL_NAME.match(name)
        if match is None or match.group(1).lower() != path.stem.lower():
            raise ManifestError(f"{where}: expected '{path.stem}_##_##.bmp,<elo>', got {fields}")
        row = ManifestRow(
            image=_pipal_image(images, name, folders, where),
            ref=join_id(ref_dir, f"{path.stem}.bmp"), score=parse_float(score, where),
            group=path.stem, distortion=f"type_{match.group(2)}",
        )
        rows.append(Located(row, where))
    return rows


__all__ = ["Expected", "import_kadid10k", "import_live", "import_pipal", "import_tid2013"]
