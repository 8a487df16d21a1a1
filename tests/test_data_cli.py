"""Tests for the iqa-data CLI (click CliRunner)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cache.manifest import read_manifest, read_split
from pipelines.data_cli import main


def _csiq(root: Path) -> None:
    lines = ["1600.AWGN.1.png 0.06", "1600.BLUR.2.png 0.2", "bridge.JPEG.1.png 0.4"]
    (root / "csiq_label.txt").write_text("\n".join(lines) + "\n")
    for name in ["src_imgs/1600.png", "src_imgs/bridge.png"] + [
        f"dst_imgs_all/{line.split()[0]}" for line in lines
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("import", "split", "demo", "info"):
        assert command in result.output
    result = CliRunner().invoke(main, ["import", "--help"])
    assert "--map" in result.output and "official download layout" in result.output


def test_import_split_info(tmp_path: Path) -> None:
    _csiq(tmp_path)
    out = tmp_path / "m.csv"
    runner = CliRunner()
    result = runner.invoke(main, ["import", "csiq", "--root", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1 and "expected 866 images, found 3" in result.output
    assert not out.exists()
    args = ["import", "csiq", "--root", str(tmp_path), "--out", str(out), "--no-count-check"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 images, 2 references" in result.output and len(read_manifest(out).rows) == 3
    args = [
        "split",
        str(out),
        "--ratios",
        "0.5,0.5",
        "--repeats",
        "3",
        "--out",
        str(tmp_path / "s"),
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    split = read_split(tmp_path / "s" / "split_02.json")
    assert split.ratios == (0.5, 0.5) and split.val == ()
    result = runner.invoke(main, ["info", str(out)])
    assert result.exit_code == 0
    assert "images: 3  references: 2  groups: 2" in result.output
    assert "DMOS, range 0..1, lower is better" in result.output


def test_import_csv_mapping(tmp_path: Path) -> None:
    (tmp_path / "meta.csv").write_text(
        "ref_name,dist_name,dmos\nr.png,d1.png,0.2\nr.png,d2.png,0.7\n"
    )
    for name in ("r.png", "d1.png", "d2.png"):
        (tmp_path / name).write_bytes(b"x")
    out = tmp_path / "x.csv"
    args = ["import", "csv", "--labels", str(tmp_path / "meta.csv"), "--out", str(out)]
    args += ["--map", "image=dist_name,ref=ref_name,score=dmos", "--kind", "DMOS"]
    args += ["--lower-better", "--range", "0,1", "--name", "team"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    info = read_manifest(out).info
    assert (info.name, info.score_kind, info.lower_better, info.score_range) == (
        "team",
        "DMOS",
        True,
        (0.0, 1.0),
    )


def test_bad_options_name_the_option(tmp_path: Path) -> None:
    runner = CliRunner()
    manifest = tmp_path / "m.csv"
    manifest.write_text("x")
    result = runner.invoke(main, ["split", str(manifest), "--ratios", "0.5,0.2", "--out", "o"])
    assert result.exit_code == 2 and "--ratios" in result.output and "sum to 1" in result.output
    result = runner.invoke(main, ["import", "csv", "--out", "o.csv", "--map", "img=a"])
    assert result.exit_code == 2 and "--map" in result.output
    result = runner.invoke(main, ["import", "tid2031", "--root", str(tmp_path), "--out", "o.csv"])
    assert result.exit_code == 2 and "tid2013" in result.output
    result = runner.invoke(main, ["import", "csiq", "--out", "o.csv", "--range", "0,1"])
    assert result.exit_code == 2 and "--range: only for 'import csv'" in result.output
    result = runner.invoke(main, ["import", "csv", "--out", "o.csv"])
    assert result.exit_code == 2 and "--labels" in result.output
    result = runner.invoke(main, ["demo", "--out", str(tmp_path / "d"), "--size", "64"])
    assert result.exit_code == 2 and "--size" in result.output
    result = runner.invoke(main, ["demo", "--out", str(tmp_path / "d"), "--distortions", "fog"])
    assert result.exit_code == 2 and "--distortions" in result.output
    result = runner.invoke(main, ["info", str(manifest)])
    assert result.exit_code == 1 and "not an iqa manifest" in result.output


def test_demo_command(tmp_path: Path) -> None:
    args = ["demo", "--out", str(tmp_path), "--n-refs", "2", "--levels", "2", "--size", "32,48"]
    args += ["--distortions", "jpeg,white_noise", "--splits", "2", "--ratios", "0.5,0.5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "8 images, 2 references" in result.output
    assert len(read_manifest(tmp_path / "manifest.csv").rows) == 8
    assert (tmp_path / "splits" / "split_01.json").is_file()
