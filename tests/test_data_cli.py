"""Tests for the iqa-data CLI (click CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import _layouts as L
import numpy as np
from click.testing import CliRunner
from scipy.io import savemat

from iqadata.cli import main
from iqadata.importers import KNOWN
from iqadata.manifest import file_sha256, read_manifest, read_split


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def _csiq(root: Path) -> None:
    """The flat CSIQ copy some training code uses (csiq_label.txt, dst_imgs_all/)."""
    lines = ["1600.AWGN.1.png 0.06", "1600.BLUR.2.png 0.2", "bridge.JPEG.1.png 0.4"]
    (root / "csiq_label.txt").write_text("\n".join(lines) + "\n")
    _touch(root, "src_imgs/1600.png", "src_imgs/bridge.png")
    _touch(root, *(f"dst_imgs_all/{line.split()[0]}" for line in lines))


def _run(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_commands_and_every_dataset_release() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    for command in ("import", "split", "demo", "info"):
        assert command in result.output
    result = _run("import", "--help")
    assert "--map" in result.output and "official download layout" in result.output
    for name, known in KNOWN.items():
        assert name in result.output and known.release.split(" (")[0] in result.output
    assert "http" not in result.output
    for option in ("--label-file", "--image-dir", "--ref-dir", "--higher-better", "--authentic"):
        assert option in result.output


def test_import_split_info(tmp_path: Path) -> None:
    """The DVC call forms: import NAME --root R --out M; split M --ratios --repeats --out D."""
    _csiq(tmp_path)
    out = tmp_path / "m.csv"
    result = _run("import", "csiq", "--root", tmp_path, "--out", out)
    assert result.exit_code == 1 and "expected 866 images, found 3" in result.output
    assert not out.exists()
    result = _run("import", "csiq", "--root", tmp_path, "--out", out, "--no-count-check")
    assert result.exit_code == 0, result.output
    assert "3 images, 2 references" in result.output and len(read_manifest(out).rows) == 3
    row = read_manifest(out).rows[0]
    assert row.extra["sha256"] == file_sha256(tmp_path / row.image)  # contents named
    assert row.extra["ref_sha256"] == file_sha256(tmp_path / row.ref)
    before = out.read_bytes()
    (tmp_path / row.image).write_bytes((tmp_path / row.image).read_bytes() + b"x")
    assert _run("import", "csiq", "--root", tmp_path, "--out", out,
                "--no-count-check").exit_code == 0
    assert out.read_bytes() != before  # an edited image changes the manifest (DVC reruns)
    args = ["split", out, "--ratios", "0.5,0.5", "--repeats", "3", "--seed", "1"]
    result = _run(*args, "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    split = read_split(tmp_path / "s" / "split_02.json")
    assert split.ratios == (0.5, 0.5) and split.val == ()
    split.check_against(read_manifest(out))
    assert _run(*args, "--out", tmp_path / "s").exit_code == 0  # its own folder: rewritten
    result = _run("info", out)
    assert result.exit_code == 0
    assert "images: 3  references: 2  groups: 2" in result.output
    assert "DMOS, range 0..1, lower is better" in result.output
    summary = json.loads(_run("info", out, "--json").output)
    assert (summary["images"], summary["references"], summary["lower_better"]) == (3, 2, True)


def test_import_official_csiq_release(tmp_path: Path) -> None:
    root = tmp_path / "csiq"
    root.mkdir()
    L.make_csiq(root, L.blank_file(tmp_path))
    result = _run("import", "csiq", "--root", root, "--out", tmp_path / "csiq.csv")
    assert result.exit_code == 0, result.output
    assert "866 images, 30 references" in result.output


def test_import_refuses_to_overwrite_a_file_that_is_no_manifest(tmp_path: Path) -> None:
    _csiq(tmp_path)
    notes = tmp_path / "notes.csv"
    notes.write_text("my notes\n")
    result = _run("import", "csiq", "--root", tmp_path, "--out", notes, "--no-count-check")
    assert result.exit_code == 2 and "is not a manifest" in result.output
    assert notes.read_text() == "my notes\n"
    manifest = tmp_path / "m.csv"
    for _ in range(2):  # a manifest may be replaced
        result = _run("import", "csiq", "--root", tmp_path, "--out", manifest, "--no-count-check")
        assert result.exit_code == 0, result.output


def test_split_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    _csiq(tmp_path)
    manifest = tmp_path / "m.csv"
    assert (
        _run("import", "csiq", "--root", tmp_path, "--out", manifest, "--no-count-check").exit_code
        == 0
    )
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    result = _run("split", manifest, "--ratios", "0.5,0.5", "--repeats", "2", "--out", folder)
    assert (
        result.exit_code == 2 and "already holds files this command did not write" in result.output
    )
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_csv_needs_kind_orientation_and_range(tmp_path: Path) -> None:
    (tmp_path / "meta.csv").write_text(
        "ref_name,dist_name,dmos\nr.png,d1.png,0.2\nr.png,d2.png,0.7\n"
    )
    _touch(tmp_path, "r.png", "d1.png", "d2.png")
    out = tmp_path / "x.csv"
    base = ["import", "csv", "--labels", tmp_path / "meta.csv", "--out", out, "--name", "team"]
    base += ["--map", "image=dist_name,ref=ref_name,score=dmos"]
    result = _run(*base, "--kind", "DMOS", "--range", "0,1")
    assert result.exit_code == 2 and "--lower-better or --higher-better" in result.output
    result = _run(*base, "--kind", "DMOS", "--lower-better")
    assert result.exit_code == 2 and "--range LOW,HIGH" in result.output
    result = _run(*base, "--kind", "DMOS", "--higher-better", "--range", "0,1")
    assert result.exit_code == 2 and "--unusual-orientation" in result.output and not out.exists()
    result = _run(
        *base, "--kind", "DMOS", "--higher-better", "--range", "0,1", "--unusual-orientation"
    )
    assert result.exit_code == 0, result.output
    result = _run(*base, "--kind", "DMOS", "--lower-better", "--range", "0,1")
    assert result.exit_code == 0, result.output
    info = read_manifest(out).info
    assert (info.name, info.score_kind, info.lower_better, info.score_range) == (
        "team",
        "DMOS",
        True,
        (0, 1),
    )


def test_spaq_and_livec_folders_are_set_from_the_cli(tmp_path: Path) -> None:
    spaq = tmp_path / "spaq"
    L.xlsx(spaq / "labels.xlsx", [L.SPAQ_HEADER, ("1.jpg", 50.0, 1, 2, 3, 4, 5)])
    _touch(spaq, "small/1.jpg")
    args = ["import", "spaq", "--root", spaq, "--out", tmp_path / "s.csv", "--no-count-check"]
    result = _run(*args, "--label-file", "labels.xlsx", "--image-dir", "small")
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "s.csv").image_ids == ["small/1.jpg"]
    livec = tmp_path / "livec"
    (livec / "Data").mkdir(parents=True)
    savemat(livec / "Data/AllImages_release.mat", {"AllImages_release": L.cells(["a.bmp"]).T})
    savemat(livec / "Data/AllMOS_release.mat", {"AllMOS_release": np.array([[40.0]])})
    _touch(livec, "resized/a.bmp")
    args = ["import", "livec", "--root", livec, "--out", tmp_path / "l.csv", "--no-count-check"]
    assert _run(*args, "--image-dir", "resized").exit_code == 0
    result = _run(*args, "--ref-dir", "x")
    assert result.exit_code == 2 and "--ref-dir: not an option of dataset 'livec'" in result.output


def test_import_pyiqa_writes_official_splits(tmp_path: Path) -> None:
    lines = ["img_name,mos,std,official_split"] + [
        f"{k}.jpg,{10 * k},0.5,{('train', 'val', 'test')[k % 3]}" for k in range(6)
    ]
    (tmp_path / "meta_info_KonIQ10kDataset.csv").write_text("\n".join(lines) + "\n")
    _touch(tmp_path, *(f"1024x768/{k}.jpg" for k in range(6)))
    out = tmp_path / "out" / "manifest.csv"
    args = [
        "import",
        "pyiqa",
        "--labels",
        tmp_path / "meta_info_KonIQ10kDataset.csv",
        "--root",
        tmp_path,
    ]
    result = _run(*args, "--image-dir", "1024x768", "--name", "koniq10k", "--out", out)
    assert result.exit_code == 0, result.output
    assert "officially has 10073 images; this file lists 6" in result.output
    split = read_split(tmp_path / "out" / "splits" / "official_split.json")
    assert split.train == ("1024x768/0.jpg", "1024x768/3.jpg")
    split.check_against(read_manifest(out))


def test_bad_options_name_the_option(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("x")
    out = tmp_path / "o.csv"
    result = _run("split", manifest, "--ratios", "0.5,0.2", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--ratios" in result.output and "sum to 1" in result.output
    result = _run("import", "csv", "--out", out, "--map", "img=a")
    assert result.exit_code == 2 and "--map" in result.output
    result = _run("import", "tid2031", "--root", tmp_path, "--out", out)
    assert result.exit_code == 2 and "tid2013" in result.output
    result = _run("import", "csiq", "--root", tmp_path, "--out", out, "--range", "0,1")
    assert result.exit_code == 2 and "--range: not an option of dataset 'csiq'" in result.output
    result = _run("import", "csiq", "--root", tmp_path, "--out", out, "--kind", "MOS")
    assert result.exit_code == 2 and "--kind: only for 'import csv'" in result.output
    result = _run("import", "csv", "--out", out)
    assert result.exit_code == 2 and "--label-file" in result.output
    result = _run("import", "csiq", "--root", tmp_path, "--out", out)
    assert (
        result.exit_code == 1 and "looked for 'csiq.DMOS.xlsx' or 'csiq_label.txt'" in result.output
    )
    result = _run("demo", "--out", tmp_path / "d", "--size", "64")
    assert result.exit_code == 2 and "--size" in result.output
    result = _run("demo", "--out", tmp_path / "d", "--distortions", "fog")
    assert result.exit_code == 2 and "--distortions" in result.output
    result = _run("info", manifest)
    assert result.exit_code == 1 and "not an iqa manifest" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_demo_command(tmp_path: Path) -> None:
    args = ["demo", "--out", tmp_path, "--n-refs", "2", "--levels", "2", "--size", "32,48"]
    args += ["--distortions", "jpeg,white_noise", "--splits", "2", "--ratios", "0.5,0.5"]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    assert "8 images, 2 references" in result.output
    assert len(read_manifest(tmp_path / "manifest.csv").rows) == 8
    assert (tmp_path / "splits" / "split_01.json").is_file()
