"""Tests for iqadata.importers on small fake datasets written in the official layouts."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from openpyxl import Workbook
from scipy.io import savemat

from iqadata.cli import main
from iqadata.importers import IMPORTERS, KNOWN, Expected, get_importer, import_to
from iqadata.manifest import ManifestError, read_manifest


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def _cells(strings: list[str]) -> np.ndarray:
    cells = np.empty((1, len(strings)), dtype=object)
    cells[0, :] = strings
    return cells


def _xlsx(path: Path, rows: list[tuple[object, ...]]) -> None:
    book = Workbook()
    for row in rows:
        book.active.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


# ---------------------------------------------------------------- LIVE

LIVE_FOLDERS = {"jp2k": 2, "jpeg": 2, "wn": 1, "gblur": 1, "fastfading": 1}


def _fake_live(root: Path) -> None:
    refs = ["parrots.bmp", "bikes.bmp", "parrots.bmp", "bikes.bmp", "bikes.bmp"]
    refs += ["parrots.bmp", "parrots.bmp"]
    orgs = np.array([[0, 1, 0, 0, 0, 1, 0]], dtype=float)
    dmos = np.array([[30.5, 0.0, 45.0, 60.25, 20.0, 0.0, 70.0]])
    savemat(root / "dmos_realigned.mat", {"dmos_new": dmos, "orgs": orgs})
    savemat(root / "dmos.mat", {"dmos": dmos + 1, "orgs": orgs})
    savemat(root / "refnames_all.mat", {"refnames_all": _cells(refs)})
    _touch(root, "refimgs/parrots.bmp", "refimgs/bikes.bmp")
    for folder, n in LIVE_FOLDERS.items():
        _touch(root, *(f"{folder}/img{j}.bmp" for j in range(1, n + 1)))


def test_live(tmp_path: Path) -> None:
    _fake_live(tmp_path)
    m = IMPORTERS["live"](tmp_path, folders=LIVE_FOLDERS, expected=(5, 2))
    assert m.image_ids == ["jp2k/img1.bmp", "jpeg/img1.bmp", "jpeg/img2.bmp", "wn/img1.bmp"] + [
        "fastfading/img1.bmp"
    ]
    assert [r.score for r in m.rows] == [30.5, 45.0, 60.25, 20.0, 70.0]
    first = m.rows[0]
    assert (first.ref, first.group, first.distortion) == (
        "refimgs/parrots.bmp",
        "parrots",
        "jpeg2000",
    )
    assert (m.info.score_kind, m.info.lower_better, m.info.root) == ("DMOS", True, str(tmp_path))
    raw = IMPORTERS["live"](tmp_path, folders=LIVE_FOLDERS, expected=(5, 2), realigned=False)
    assert raw.rows[0].score == 31.5


def test_live_official_count_check_fires(tmp_path: Path) -> None:
    _fake_live(tmp_path)
    with pytest.raises(ManifestError, match="expected 779 images, found 5"):
        IMPORTERS["live"](tmp_path, folders=LIVE_FOLDERS)
    with pytest.raises(ManifestError, match="but the folders list 982 entries"):
        IMPORTERS["live"](tmp_path)


def test_live_missing_image_names_entry_and_writes_nothing(tmp_path: Path) -> None:
    _fake_live(tmp_path)
    (tmp_path / "wn/img1.bmp").unlink()
    out = tmp_path / "out" / "live.csv"
    with pytest.raises(ManifestError, match=r"dmos_realigned.mat: entry 5 \(wn/img1.bmp\): image"):
        import_to("live", tmp_path, out, folders=LIVE_FOLDERS, expected=(5, 2))
    assert not out.exists() and not out.parent.exists()


# ---------------------------------------------------------------- CSIQ

CSIQ_LINES = ["1600.AWGN.1.png 0.061989", "1600.BLUR.2.png 0.2", "", "aerial_city.JPEG.1.png 0.4"]


def _fake_csiq(root: Path, lines: list[str] = CSIQ_LINES) -> None:
    (root / "csiq_label.txt").write_text("\n".join(lines) + "\n")
    _touch(root, "src_imgs/1600.png", "src_imgs/aerial_city.png")
    for line in lines:
        if line:
            _touch(root, f"dst_imgs_all/{line.split()[0]}")


def test_csiq(tmp_path: Path) -> None:
    _fake_csiq(tmp_path)
    m = IMPORTERS["csiq"](tmp_path, expected=(3, 2))
    assert m.image_ids[0] == "dst_imgs_all/1600.AWGN.1.png"
    assert [r.distortion for r in m.rows] == ["white_noise", "gaussian_blur", "jpeg"]
    assert m.rows[2].ref == "src_imgs/aerial_city.png" and m.rows[2].group == "aerial_city"
    assert m.rows[1].extra == {"level": "2"}
    with pytest.raises(ManifestError, match="expected 866 images, found 3"):
        IMPORTERS["csiq"](tmp_path)


def test_csiq_malformed_line(tmp_path: Path) -> None:
    _fake_csiq(tmp_path, ["1600.AWGN.1.png 0.1", "1600.AWGN.2.png", "1600.AWGN.3.png 0.3"])
    out = tmp_path / "csiq.csv"
    with pytest.raises(ManifestError, match=r"csiq_label.txt:2: expected '<ref>"):
        import_to("csiq", tmp_path, out, expected=None)
    _fake_csiq(tmp_path, ["1600.AWGN.1.png 0.1", "1600.AWGN.2.png abc"])
    with pytest.raises(ManifestError, match=r"csiq_label.txt:2: bad score 'abc'"):
        import_to("csiq", tmp_path, out, expected=None)
    assert not out.exists()


def test_csiq_missing_reference(tmp_path: Path) -> None:
    _fake_csiq(tmp_path)
    (tmp_path / "src_imgs/aerial_city.png").unlink()
    with pytest.raises(ManifestError, match=r"csiq_label.txt:4: reference file missing"):
        IMPORTERS["csiq"](tmp_path, expected=None)


# ---------------------------------------------------------------- TID2013


def test_tid2013_case_insensitive_names(tmp_path: Path) -> None:
    lines = ["5.51429 I01_01_1.bmp", "4.2 i01_08_5.bmp", "3.0 I02_24_3.BMP"]
    (tmp_path / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    _touch(tmp_path, "distorted_images/i01_01_1.bmp", "distorted_images/i01_08_5.bmp")
    _touch(tmp_path, "distorted_images/I02_24_3.bmp", "reference_images/I01.BMP")
    _touch(tmp_path, "reference_images/i02.bmp")
    m = IMPORTERS["tid2013"](tmp_path, expected=(3, 2))
    assert m.image_ids == [
        "distorted_images/i01_01_1.bmp",
        "distorted_images/i01_08_5.bmp",
        "distorted_images/I02_24_3.bmp",
    ]
    assert [r.ref for r in m.rows] == ["reference_images/I01.BMP"] * 2 + [
        "reference_images/i02.bmp"
    ]
    assert [r.distortion for r in m.rows] == [
        "additive_gaussian_noise",
        "gaussian_blur",
        "sparse_sampling_reconstruction",
    ]
    assert m.rows[0].score == 5.51429 and m.rows[1].group == "I01"
    (tmp_path / "distorted_images/i01_08_5.bmp").unlink()
    with pytest.raises(
        ManifestError, match=r"mos_with_names.txt:2: image file missing \(any case\)"
    ):
        IMPORTERS["tid2013"](tmp_path, expected=(3, 2))


# ---------------------------------------------------------------- KADID-10k


def _fake_kadid(root: Path, rows: list[str]) -> None:
    (root / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n" + "\n".join(rows) + "\n")
    for row in rows:
        _touch(root, *(f"images/{n}" for n in row.split(",")[:2]))


def test_kadid10k(tmp_path: Path) -> None:
    _fake_kadid(tmp_path, ["I01_01_01.png,I01.png,4.57,0.496", "I02_25_05.png,I02.png,1.2,0.3"])
    m = IMPORTERS["kadid10k"](tmp_path, expected=(2, 2))
    assert m.rows[0].image == "images/I01_01_01.png" and m.rows[0].ref == "images/I01.png"
    assert m.rows[0].extra == {"level": "1", "var": "0.496"}
    assert [r.distortion for r in m.rows] == ["gaussian_blur", "contrast_change"]
    assert (m.info.score_kind, m.info.lower_better, m.info.score_range) == ("MOS", False, (1, 5))
    with pytest.raises(ManifestError, match="expected 81 reference images, found 2"):
        IMPORTERS["kadid10k"](tmp_path, expected=(2, 81))


def test_kadid10k_bad_row_and_duplicate(tmp_path: Path) -> None:
    _fake_kadid(tmp_path, ["I01_01_01.png,I01.png,4.57,0.4", "bad.png,I01.png,3,0.1"])
    with pytest.raises(ManifestError, match=r"dmos.csv:3: expected 'I##_##_##.png"):
        IMPORTERS["kadid10k"](tmp_path, expected=None)
    _fake_kadid(tmp_path, ["I01_01_01.png,I01.png,4.57,0.4", "I01_01_01.png,I01.png,3,0.1"])
    with pytest.raises(ManifestError, match=r"dmos.csv:3: image .* already listed at .*dmos.csv:2"):
        IMPORTERS["kadid10k"](tmp_path, expected=None)


# ---------------------------------------------------------------- KonIQ-10k


@pytest.mark.parametrize(
    ("mos", "score_range"), [(("77.38", "3.1"), (0, 100)), (("4.1", "3.2"), (1, 5))]
)
def test_koniq10k_detects_scale(tmp_path: Path, mos: tuple[str, str], score_range: tuple) -> None:
    header = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\n"
    rows = (
        f"1.jpg,0,0,0.2,0.7,0.1,105,{mos[0]},0.52,training\n2.jpg,0,0,1,0,0,96,{mos[1]},0.5,test\n"
    )
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(header + rows)
    _touch(tmp_path, "1024x768/1.jpg", "1024x768/2.jpg")
    m = IMPORTERS["koniq10k"](tmp_path, expected=2)
    assert m.info.score_range == score_range
    assert m.rows[0].group == "1024x768/1.jpg" and m.rows[0].ref == ""
    assert m.rows[0].extra == {"sd": "0.52", "official_split": "train"}
    with pytest.raises(ManifestError, match="expected 10073 images, found 2"):
        IMPORTERS["koniq10k"](tmp_path)


# ---------------------------------------------------------------- SPAQ


def test_spaq(tmp_path: Path) -> None:
    header = (
        "Image name",
        "MOS",
        "Brightness",
        "Colorfulness",
        "Contrast",
        "Noisiness",
        "Sharpness",
    )
    rows = [
        header,
        ("00001.jpg", 48.86, 47.43, 55.57, 55.71, 37.86, 42.57),
        ("00002.jpg", 62.5, 1, 2, 3, 4, 5),
    ]
    _xlsx(tmp_path / "Annotations/MOS and Image attribute scores.xlsx", rows)
    _touch(tmp_path, "TestImage/00001.jpg", "TestImage/00002.jpg")
    m = IMPORTERS["spaq"](tmp_path, expected=2)
    assert m.image_ids == ["TestImage/00001.jpg", "TestImage/00002.jpg"]
    assert m.rows[0].score == 48.86 and m.rows[0].extra["sharpness"] == "42.57"
    rows.append(("00003.jpg", "n/a", 1, 2, 3, 4, 5))
    _xlsx(tmp_path / "Annotations/MOS and Image attribute scores.xlsx", rows)
    with pytest.raises(ManifestError, match=r"scores.xlsx: row 4: bad score 'n/a'"):
        IMPORTERS["spaq"](tmp_path, expected=None)


# ---------------------------------------------------------------- LIVE Challenge


def test_livec_drops_training_images(tmp_path: Path) -> None:
    names = ["t1.bmp", "t2.bmp", "100.bmp", "101.bmp", "102.JPG"]
    (tmp_path / "Data").mkdir()
    savemat(tmp_path / "Data/AllImages_release.mat", {"AllImages_release": _cells(names).T})
    savemat(
        tmp_path / "Data/AllMOS_release.mat", {"AllMOS_release": np.array([[50, 60, 32.5, 70, 12]])}
    )
    _touch(tmp_path, "Images/100.bmp", "Images/101.bmp", "Images/102.JPG")
    m = IMPORTERS["livec"](tmp_path, expected=3)
    assert m.image_ids == ["Images/100.bmp", "Images/101.bmp", "Images/102.JPG"]
    assert m.scores() == [32.5, 70.0, 12.0]
    with pytest.raises(ManifestError, match="expected 1162 images, found 3"):
        IMPORTERS["livec"](tmp_path)
    (tmp_path / "Images/101.bmp").unlink()
    with pytest.raises(ManifestError, match=r"AllMOS_release.mat: entry 4 \(101.bmp\): image file"):
        IMPORTERS["livec"](tmp_path, expected=3)


# ---------------------------------------------------------------- BID


def test_bid(tmp_path: Path) -> None:
    _xlsx(tmp_path / "DatabaseGrades.xlsx", [("Image", "MOS"), (1, 3.5), (2, 0.8), (12, 4.25)])
    _touch(tmp_path, "DatabaseImage0001.JPG", "DatabaseImage0002.JPG", "DatabaseImage0012.JPG")
    m = IMPORTERS["bid"](tmp_path, expected=3)
    assert m.image_ids[2] == "DatabaseImage0012.JPG" and m.scores() == [3.5, 0.8, 4.25]
    assert m.info.score_range == (0, 5)
    with pytest.raises(ManifestError, match="expected 586 images, found 3"):
        IMPORTERS["bid"](tmp_path)
    _xlsx(tmp_path / "DatabaseGrades.xlsx", [("Image", "MOS"), (1, 3.5), (2.5, 0.8)])
    with pytest.raises(ManifestError, match=r"DatabaseGrades.xlsx: row 3: image number 2.5"):
        IMPORTERS["bid"](tmp_path, expected=None)


# ---------------------------------------------------------------- every importer


def test_import_to_roundtrip_and_registry(tmp_path: Path) -> None:
    _fake_csiq(tmp_path)
    out = tmp_path / "m" / "csiq.csv"
    written = import_to("csiq", tmp_path, out, expected=Expected(3, 2))
    assert read_manifest(out).rows == written.rows
    with pytest.raises(ManifestError, match="did you mean tid2013"):
        get_importer("tid2031")


# the layout options each importer takes besides label_file= and expected=
LAYOUT = {
    "live": {"realigned", "image_dir", "ref_dir", "folders", "score_range"},
    "csiq": {"image_dir", "ref_dir", "sheet"},
    "tid2013": {"image_dir", "ref_dir"},
    "kadid10k": {"image_dir", "ref_dir"},
    "pipal": {"image_dir", "ref_dir", "score_range"},
    "koniq10k": {"image_dir"},
    "spaq": {"image_dir", "sheet"},
    "livec": {"image_dir"},
    "bid": {"image_dir", "sheet"},
    "flive": {"image_dir"},
    "gfiqa20k": {"image_dir"},
    "agiqa3k": {"image_dir"},
    "aigciqa2023": {"image_dir"},
    "uwiqa": {"image_dir", "sheet"},
}
CLI_OPTIONS = {
    "image_dir": "--image-dir", "ref_dir": "--ref-dir", "sheet": "--sheet", "score_range": "--range"
}


def test_the_layout_table_covers_every_importer() -> None:
    assert set(LAYOUT) == set(IMPORTERS)


@pytest.mark.parametrize("name", sorted(IMPORTERS))
def test_every_importer_signature_shows_what_it_takes(name: str, tmp_path: Path) -> None:
    """``root``, then keyword-only ``label_file=``, the layout options and ``expected=`` (the
    signature is what the CLI asks); any other option is refused before a file is read."""
    importer = IMPORTERS[name]
    params = inspect.signature(importer).parameters
    assert next(iter(params)) == "root"
    assert set(params) == {"root", "label_file", "expected", *LAYOUT[name]}
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[1:])
    assert params["label_file"].default is None
    assert params["expected"].default == KNOWN[name].expected
    assert importer.__name__ == f"import_{name}" and importer.__doc__
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        importer(tmp_path / "not-there", colour="red")


@pytest.mark.parametrize("name", sorted(IMPORTERS))
def test_the_cli_refuses_exactly_the_options_a_dataset_does_not_take(
    name: str, tmp_path: Path
) -> None:
    values = {"--image-dir": "x", "--ref-dir": "x", "--sheet": "x", "--range": "0,1"}
    for key, option in CLI_OPTIONS.items():
        args = ["import", name, "--root", tmp_path, "--out", tmp_path / "m.csv"]
        result = CliRunner().invoke(main, [str(a) for a in (*args, option, values[option])])
        refused = f"{option}: not an option of dataset {name!r}"
        if key in LAYOUT[name]:  # passed on: the empty root has no label file
            assert result.exit_code == 1 and "label file" in result.output, result.output
        else:
            assert result.exit_code == 2 and refused in result.output, result.output


def test_label_file_and_image_dir_options(tmp_path: Path) -> None:
    """LIVE Challenge and KADID read from renamed files and folders when told."""
    names = ["t1.bmp", "100.bmp", "101.bmp"]
    (tmp_path / "labels").mkdir()
    savemat(tmp_path / "labels/AllImages_release.mat", {"AllImages_release": _cells(names).T})
    savemat(tmp_path / "labels/mos.mat", {"AllMOS_release": np.array([[1.0, 2.0, 3.0]])})
    _touch(tmp_path, "photos/100.bmp", "photos/101.bmp")
    m = IMPORTERS["livec"](tmp_path, label_file="labels/mos.mat", image_dir="photos", expected=2)
    assert m.image_ids == ["photos/100.bmp", "photos/101.bmp"]
    with pytest.raises(ManifestError, match=r"LIVE Challenge: label file not found.*--label-file"):
        IMPORTERS["livec"](tmp_path)


def test_reference_listed_as_a_distorted_row_is_refused(tmp_path: Path) -> None:
    _fake_kadid(tmp_path, ["I01_01_01.png,I01.png,4.57,0.4", "I01.png,I01.png,5.0,0.1"])
    with pytest.raises(ManifestError, match=r"dmos.csv:3: expected 'I##_##_##.png"):
        IMPORTERS["kadid10k"](tmp_path, expected=None)
    rows = ["I01_01_01.png,I01.png,4.57,0.4", "I02_01_01.png,I01_01_01.png,3.0,0.1"]
    _fake_kadid(tmp_path, rows)
    with pytest.raises(ManifestError, match=r"dmos.csv:2: 'images/I01_01_01.png' is a reference"):
        IMPORTERS["kadid10k"](tmp_path, expected=None)


def test_header_only_label_file_is_refused(tmp_path: Path) -> None:
    _fake_kadid(tmp_path, [])
    with pytest.raises(ManifestError, match=r"dmos.csv: no image rows"):
        IMPORTERS["kadid10k"](tmp_path, expected=None)


def test_kadid_short_row_names_the_fields(tmp_path: Path) -> None:
    _fake_kadid(tmp_path, ["I01_01_01.png,I01.png,4.57,0.4"])
    with open(tmp_path / "dmos.csv", "a") as fh:
        fh.write("\nI01_01_02.png,I01.png\n")
    with pytest.raises(ManifestError, match=r"dmos.csv:4: 2 fields, but the header has 4"):
        IMPORTERS["kadid10k"](tmp_path, expected=None)
