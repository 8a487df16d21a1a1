"""Official releases as users really hold them: other folder names, other letter case and
Unicode form, other sheets, duplicated rows, other published counts, official splits.

Copies are synthesised by tests/_layouts.py (real label formats and names), then varied
the way a download, an unpacker or a copy made on macOS varies them.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import _layouts as L
import pytest
from click.testing import CliRunner, Result

from iqadata.cli import main
from iqadata.importers import IMPORTERS, KNOWN
from iqadata.manifest import ManifestError, read_manifest, read_split

NFC = unicodedata.normalize("NFC", "caf\u00e9")
NFD = unicodedata.normalize("NFD", NFC)


def _root(tmp_path: Path, name: str, **kwargs: object) -> Path:
    root = tmp_path / name
    root.mkdir()
    L.MAKERS[name](root, L.blank_file(tmp_path), **kwargs)
    return root


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _koniq(root: Path, names: list[str], disk: list[str] | None = None) -> None:
    """A KonIQ sets file listing ``names``, and files ``disk`` (default: the same names)."""
    lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
    lines += [f"{n},0,0,0,1,0,100,{50 + k},0.5,training" for k, n in enumerate(names)]
    (root / "koniq10k_distributions_sets.csv").write_text("\n".join(lines) + "\n")
    L.tree(root, L.blank_file(root), [f"1024x768/{n}" for n in disk or names])


# ---------------------------------------------------------------- PIPAL


DIST_FOLDERS = ["Distortion{k}", "Distortion_{k}/Distortion_{k}", "distortion_{k}"]


@pytest.mark.parametrize("dist", DIST_FOLDERS)
def test_pipal_finds_ntire2022_and_nested_folders(tmp_path: Path, dist: str) -> None:
    root = _root(tmp_path, "pipal", refs=5, dist=dist)
    m = IMPORTERS["pipal"](root, expected=(580, 5))
    folders = {r.image.rsplit("/", 1)[0] for r in m.rows}
    assert folders == {dist.format(k=k) for k in range(1, 5)}
    assert all((root / r.image).is_file() for r in m.rows)


def test_pipal_image_dir_takes_several_folders(tmp_path: Path) -> None:
    root = _root(tmp_path, "pipal", refs=2, dist="part{k}")
    with pytest.raises(ManifestError, match="no distorted-image folder .* --image-dir"):
        IMPORTERS["pipal"](root, expected=None)
    parts = [f"part{k}" for k in range(1, 5)]
    m = IMPORTERS["pipal"](root, image_dir=parts, expected=(232, 2))
    assert {r.image.split("/")[0] for r in m.rows} == set(parts)
    out = tmp_path / "m.csv"
    args = ["import", "pipal", "--root", root, "--out", out, "--no-count-check"]
    result = _run(*args, *(a for p in parts for a in ("--image-dir", p)))
    assert result.exit_code == 0, result.output
    assert len(read_manifest(out).rows) == 232
    result = _run(*args, "--image-dir", "part1", "--image-dir", "part2")
    assert result.exit_code == 1 and "A0001_00_02.bmp in none of the image folders" in result.output
    result = _run("import", "kadid10k", "--root", root, "--out", out, "--image-dir", "a",
                  "--image-dir", "b")
    assert result.exit_code == 2 and "--image-dir: dataset 'kadid10k' takes one folder" in (
        result.output
    )


def test_pipal_image_in_two_folders_is_ambiguous(tmp_path: Path) -> None:
    root = _root(tmp_path, "pipal", refs=1)
    L.tree(root, L.blank_file(tmp_path), ["Distortion1/A0001_00_01.bmp"])
    with pytest.raises(ManifestError, match=r"A0001_00_01.bmp is in more than one image folder"):
        IMPORTERS["pipal"](root, expected=None)


# ---------------------------------------------------------------- names in any case and form


def test_label_files_and_folders_match_in_any_case(tmp_path: Path) -> None:
    kadid = tmp_path / "kadid"
    kadid.mkdir()
    (kadid / "DMOS.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.5,0.4\n")
    L.tree(kadid, L.blank_file(tmp_path), ["images/I01.png", "images/I01_01_01.png"])
    assert IMPORTERS["kadid10k"](kadid, expected=None).rows[0].score == 4.5
    tid = tmp_path / "tid"
    tid.mkdir()
    (tid / "MOS_with_names.txt").write_text("5.1 I01_01_1.bmp\n")
    files = ["distorted_images/i01_01_1.bmp", "reference_images/I01.BMP"]
    L.tree(tid, L.blank_file(tmp_path), files)
    assert IMPORTERS["tid2013"](tid, expected=None).rows[0].score == 5.1
    spaq = tmp_path / "spaq"
    L.xlsx(spaq / "annotations/MOS and image attribute scores.XLSX",
           [L.SPAQ_HEADER, ("00001.jpg", 50.0, 1, 2, 3, 4, 5)])
    L.tree(spaq, L.blank_file(tmp_path), ["testimage/00001.jpg"])
    assert IMPORTERS["spaq"](spaq, expected=None).image_ids == ["testimage/00001.jpg"]
    pipal = _root(tmp_path, "pipal", refs=1)
    (pipal / "Train_Label").rename(pipal / "train_label")
    assert len(IMPORTERS["pipal"](pipal, expected=None).rows) == 116
    (pipal / "train_label").rename(tmp_path / "labels")
    m = IMPORTERS["pipal"](pipal, label_file=str(tmp_path / "labels"), expected=None)
    assert len(m.rows) == 116  # an absolute label folder, as before


@pytest.mark.parametrize(("label", "disk"), [(NFC, NFD), (NFD, NFC)])
def test_unicode_forms_on_disk_and_in_labels_are_one_name(
    tmp_path: Path, label: str, disk: str
) -> None:
    """A copy made on macOS stores names decomposed (NFD); label files are composed (NFC)."""
    _koniq(tmp_path, [f"{label}_1.jpg", "plain.jpg"], [f"{disk}_1.jpg", "plain.jpg"])
    m = IMPORTERS["koniq10k"](tmp_path, expected=2)
    assert m.rows[0].image == f"1024x768/{disk}_1.jpg"  # the spelling on disk
    assert (tmp_path / m.rows[0].image).is_file()


def test_case_twins_are_ambiguous_not_missing(tmp_path: Path) -> None:
    _koniq(tmp_path, ["photo.jpg"], ["Photo.jpg", "photo.JPG"])
    with pytest.raises(ManifestError, match=r"image '1024x768/photo.jpg' is ambiguous under .*:"
                       r" it matches 1024x768/Photo.jpg and 1024x768/photo.JPG"):
        IMPORTERS["koniq10k"](tmp_path, expected=1)
    (tmp_path / "koniq10k_distributions_sets.csv").rename(tmp_path / "A.csv")
    (tmp_path / "a.CSV").write_text("x")
    with pytest.raises(ManifestError, match=r"label file 'a.csv' is ambiguous"):
        IMPORTERS["koniq10k"](tmp_path, label_file="a.csv")


# ---------------------------------------------------------------- sheets


def _csiq_sheets(root: Path, first: str, second: str) -> None:
    """A CSIQ workbook with two sheets of the same columns, told apart by their DMOS."""
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = first
    book.create_sheet(second)
    for name, dmos in ((first, 0.9), (second, 0.1)):
        book[name].append(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
        book[name].append([1600, 1, "noise", 1, 0.05, dmos])
    book.save(root / "csiq.DMOS.xlsx")
    if not (root / "src_imgs").exists():
        names = ["src_imgs/1600.png", "dst_imgs/awgn/1600.AWGN.1.png"]
        L.tree(root, L.blank_file(root), names)


def test_csiq_sheet_name_in_any_case_and_never_the_active_sheet(tmp_path: Path) -> None:
    _csiq_sheets(tmp_path, "all_by_distortion", "All_By_Image")
    assert IMPORTERS["csiq"](tmp_path, expected=None).rows[0].score == 0.1
    assert IMPORTERS["csiq"](tmp_path, expected=None, sheet="ALL_BY_DISTORTION").scores() == [0.9]
    _csiq_sheets(tmp_path, "Sheet1", "Sheet2")
    with pytest.raises(ManifestError, match=r"no sheet 'all_by_image' \(sheets: \['Sheet1', "
                       r"'Sheet2'\]\); name one with --sheet"):
        IMPORTERS["csiq"](tmp_path, expected=None)
    out = tmp_path / "m.csv"
    args = ["import", "csiq", "--root", tmp_path, "--out", out, "--no-count-check"]
    assert _run(*args, "--sheet", "sheet2").exit_code == 0
    assert read_manifest(out).scores() == [0.1]


def test_spaq_and_bid_read_the_label_sheet_not_the_active_one(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Notes"
    book.active.append(["These are the SPAQ labels"])
    book.create_sheet("Labels").append(list(L.SPAQ_HEADER))
    book["Labels"].append(["00001.jpg", 50.0, 1, 2, 3, 4, 5])
    book.create_sheet("Sheet3")  # empty, as old workbooks have
    (tmp_path / "Annotations").mkdir()
    book.save(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx")
    L.tree(tmp_path, L.blank_file(tmp_path), ["TestImage/00001.jpg"])
    assert IMPORTERS["spaq"](tmp_path, expected=None).scores() == [50.0]
    bid = tmp_path / "bid"
    bid.mkdir()
    book = Workbook()
    for name, mos in (("Grades", 3.5), ("Copy", 1.0)):
        page = book.create_sheet(name)
        page.append(["Image Number", "Average Grade"])
        page.append([1, mos])
    book.save(bid / "DatabaseGrades.xlsx")
    L.tree(bid, L.blank_file(tmp_path), ["DatabaseImage0001.JPG"])
    with pytest.raises(ManifestError, match=r"sheets \['Grades', 'Copy'\] all look like label"
                       r" sheets; name the one to read with --sheet"):
        IMPORTERS["bid"](bid, expected=None)
    out = tmp_path / "bid.csv"
    result = _run("import", "bid", "--root", bid, "--out", out, "--no-count-check", "--sheet",
                  "grades")
    assert result.exit_code == 0, result.output
    assert read_manifest(out).scores() == [3.5]
    result = _run("import", "kadid10k", "--root", bid, "--out", out, "--sheet", "x")
    assert result.exit_code == 2 and "--sheet: not an option of dataset 'kadid10k'" in result.output


# ---------------------------------------------------------------- duplicates and counts


def test_duplicate_row_is_reported_before_the_count(tmp_path: Path) -> None:
    root = _root(tmp_path, "kadid10k")
    with open(root / "dmos.csv", "a") as fh:
        fh.write("I01_01_03.png,I01.png,3.9,0.5\n")
    with pytest.raises(ManifestError, match=r"dmos.csv:10127: image 'images/I01_01_03.png' "
                       r"already listed at .*dmos.csv:4 \(a duplicate row"):
        IMPORTERS["kadid10k"](root)


def test_count_error_names_the_source_each_published_count_matches(tmp_path: Path) -> None:
    root = _root(tmp_path, "gfiqa20k", n=19998)
    with pytest.raises(ManifestError) as err:
        IMPORTERS["gfiqa20k"](root)
    text = str(err.value)
    assert "expected 19988 images, found 19998 (the count of PromptIQA Table 1" in text
    assert "19998 is the count of PromptIQA's dataset_info.json" in text
    assert "other published counts: 20000 (the GFIQA-20k paper" in text
    assert all(known.source for known in KNOWN.values())


# ---------------------------------------------------------------- ranges and official splits


def test_live_range_covers_the_realigned_dmos(tmp_path: Path) -> None:
    root = _root(tmp_path, "live")
    out = tmp_path / "live.csv"
    result = _run("import", "live", "--root", root, "--out", out)
    assert result.exit_code == 0, result.output
    assert "outside the recorded range" not in result.output
    result = _run("import", "live", "--root", root, "--out", out, "--range", "0,100")
    assert result.exit_code == 0, result.output
    assert "scores lie outside the recorded range 0..100 (min -2.64, max 111.8)" in result.output


def test_flive_official_split_is_written_as_a_split_file(tmp_path: Path) -> None:
    folders = {"voc_emotic_ava": 50, "blur_dataset": 10}
    root = _root(tmp_path, "flive", folders=folders, val=40)
    out = tmp_path / "flive" / "manifest.csv"
    result = _run("import", "flive", "--root", root, "--out", out, "--no-count-check")
    assert result.exit_code == 0, result.output
    split = read_split(tmp_path / "flive" / "official" / "official_split.json")
    split.check_against(read_manifest(out))
    assert (len(split.train), len(split.val), len(split.test)) == (17, 40, 3)
    assert split.test == ("voc_emotic_ava/AVA__0.jpg", "voc_emotic_ava/AVA__20.jpg",
                          "voc_emotic_ava/AVA__40.jpg")
    assert "official_split.json (17 train, 40 val, 3 test)" in result.output


def test_flive_split_files_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    root = _root(tmp_path, "flive", folders={"blur_dataset": 30})
    val = root / "labels=640_padded.csv"
    lines = val.read_text().splitlines()
    val.write_text("\n".join([*lines, "blur_dataset/motion0000.jpg,60.0,True"]) + "\n")
    with pytest.raises(ManifestError, match=r"padded.csv:30: 'blur_dataset/motion0000.jpg' is in"
                       r" the val part and in the test part \(.*labels640.csv:2\)"):
        IMPORTERS["flive"](root, expected=None)
    val.write_text("\n".join([*lines, "blur_dataset/other.jpg,60.0,False"]) + "\n")
    with pytest.raises(ManifestError, match=r"padded.csv:30: 'blur_dataset/other.jpg' is not an"):
        IMPORTERS["flive"](root, expected=None)
    val.unlink()
    with pytest.raises(ManifestError, match=r"labels640.csv: FLIVE's official split needs "
                       r"labels=640_padded.csv beside it too"):
        IMPORTERS["flive"](root, expected=None)


def test_koniq_label_files_agree_on_images_scores_and_groups_not_extras(tmp_path: Path) -> None:
    """What docs/DATASETS.md says is the same, and what differs, between the two files."""
    root = _root(tmp_path, "koniq10k")
    sets = IMPORTERS["koniq10k"](root, label_file="koniq10k_distributions_sets.csv")
    site = IMPORTERS["koniq10k"](root, label_file="koniq10k_scores_and_distributions.csv")
    for m in (sets, site):
        assert m.info.score_range == (0, 100)
    same = [(r.image, r.score, r.group, r.ref) for r in sets.rows]
    assert same == [(r.image, r.score, r.group, r.ref) for r in site.rows]
    assert set(sets.rows[0].extra) == {"sd", "official_split"}
    assert set(site.rows[0].extra) == {"sd", "mos_1to5"}
    outs = {}
    for name in ("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv"):
        outs[name] = tmp_path / name / "manifest.csv"
        args = ["import", "koniq10k", "--root", root, "--label-file", name, "--out", outs[name]]
        assert _run(*args).exit_code == 0
    official = read_split(outs["koniq10k_distributions_sets.csv"].parent / "official"
                          / "official_split.json")
    assert (len(official.train), len(official.val), len(official.test)) == (7058, 1000, 2015)
    assert not (outs["koniq10k_scores_and_distributions.csv"].parent / "official").exists()
