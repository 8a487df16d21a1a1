"""Synthesised copies of the official dataset releases, for the importer tests.

Each ``make_<dataset>(root, blank, ...)`` writes the release's label file(s) in their real
format, with the real file names and folders, at the official counts by default, and the
image tree as hard links to one empty file ``blank`` (creating 10^4 files one by one is
slow on some file systems; a link is a directory entry, which is all the importers check).
Scores are drawn from a seeded generator. Where the real names are not known (GFIQA-20k),
plausible ones are used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from openpyxl import Workbook
from scipy.io import savemat

RNG_SEED = 0


def tree(root: Path, blank: Path, names: Iterable[str]) -> None:
    """Hard-link ``blank`` at every relative path in ``names`` under ``root``."""
    made: set[Path] = set()
    for name in names:
        path = root / name
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        os.link(blank, path)


def blank_file(tmp_path: Path) -> Path:
    blank = tmp_path / "blank"
    blank.write_bytes(b"")
    return blank


def cells(strings: list[str]) -> np.ndarray:
    """A MATLAB cell array (1 x n) of strings, as savemat writes it."""
    out = np.empty((1, len(strings)), dtype=object)
    out[0, :] = strings
    return out


def xlsx(path: Path, rows: Iterable[Iterable[object]], sheet: str | None = None,
         first_sheet: str | None = None) -> None:
    """Write rows to ``sheet`` of a new workbook (optionally after another sheet)."""
    book = Workbook(write_only=True)
    if first_sheet:
        book.create_sheet(first_sheet).append(["other sheet"])
    page = book.create_sheet(sheet or "Sheet1")
    for row in rows:
        page.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


def scores(n: int, low: float, high: float) -> np.ndarray:
    return np.round(np.random.default_rng(RNG_SEED).uniform(low, high, n), 6)


# ---------------------------------------------------------------- full-reference sets

LIVE_FOLDERS = {"jp2k": 227, "jpeg": 233, "wn": 174, "gblur": 174, "fastfading": 174}
LIVE_REFS = [f"ref{k:02d}.bmp" for k in range(29)]


def make_live(root: Path, blank: Path) -> None:
    """databaserelease2: 982 entries, 203 of them reference copies (``orgs``)."""
    n = sum(LIVE_FOLDERS.values())
    orgs = np.zeros((1, n))
    orgs[0, np.random.default_rng(1).permutation(n)[:203]] = 1
    dmos = scores(n, -2.6, 111.8)[None, :]
    kept = np.flatnonzero(orgs[0] == 0)
    dmos[0, kept[:2]] = (-2.64, 111.8)  # the realigned DMOS's extremes in the release
    savemat(root / "dmos_realigned.mat", {"dmos_new": dmos, "orgs": orgs})
    savemat(root / "dmos.mat", {"dmos": dmos + 1, "orgs": orgs})
    savemat(
        root / "refnames_all.mat", {"refnames_all": cells([LIVE_REFS[k % 29] for k in range(n)])}
    )
    names = [f"refimgs/{r}" for r in LIVE_REFS]
    names += [f"{f}/img{j}.bmp" for f, m in LIVE_FOLDERS.items() for j in range(1, m + 1)]
    tree(root, blank, names)


CSIQ_REFS = [
    "1600", "aerial_city", "boston", "bridge", "butter_flower", "cactus", "child_swimming",
    "couple", "elk", "family", "fisher", "foxy", "geckos", "lady_liberty", "lake",
    "log_seaside", "monument", "native_american", "redwood", "roping", "rushmore", "shroom",
    "snow_leaves", "sunset_sparrow", "sunsetcolor", "swarm", "trolley", "turtle", "veggies",
    "woman",
]
# spreadsheet type -> (dst_idx, folder, file-name token)
CSIQ_SHEET_TYPES = {
    "noise": (1, "awgn", "AWGN"), "jpeg": (2, "jpeg", "JPEG"),
    "jpeg 2000": (3, "jpeg2000", "jpeg2000"), "fnoise": (4, "fnoise", "fnoise"),
    "blur": (5, "blur", "BLUR"), "contrast": (6, "contrast", "contrast"),
}


def csiq_entries() -> list[tuple[str, str, int]]:
    """(reference, sheet type, level): 5 levels per type, contrast 4 (3 for 4 refs): 866."""
    out = []
    for r, ref in enumerate(CSIQ_REFS):
        for kind in CSIQ_SHEET_TYPES:
            levels = (4 if r < 26 else 3) if kind == "contrast" else 5
            out += [(ref, kind, lv) for lv in range(1, levels + 1)]
    return out


def make_csiq(root: Path, blank: Path) -> None:
    """csiq.DMOS.xlsx (title rows, header after empty columns), src_imgs/, dst_imgs/<type>/."""
    entries = csiq_entries()
    dmos = scores(len(entries), 0.0, 1.0)
    rows: list[list[object]] = [["CSIQ DMOS"], [], [None, None, "all images"]]
    rows.append([None, None, "image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    for (ref, kind, lv), d in zip(entries, dmos, strict=True):
        image: object = int(ref) if ref.isdigit() else ref
        rows.append([None, None, image, CSIQ_SHEET_TYPES[kind][0], kind, lv, 0.05, float(d)])
    xlsx(root / "csiq.DMOS.xlsx", rows, sheet="all_by_image", first_sheet="all_by_distortion")
    names = [f"src_imgs/{r}.png" for r in CSIQ_REFS]
    for ref, kind, lv in entries:
        _, folder, token = CSIQ_SHEET_TYPES[kind]
        names.append(f"dst_imgs/{folder}/{ref}.{token}.{lv}.png")
    tree(root, blank, names)


def make_csiq_flat(root: Path, blank: Path) -> None:
    """The flat copy hyperIQA and PromptIQA use: csiq_label.txt and one dst_imgs_all/."""
    entries = csiq_entries()
    names = [f"{ref}.{CSIQ_SHEET_TYPES[kind][2]}.{lv}.png" for ref, kind, lv in entries]
    lines = [f"{n} {d:.6f}" for n, d in zip(names, scores(len(names), 0.0, 1.0), strict=True)]
    (root / "csiq_label.txt").write_text("\n".join(lines) + "\n")
    refs = [f"src_imgs/{r}.png" for r in CSIQ_REFS]
    tree(root, blank, refs + [f"dst_imgs_all/{n}" for n in names])


def make_tid2013(root: Path, blank: Path) -> None:
    """mos_with_names.txt names 'I01_01_1.bmp'; the files on disk are lower case 'i01_...'."""
    names = [f"I{r:02d}_{t:02d}_{lv}.bmp" for r in range(1, 26) for t in range(1, 25)
             for lv in range(1, 6)]
    mos = scores(len(names), 0.2, 7.2)
    lines = [f"{m:.5f} {name}" for m, name in zip(mos, names, strict=True)]
    (root / "mos_with_names.txt").write_text("\r\n".join(lines) + "\r\n")
    files = [f"distorted_images/{n.lower()}" for n in names]
    tree(root, blank, files + [f"reference_images/I{r:02d}.BMP" for r in range(1, 26)])


def make_kadid10k(root: Path, blank: Path) -> None:
    """dmos.csv 'dist_img,ref_img,dmos,var'; references and distorted images in images/."""
    names = [(f"I{r:02d}_{t:02d}_{lv:02d}.png", f"I{r:02d}.png") for r in range(1, 82)
             for t in range(1, 26) for lv in range(1, 6)]
    mos = scores(len(names), 1.0, 5.0)
    lines = ["dist_img,ref_img,dmos,var"] + [
        f"{d},{r},{m:.2f},0.5" for (d, r), m in zip(names, mos, strict=True)
    ]
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    refs = {f"images/{r}" for _, r in names}
    tree(root, blank, sorted(refs) + [f"images/{d}" for d, _ in names])


def make_pipal(
    root: Path, blank: Path, refs: int = 200, per_ref: int = 116, dist: str = "Distortion_{k}"
) -> None:
    """Train_Label/<ref>.txt 'A0001_00_00.bmp,1520.0648', Train_Ref/, Distortion_1..4/.

    ``dist`` names the distorted-image folders: ``Distortion{k}`` for the NTIRE 2022
    names, ``Distortion_{k}/Distortion_{k}`` for an archive unpacked into itself.
    """
    elo = iter(scores(refs * per_ref, 900.0, 1850.0))
    names = []
    for r in range(1, refs + 1):
        stem = f"A{r:04d}"
        names_k = [f"{stem}_{j // 10:02d}_{j % 10:02d}.bmp" for j in range(per_ref)]
        lines = [f"{d},{next(elo):.4f}" for d in names_k]
        (root / "Train_Label").mkdir(exist_ok=True)
        (root / "Train_Label" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        names.append(f"Train_Ref/{stem}.bmp")
        names += [f"{dist.format(k=1 + j % 4)}/{d}" for j, d in enumerate(names_k)]
    tree(root, blank, names)


# ---------------------------------------------------------------- authentic sets


def koniq_names(n: int = 10073) -> list[str]:
    return [f"{10004473376 + 7919 * k}.jpg" for k in range(n)]


def make_koniq10k(root: Path, blank: Path, which: str = "both") -> None:
    """Both official label files (or one: 'sets' / 'scores') and 1024x768/.

    The sets file's MOS (0-100) equals the scores file's MOS_zscore; MOS there is 1-5.
    """
    names = koniq_names()
    z = scores(len(names), 3.9, 88.4)
    sets = ["training"] * 7058 + ["validation"] * 1000 + ["test"] * 2015
    if which in ("both", "sets"):
        lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"] + [
            f"{n},0.0,0.1,0.2,0.6,0.1,105,{float(m)!r},0.52,{s}"
            for n, m, s in zip(names, z, sets, strict=True)
        ]
        (root / "koniq10k_distributions_sets.csv").write_text("\n".join(lines) + "\n")
    if which in ("both", "scores"):
        lines = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"'] + [
            f'"{n}",0,10,20,60,15,105,{1 + 4 * m / 100:.6f},0.52,{float(m)!r}'
            for n, m in zip(names, z, strict=True)
        ]
        (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(lines) + "\n")
    tree(root, blank, [f"1024x768/{n}" for n in names])


SPAQ_HEADER = ("Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
               "Sharpness")


def make_spaq(root: Path, blank: Path, n: int = 11125) -> None:
    """Annotations/MOS and Image attribute scores.xlsx and TestImage/00001.jpg ..."""
    names = [f"{k:05d}.jpg" for k in range(1, n + 1)]
    mos = scores(n, 2.0, 97.0)
    rows = [SPAQ_HEADER] + [
        (nm, float(m), 50.0, 51.0, 52.0, 53.0, 54.0) for nm, m in zip(names, mos, strict=True)
    ]
    xlsx(root / "Annotations" / "MOS and Image attribute scores.xlsx", rows)
    tree(root, blank, [f"TestImage/{nm}" for nm in names])


def make_livec(root: Path, blank: Path) -> None:
    """Data/AllImages_release.mat (1169, the first 7 't1.bmp'..), AllMOS_release.mat, Images/."""
    names = [f"t{k}.bmp" for k in range(1, 8)] + [f"{k}.bmp" for k in range(3, 1165)]
    (root / "Data").mkdir()
    savemat(root / "Data/AllImages_release.mat", {"AllImages_release": cells(names).T})
    savemat(
        root / "Data/AllMOS_release.mat", {"AllMOS_release": scores(len(names), 3.4, 92.4)[None, :]}
    )
    files = [f"Images/trainingImages/{n}" for n in names[:7]] + [f"Images/{n}" for n in names[7:]]
    tree(root, blank, files)


def make_bid(root: Path, blank: Path, n: int = 586) -> None:
    """DatabaseGrades.xlsx (header, then image number and MOS) and DatabaseImage0001.JPG ..."""
    mos = scores(n, 0.2, 4.8)
    xlsx(root / "DatabaseGrades.xlsx", [("Image Number", "Average Grade")] + [
        (k, float(m)) for k, m in zip(range(1, n + 1), mos, strict=True)
    ])
    tree(root, blank, [f"DatabaseImage{k:04d}.JPG" for k in range(1, n + 1)])


FLIVE_FOLDERS = {"voc_emotic_ava": 38808, "blur_dataset": 999, "EE371R": 3}


FLIVE_TEST = 1827  # the images of labels640.csv in the PaQ-2-PiQ repository
FLIVE_VAL = 7600  # synthetic: the real number of is_valid rows is not known here


def make_flive(
    root: Path, blank: Path, folders: dict[str, int] = FLIVE_FOLDERS, val: int = FLIVE_VAL
) -> None:
    """labels_image.csv 'name,mos' with folder-relative names (39,810) and those folders.

    And the official split files: labels640.csv (the test images, under a header of patch
    and image columns) and labels=640_padded.csv (every other image, ``is_valid`` True
    for the first ``val``). Test images are every 20th name.
    """
    names = [f"{f}/AVA__{k}.jpg" if f == "voc_emotic_ava" else f"{f}/motion{k:04d}.jpg"
             for f, n in folders.items() for k in range(n)]
    mos = scores(len(names), 0.0, 94.3)
    lines = ["name,mos"] + [f"{n},{float(m)!r}" for n, m in zip(names, mos, strict=True)]
    (root / "labels_image.csv").write_text("\n".join(lines) + "\n")
    tree(root, blank, names)
    test = names[::20][:FLIVE_TEST]
    chosen = set(test)
    rest = [n for n in names if n not in chosen]
    rows = ["mos_patch_1,name_patch,mos_image,name_image,width_image"]
    rows += [f"50.0,patches/{n.split('/')[1]},60.0,{n},1024" for n in test]
    (root / "labels640.csv").write_text("\n".join(rows) + "\n")
    rows = ["name_image,mos_image,is_valid"]
    rows += [f"{n},60.0,{k < val}" for k, n in enumerate(rest)]
    (root / "labels=640_padded.csv").write_text("\n".join(rows) + "\n")


def make_gfiqa20k(root: Path, blank: Path, n: int = 19988) -> None:
    """mos.csv 'img_name,mos' (0..1) and image/ (file names synthetic)."""
    names = [f"{k:05d}.png" for k in range(n)]
    mos = scores(n, 0, 1)
    lines = ["img_name,mos"] + [f"{nm},{float(m)!r}" for nm, m in zip(names, mos, strict=True)]
    (root / "mos.csv").write_text("\n".join(lines) + "\n")
    tree(root, blank, [f"image/{nm}" for nm in names])


AGIQA_MODELS = {
    "AttnGAN_normal": 300, "DALLE2_normal": 290, "glide_normal": 300, "midjourney_lowstep": 296,
    "midjourney_normal": 296, "sd1.5_highcorr": 300, "sd1.5_lowcorr": 300,
    "sd1.5_lowstep": 300, "sd1.5_normal": 300, "xl2.2_normal": 300,
}


def make_agiqa3k(root: Path, blank: Path, folder: str = "AGIQA-3K") -> None:
    """data.csv (quoted prompts with commas, empty adj/style cells) and the image folder."""
    names = [f"{m}_{k:03d}.jpg" for m, n in AGIQA_MODELS.items() for k in range(n)]
    mos = scores(len(names), 0.0, 4.49)
    lines = ["name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"]
    for name, m in zip(names, mos, strict=True):
        k = int(name[-7:-4])
        lines.append(f'{name},"a tray of sushi, number {k}",,,,{float(m)!r},0.2,1.5,0.6')
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    tree(root, blank, [f"{folder}/{n}" if folder else n for n in names])


def make_aigciqa2023(root: Path, blank: Path, n: int = 2400) -> None:
    """DATA/MOS/mosz1.mat .. mosz3.mat ('MOSz', n x 1) and Image/allimg/0.png .. (n-1).png."""
    (root / "DATA" / "MOS").mkdir(parents=True)
    for k in (1, 2, 3):
        savemat(root / "DATA" / "MOS" / f"mosz{k}.mat", {"MOSz": scores(n, 20 * k, 80)[:, None]})
    tree(root, blank, [f"Image/allimg/{k}.png" for k in range(n)])


def make_uwiqa(root: Path, blank: Path, n: int = 890) -> None:
    """IQA_Value.xlsx (header, then number and MOS 0..1) and img/0001.png ..."""
    rows = [("image", "MOS")] + [
        (k, float(m)) for k, m in zip(range(1, n + 1), scores(n, 0, 1), strict=True)
    ]
    xlsx(root / "IQA_Value.xlsx", rows)
    tree(root, blank, [f"img/{k:04d}.png" for k in range(1, n + 1)])


MAKERS = {
    "live": make_live, "csiq": make_csiq, "tid2013": make_tid2013, "kadid10k": make_kadid10k,
    "pipal": make_pipal, "koniq10k": make_koniq10k, "spaq": make_spaq, "livec": make_livec,
    "bid": make_bid, "flive": make_flive, "gfiqa20k": make_gfiqa20k, "agiqa3k": make_agiqa3k,
    "aigciqa2023": make_aigciqa2023, "uwiqa": make_uwiqa,
}
