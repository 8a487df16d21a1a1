"""Every official importer on a synthesised copy of its release, at the official counts.

The copies (tests/_layouts.py) have the real label-file formats, file names and folders;
each importer runs with its defaults (official file names, official count check on).
"""

from __future__ import annotations

from pathlib import Path

import _layouts as L
import pytest

from iqadata.importers import IMPORTERS, KNOWN, import_to
from iqadata.manifest import Manifest, ManifestError, read_manifest


def _root(tmp_path: Path, name: str, **kwargs: object) -> Path:
    root = tmp_path / name
    root.mkdir()
    L.MAKERS[name](root, L.blank_file(tmp_path), **kwargs)
    return root


def _official(manifest: Manifest, name: str) -> None:
    """Counts, labels and groups as the registry says; ids are real files under the root."""
    known = KNOWN[name]
    assert len(manifest.rows) == known.expected.images
    assert len(manifest.ref_ids) == known.expected.refs
    info = manifest.info
    assert (info.name, info.score_kind, info.lower_better) == (name, known.kind, known.lower_better)
    for row in manifest.rows[:: max(1, len(manifest.rows) // 50)]:
        assert (manifest.root / row.image).is_file()
        assert not row.ref or (manifest.root / row.ref).is_file()
    if known.expected.refs:
        assert len({r.group for r in manifest.rows}) == known.expected.refs


def test_live(tmp_path: Path) -> None:
    m = IMPORTERS["live"](_root(tmp_path, "live"))
    _official(m, "live")
    assert m.rows[0].distortion == "jpeg2000" and m.rows[0].ref.startswith("refimgs/ref")
    low, high = m.info.score_range
    assert (min(m.scores()), max(m.scores())) == (-2.64, 111.8)  # realigned DMOS, raw
    assert low <= -2.64 and 111.8 <= high  # every target in [0, 1], none clipped


def test_csiq_official_xlsx_and_type_folders(tmp_path: Path) -> None:
    root = _root(tmp_path, "csiq")
    m = IMPORTERS["csiq"](root)
    _official(m, "csiq")
    by_id = m.by_id()
    first = by_id["dst_imgs/awgn/1600.AWGN.1.png"]
    assert (first.ref, first.group, first.distortion) == (
        "src_imgs/1600.png",
        "1600",
        "white_noise",
    )
    assert by_id["dst_imgs/jpeg2000/woman.jpeg2000.5.png"].distortion == "jpeg2000"
    assert by_id["dst_imgs/fnoise/boston.fnoise.2.png"].distortion == "pink_noise"
    kinds = {r.distortion: 0 for r in m.rows}
    for r in m.rows:
        kinds[r.distortion] += 1
    assert kinds["contrast_change"] == 116 and kinds["gaussian_blur"] == 150
    assert m.info.score_range == (0, 1)


def test_csiq_unknown_type_names_the_row(tmp_path: Path) -> None:
    root = tmp_path / "csiq"
    root.mkdir()
    rows = [["image", "dst_type", "dst_lev", "dmos"], [1600, "haze", 1, 0.5]]
    L.xlsx(root / "csiq.DMOS.xlsx", rows, sheet="all_by_image")
    with pytest.raises(ManifestError, match=r"csiq.DMOS.xlsx: row 2: unknown dst_type 'haze'"):
        IMPORTERS["csiq"](root)
    with pytest.raises(ManifestError, match=r"looked for 'csiq.DMOS.xlsx' or 'csiq_label.txt'"):
        IMPORTERS["csiq"](tmp_path)


def test_tid2013_label_case_differs_from_disk(tmp_path: Path) -> None:
    m = IMPORTERS["tid2013"](_root(tmp_path, "tid2013"))
    _official(m, "tid2013")
    assert m.rows[0].image == "distorted_images/i01_01_1.bmp"
    assert m.rows[0].ref == "reference_images/I01.BMP" and m.rows[0].group == "I01"


def test_kadid10k(tmp_path: Path) -> None:
    m = IMPORTERS["kadid10k"](_root(tmp_path, "kadid10k"))
    _official(m, "kadid10k")
    assert m.rows[-1].distortion == "contrast_change" and m.rows[-1].extra["level"] == "5"


def test_pipal(tmp_path: Path) -> None:
    m = IMPORTERS["pipal"](_root(tmp_path, "pipal"))
    _official(m, "pipal")
    row = m.rows[0]
    assert row.image.startswith("Distortion_1/A0001_00_00") and row.ref == "Train_Ref/A0001.bmp"
    assert {r.image.split("/")[0] for r in m.rows} == {f"Distortion_{k}" for k in range(1, 5)}
    assert m.info.score_range == (800, 2000)


@pytest.mark.parametrize("which", ["sets", "scores"])
def test_koniq10k_from_either_official_file(tmp_path: Path, which: str) -> None:
    root = _root(tmp_path, "koniq10k", which=which)
    m = IMPORTERS["koniq10k"](root)
    _official(m, "koniq10k")
    assert m.info.score_range == (0, 100)
    assert max(m.scores()) > 5  # the 0-100 score from either file
    if which == "sets":
        splits = [r.extra["official_split"] for r in m.rows]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (
            7058,
            1000,
            2015,
        )
    else:
        assert 1 <= float(m.rows[0].extra["mos_1to5"]) <= 5


def test_koniq10k_both_files_give_the_same_scores(tmp_path: Path) -> None:
    root = _root(tmp_path, "koniq10k")
    sets = IMPORTERS["koniq10k"](root, label_file="koniq10k_distributions_sets.csv")
    site = IMPORTERS["koniq10k"](root, label_file="koniq10k_scores_and_distributions.csv")
    assert sets.image_ids == site.image_ids and sets.scores() == site.scores()


def test_spaq(tmp_path: Path) -> None:
    m = IMPORTERS["spaq"](_root(tmp_path, "spaq"))
    _official(m, "spaq")
    assert m.rows[0].image == "TestImage/00001.jpg" and m.rows[0].extra["sharpness"] == "54"


def test_livec_drops_training_images(tmp_path: Path) -> None:
    m = IMPORTERS["livec"](_root(tmp_path, "livec"))
    _official(m, "livec")
    assert m.rows[0].image == "Images/3.bmp" and not any("/t" in i for i in m.image_ids)


def test_bid(tmp_path: Path) -> None:
    m = IMPORTERS["bid"](_root(tmp_path, "bid"))
    _official(m, "bid")
    assert m.rows[-1].image == "DatabaseImage0586.JPG"


def test_flive(tmp_path: Path) -> None:
    m = IMPORTERS["flive"](_root(tmp_path, "flive"))
    _official(m, "flive")
    folders = [i.split("/")[0] for i in m.image_ids]
    assert {f: folders.count(f) for f in L.FLIVE_FOLDERS} == L.FLIVE_FOLDERS
    assert m.info.score_range == (0, 100) and m.rows[0].group == m.rows[0].image
    parts = [r.extra["official_split"] for r in m.rows]
    counts = {p: parts.count(p) for p in ("train", "val", "test")}
    assert counts == {"train": 39810 - L.FLIVE_VAL - L.FLIVE_TEST, "val": L.FLIVE_VAL,
                      "test": L.FLIVE_TEST}


def test_gfiqa20k(tmp_path: Path) -> None:
    m = IMPORTERS["gfiqa20k"](_root(tmp_path, "gfiqa20k"))
    _official(m, "gfiqa20k")
    assert m.rows[0].image == "image/00000.png" and m.info.score_range == (0, 1)


def test_agiqa3k_groups_by_prompt(tmp_path: Path) -> None:
    m = IMPORTERS["agiqa3k"](_root(tmp_path, "agiqa3k"))
    _official(m, "agiqa3k")
    assert m.rows[0].image == "AGIQA-3K/AttnGAN_normal_000.jpg"
    assert m.rows[0].extra["prompt"] == "a tray of sushi, number 0"
    assert len({r.group for r in m.rows}) == 300 and m.rows[5].group == "prompt_005"
    assert all(r.extra["prompt_group"] == r.group for r in m.rows)


def test_aigciqa2023(tmp_path: Path) -> None:
    m = IMPORTERS["aigciqa2023"](_root(tmp_path, "aigciqa2023"))
    _official(m, "aigciqa2023")
    assert m.rows[2399].image == "Image/allimg/2399.png"
    assert set(m.rows[0].extra) == {"authenticity", "correspondence", "prompt_group"}
    assert len({r.group for r in m.rows}) == 100 and m.rows[2399].group == "prompt_099"


def test_uwiqa(tmp_path: Path) -> None:
    m = IMPORTERS["uwiqa"](_root(tmp_path, "uwiqa"))
    _official(m, "uwiqa")
    assert m.rows[0].image == "img/0001.png" and m.info.score_range == (0, 1)


def test_every_registered_dataset_has_a_layout_test() -> None:
    assert set(L.MAKERS) == set(IMPORTERS) == set(KNOWN)


def test_import_to_round_trip(tmp_path: Path) -> None:
    root = _root(tmp_path, "uwiqa")
    out = tmp_path / "m" / "uwiqa.csv"
    written = import_to("uwiqa", root, out)
    assert read_manifest(out).rows == written.rows
