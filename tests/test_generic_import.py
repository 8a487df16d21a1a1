"""The generic CSV and pyiqa meta-info paths: label traps, leaks and duplicates are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from iqadata.importers import import_csv, import_pyiqa
from iqadata.importers.generic import ImageFolders, LabelSpec, LabelSpecError
from iqadata.importers.pyiqa import write_pyiqa_splits
from iqadata.manifest import ManifestError, read_manifest, read_split, write_manifest

NR = {"image": "img_name", "score": "mos"}
FR = {"image": "dist_name", "ref": "ref_name", "score": "dmos"}
LABELS = LabelSpec("MOS", lower_better=False, score_range=(0.0, 100.0))


def _csv(root: Path, text: str, *files: str) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "meta.csv").write_text(text)
    return root / "meta.csv"


def _nr(tmp_path: Path, text: str, *files: str, **kw: object) -> object:
    path = _csv(tmp_path, "img_name,mos\n" + text, *files)
    return import_csv(path, name="team", columns=NR, authentic=True, labels=LABELS, **kw)


# ---------------------------------------------------------------- orientation and range


@pytest.mark.parametrize(
    ("missing", "option"),
    [("score_kind", "--kind"), ("lower_better", "--lower-better"), ("score_range", "--range")],
)
def test_kind_orientation_and_range_are_required(tmp_path: Path, missing: str, option: str) -> None:
    path = _csv(tmp_path, "img_name,mos\na.jpg,10\nb.jpg,90\n", "a.jpg", "b.jpg")
    labels = replace(LABELS, **{missing: None})
    with pytest.raises(LabelSpecError, match=f"say how to read the scores.*{option}"):
        import_csv(path, name="team", columns=NR, authentic=True, labels=labels)


def test_dmos_with_higher_better_needs_the_override(tmp_path: Path) -> None:
    path = _csv(tmp_path, "img_name,mos\na.jpg,0.1\nb.jpg,0.9\n", "a.jpg", "b.jpg")
    kw = {"name": "team", "columns": NR, "authentic": True}
    unit = (0.0, 1.0)
    with pytest.raises(LabelSpecError, match="DMOS where higher is better is unusual"):
        import_csv(path, labels=LabelSpec("DMOS", False, unit), **kw)
    with pytest.raises(LabelSpecError, match="MOS where lower is better is unusual"):
        import_csv(path, labels=LabelSpec("MOS", True, unit), **kw)
    m = import_csv(path, labels=LabelSpec("DMOS", False, unit, unusual_orientation=True), **kw)
    assert (m.info.score_kind, m.info.lower_better) == ("DMOS", False)


def test_a_known_dataset_supplies_its_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path, "ref_name,dist_name,dmos\nr.bmp,d.bmp,30.5\n", "r.bmp", "d.bmp")
    m = import_csv(path, name="live", columns=FR)
    assert (m.info.score_kind, m.info.lower_better, m.info.score_range) == ("DMOS", True, (-3, 112))
    with pytest.raises(LabelSpecError, match="contradicts the known live labels"):
        import_csv(path, name="live", columns=FR, labels=LabelSpec(score_kind="MOS"))
    with pytest.raises(LabelSpecError, match="contradicts"):
        import_csv(path, name="live", columns=FR, labels=LabelSpec(lower_better=False))


def test_range_is_recorded_as_given_not_from_the_data(tmp_path: Path) -> None:
    m = _nr(tmp_path, "a.jpg,-2.64\nb.jpg,111.8\n", "a.jpg", "b.jpg")
    assert m.info.score_range == (0, 100)


# ---------------------------------------------------------------- leaks and duplicates


def test_full_reference_list_without_ref_is_refused(tmp_path: Path) -> None:
    text = "dist_img,ref_img,dmos\nI01_01_01.png,I01.png,4.5\nI01_01_02.png,I01.png,3.9\n"
    path = _csv(tmp_path, text, "I01.png", "I01_01_01.png", "I01_01_02.png")
    cols = {"image": "dist_img", "score": "dmos"}
    with pytest.raises(LabelSpecError, match=r"no ref= \(or prompt=, group=\).*perhaps 'ref_img'"):
        import_csv(path, name="team", columns=cols, labels=LABELS)
    m = import_csv(path, name="team", columns={**cols, "ref": "ref_img"}, labels=LABELS)
    assert {r.group for r in m.rows} == {"I01.png"}
    with pytest.raises(LabelSpecError, match="column 'ref_img' looks like a reference column"):
        import_csv(path, name="team", columns=cols, authentic=True, labels=LABELS)
    confirmed = import_csv(
        path, name="team", columns=cols, authentic=True, not_content=["ref_img"], labels=LABELS
    )
    assert len(confirmed.rows) == 2


def test_group_ids_are_compared_case_insensitively(tmp_path: Path) -> None:
    text = "img_name,mos,content\na.jpg,1,I01\nb.jpg,2,i01\nc.jpg,3,I02\n"
    path = _csv(tmp_path, text, "a.jpg", "b.jpg", "c.jpg")
    m = import_csv(path, name="team", columns={**NR, "group": "content"}, labels=LABELS)
    assert [r.group for r in m.rows] == ["I01", "I01", "I02"]


def test_reference_spellings_are_one_reference(tmp_path: Path) -> None:
    text = "ref_name,dist_name,dmos\nI01.BMP,d1.bmp,1\ni01.bmp,d2.bmp,2\n"
    m = import_csv(
        _csv(tmp_path, text, "I01.bmp", "d1.bmp", "d2.bmp"), name="t", columns=FR, labels=LABELS
    )
    assert m.ref_ids == ["I01.bmp"] and {r.group for r in m.rows} == {"I01.bmp"}


def test_file_names_match_in_any_case_like_tid2013(tmp_path: Path) -> None:
    m = _nr(tmp_path, "Photos/A.JPG,10\n", "photos/a.jpg")
    assert m.image_ids == ["photos/a.jpg"] and m.rows[0].group == "photos/a.jpg"


@pytest.mark.parametrize(
    ("first", "second"),
    [("LIVE/jp2k/img2.bmp", "LIVE/../LIVE/jp2k/img2.bmp"), ("a.jpg", "./a.jpg"),
     ("a.jpg", "A.JPG"), ("sub/a.jpg", "sub\\a.jpg")],
)
def test_two_spellings_of_one_file_are_a_duplicate(tmp_path: Path, first: str, second: str) -> None:
    text = f"{first},1\n{second},2\n"
    with pytest.raises(ManifestError, match=r"meta.csv:3: image .* already listed at .*meta.csv:2"):
        _nr(tmp_path, text, first)


@pytest.mark.parametrize(
    ("name", "message"),
    [("/data/a.jpg", "is absolute"), ("C:/data/a.jpg", "is absolute"),
     ("../a.jpg", "leaves the dataset root"), ("x/../../a.jpg", "leaves the dataset root")],
)
def test_absolute_and_escaping_paths_are_refused(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "ds").mkdir()
    path = _csv(tmp_path / "ds", f"img_name,mos\n{name},1\n")
    with pytest.raises(ManifestError, match=f"meta.csv:2: image path .* {message}"):
        import_csv(path, name="team", columns=NR, authentic=True, labels=LABELS)


def test_reference_listed_as_a_distorted_row_is_refused(tmp_path: Path) -> None:
    text = "ref_name,dist_name,dmos\nr.png,d.png,1\nr.png,r.png,5\n"
    with pytest.raises(ManifestError, match=r"meta.csv:3: 'r.png' is a reference image"):
        import_csv(_csv(tmp_path, text, "r.png", "d.png"), name="t", columns=FR, labels=LABELS)


# ---------------------------------------------------------------- reporting


def test_line_numbers_are_physical_lines(tmp_path: Path) -> None:
    text = '\n\na.jpg,10\n"b\nc.jpg",20\n\nd.jpg,oops\n'
    with pytest.raises(ManifestError, match=r"meta.csv:8: bad score 'oops'"):
        _nr(tmp_path, text, "a.jpg", "b\nc.jpg", "d.jpg")


def test_extra_and_missing_fields_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"meta.csv:3: 3 fields, but the header has 2"):
        _nr(tmp_path, "a.jpg,10\nb.jpg,20,7\n", "a.jpg", "b.jpg")
    with pytest.raises(
        ManifestError, match=r"meta.csv:2: 1 fields, but the header has 2 \(img_name"
    ):
        _nr(tmp_path, "a.jpg\n", "a.jpg")
    with pytest.raises(ManifestError, match=r"meta.csv:2: empty score"):
        _nr(tmp_path, "a.jpg,\n", "a.jpg")


def test_header_only_csv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="meta.csv: no image rows"):
        _nr(tmp_path, "")


def test_unmapped_columns_are_kept_and_prefixes_apply(tmp_path: Path) -> None:
    text = "ref_name,dist_name,dmos,std\nr.png,d.png,1,0.2\n"
    path = _csv(tmp_path, text, "refs/r.png", "dist/d.png")
    folders = ImageFolders(image_dir="dist", ref_dir="refs")
    m = import_csv(path, name="t", columns=FR, folders=folders, labels=LABELS)
    assert (m.rows[0].image, m.rows[0].ref, m.rows[0].extra) == (
        "dist/d.png",
        "refs/r.png",
        {"std": "0.2"},
    )


# ---------------------------------------------------------------- pyiqa meta-info files


def test_pyiqa_nr_meta_keeps_official_split(tmp_path: Path) -> None:
    lines = ["img_name,mos,std,official_split,ratio802_seed123_split_01"]
    lines += [f"{k}.jpg,{k},0.5,{('train', 'val', 'test')[k % 3]},{'train' if k < 8 else 'val'}"
              for k in range(10)]
    files = [f"1024x768/{k}.jpg" for k in range(10)]
    path = _csv(tmp_path, "\n".join(lines) + "\n", *files)
    got = import_pyiqa(path, name="koniq10k", folders=ImageFolders(tmp_path, "1024x768"))
    m = got.manifest
    assert (m.info.name, m.info.score_range, len(m.rows)) == ("koniq10k", (0, 100), 10)
    assert m.rows[0].image == "1024x768/0.jpg" and m.rows[0].extra["std"] == "0.5"
    official = got.splits["official_split"]
    assert official.train == (
        "1024x768/0.jpg",
        "1024x768/3.jpg",
        "1024x768/6.jpg",
        "1024x768/9.jpg",
    )
    assert len(official.val) == 3 and len(official.test) == 3
    ratio = got.splits["ratio802_seed123_split_01"]
    assert (len(ratio.train), len(ratio.val), ratio.seed) == (8, 2, 123)
    out = tmp_path / "m.csv"
    write_manifest(m, out)
    from iqadata.manifest import file_sha256

    paths = write_pyiqa_splits(got.splits, tmp_path / "splits", file_sha256(out))
    assert [p.name for p in paths] == ["official_split.json", "ratio802_seed123_split_01.json"]
    read_split(paths[0]).check_against(read_manifest(out))


def test_pyiqa_fr_meta_groups_by_reference(tmp_path: Path) -> None:
    text = "ref_name,dist_name,dmos,ratio802_seed123_split_01\n"
    text += "1600.png,1600.AWGN.1.png,0.06,train\naerial.png,aerial.BLUR.2.png,0.2,val\n"
    files = [
        "src_imgs/1600.png",
        "src_imgs/aerial.png",
        "dst/1600.AWGN.1.png",
        "dst/aerial.BLUR.2.png",
    ]
    path = _csv(tmp_path, text, *files)
    got = import_pyiqa(path, name="csiq", folders=ImageFolders(tmp_path, "dst", "src_imgs"))
    assert [r.group for r in got.manifest.rows] == ["src_imgs/1600.png", "src_imgs/aerial.png"]
    assert got.manifest.info.lower_better and got.splits["ratio802_seed123_split_01"].val == (
        "dst/aerial.BLUR.2.png",
    )


def test_pyiqa_old_numeric_split_values_and_bad_values(tmp_path: Path) -> None:
    path = _csv(
        tmp_path, "img_name,mos,split\na.jpg,1,0\nb.jpg,2,2\nc.jpg,3,\n", "a.jpg", "b.jpg", "c.jpg"
    )
    split = import_pyiqa(path, name="livec").splits["split"]
    assert (split.train, split.val, split.test) == (("a.jpg",), (), ("b.jpg",))
    path = _csv(tmp_path, "img_name,mos,split\na.jpg,1,holdout\n", "a.jpg")
    with pytest.raises(ManifestError, match=r"column 'split': value 'holdout' of image 'a.jpg'"):
        import_pyiqa(path, name="livec")
    path = _csv(tmp_path, "official_split,img_name\ntrain,a.jpg\n", "a.jpg")
    with pytest.raises(ManifestError, match="not a pyiqa meta-info header"):
        import_pyiqa(path, name="livec")


def test_a_broken_link_is_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ManifestError, match=r"meta.csv:2: image file missing \(any case\)"):
        _nr(tmp_path, "a.jpg,1\n")
