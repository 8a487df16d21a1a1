"""No content leak reaches a split: the four leak paths of a user's real label files.

1. ``import csv`` with ``ref=`` and a wrong ``group=``; and any split (made or read) that
   puts a reference, prompt group or group in two parts.
2. AIGCIQA2023 grouped per image instead of per prompt.
3. ``--authentic`` on a full-reference list with an unmapped reference column.
4. References named ``sceneN/ref.png`` collapsing into one group (the file stem).
"""

from __future__ import annotations

from pathlib import Path

import _layouts as L
import pytest
from click.testing import CliRunner

from iqadata.cli import main as data_main
from iqadata.importers import IMPORTERS, import_csv
from iqadata.importers.generic import LabelSpec, LabelSpecError
from iqadata.manifest import (
    DatasetInfo,
    Manifest,
    ManifestError,
    ManifestRow,
    Split,
    read_manifest,
    write_manifest,
    write_split,
)
from iqadata.splits import make_splits

LIVE = LabelSpec("DMOS", lower_better=True, score_range=(0.0, 100.0))
TYPES = ("jp2k", "jpeg", "wn", "gblur", "fastfading")


def _live_list(root: Path, refs: int = 6) -> Path:
    """A LIVE-style list: every reference distorted by every type (one file per row)."""
    lines = ["dis_img_path,dis_type,ref_img_path,score"]
    for r in range(refs):
        for t in TYPES:
            lines.append(f"{t}/img{r}.bmp,{t},refimgs/ref{r}.bmp,{10 * r + len(t)}")
    for line in lines[1:]:
        for name in (line.split(",")[0], line.split(",")[2]):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(name.encode())
    (root / "live.csv").write_text("\n".join(lines) + "\n")
    return root / "live.csv"


# ---------------------------------------------------------------- 1. a wrong group mapping


def test_a_group_mapping_that_splits_a_reference_is_refused(tmp_path: Path) -> None:
    path = _live_list(tmp_path)
    cols = {"image": "dis_img_path", "ref": "ref_img_path", "score": "score"}
    with pytest.raises(
        ManifestError,
        match=r"live.csv:3: reference 'refimgs/ref0.bmp' is in "
        r"group 'jpeg' here but in group 'jp2k' at .*live.csv:2",
    ):
        import_csv(path, name="team", columns={**cols, "group": "dis_type"}, labels=LIVE)
    m = import_csv(path, name="team", columns=cols, labels=LIVE)
    assert len({r.group for r in m.rows}) == 6


def _leaky_manifest(tmp_path: Path) -> Path:
    """A manifest written by other code: each reference's rows spread over 5 groups."""
    rows = [
        ManifestRow(f"{t}/img{r}.bmp", float(r), group=t, ref=f"refimgs/ref{r}.bmp")
        for r in range(6)
        for t in TYPES
    ]
    path = tmp_path / "leaky.csv"
    write_manifest(Manifest(DatasetInfo("live", "DMOS", True, (0, 100)), tuple(rows)), path)
    return path


def test_split_refuses_a_manifest_whose_groups_split_a_reference(tmp_path: Path) -> None:
    path = _leaky_manifest(tmp_path)
    with pytest.raises(
        ManifestError,
        match=r"split 0: reference 'refimgs/ref\d.bmp' is in "
        r"(train|val|test)(, \w+)* and (train|val|test)",
    ):
        make_splits(read_manifest(path), (0.6, 0.2, 0.2), 3)
    res = CliRunner().invoke(data_main, ["split", str(path), "--out", str(tmp_path / "s")])
    assert res.exit_code == 1 and "reference 'refimgs/ref" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("key", "train", "test", "message"),
    [
        ("ref", ("a1",), ("a2",), "reference 'ra' is in train and test"),
        ("prompt", ("a1",), ("a2",), "prompt group 'p0' is in train and test"),
        ("group", ("b1",), ("b2",), "group 'gb' is in train and test"),
    ],
)
def test_reading_a_split_checks_its_content(
    tmp_path: Path, key: str, train: tuple[str, ...], test: tuple[str, ...], message: str
) -> None:
    def row(image: str, group: str) -> ManifestRow:
        ref = "ra" if key == "ref" and image.startswith("a") else ""
        prompt = {"prompt_group": "p0"} if key == "prompt" and image.startswith("a") else {}
        return ManifestRow(image, 1.0, group=group, ref=ref, extra=prompt)

    rows = [row("a1", "ga1"), row("a2", "ga2"), row("b1", "gb"), row("b2", "gb")]
    path = tmp_path / "m.csv"
    write_manifest(Manifest(DatasetInfo("t"), tuple(rows)), path)
    manifest = read_manifest(path)
    split = Split(train, (), test, manifest_sha256=manifest.sha256(), path=tmp_path / "s.json")
    with pytest.raises(ManifestError, match=rf"s.json: {message} of the split \(a content leak"):
        split.check_against(manifest)
    Split(("a1", "a2", "b1", "b2"), (), (), manifest_sha256=manifest.sha256()).check_against(
        manifest
    )


def test_training_refuses_a_leaky_split_file(tmp_path: Path) -> None:
    """The split file of another tool (image-level on an FR set) stops iqa-train-head."""
    from heads.cli import main as train_main

    path = _leaky_manifest(tmp_path)
    manifest = read_manifest(path)
    ids = manifest.image_ids
    write_split(
        Split(tuple(ids[::2]), (), tuple(ids[1::2]), manifest_sha256=manifest.sha256()),
        tmp_path / "split.json",
    )
    res = CliRunner().invoke(
        train_main,
        [
            "--head",
            "sfem_nr",
            "--features",
            str(tmp_path / "none.zarr"),
            "--manifest",
            str(path),
            "--split",
            str(tmp_path / "split.json"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == 1, res.output
    assert "split.json: reference 'refimgs/ref0.bmp' is in train and test" in res.output


def test_a_pyiqa_split_column_that_leaks_is_refused(tmp_path: Path) -> None:
    from iqadata.importers import import_pyiqa

    text = "ref_name,dist_name,dmos,ratio802_seed123_split_01\n"
    text += "r.png,d1.png,1,train\nr.png,d2.png,2,val\n"
    for name in ("r.png", "d1.png", "d2.png"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "meta.csv").write_text(text)
    with pytest.raises(
        ManifestError,
        match=r"split column 'ratio802_seed123_split_01': "
        r"reference 'r.png' is in train and val",
    ):
        import_pyiqa(tmp_path / "meta.csv", name="csiq")


# ---------------------------------------------------------------- 2. AIGCIQA2023 prompts


def _aigc(tmp_path: Path, prompts: bool, index: bool) -> Path:
    root = tmp_path / "aigc"
    root.mkdir()
    L.make_aigciqa2023(root, L.blank_file(tmp_path))
    if prompts:  # the authors' layout: no header; style, class, text; prompt 7 repeats 3
        texts = [f"prompt text {min(p, 3) if p in (3, 7) else p}" for p in range(100)]
        L.xlsx(root / "AIGCIQA2023_Prompts.xlsx", [("Basic", "Animals", t) for t in texts])
    if index:
        generators = ("Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser")
        L.xlsx(
            root / "DATA" / "pic-index.xlsx",
            [(g, f"{p:03d}-{r}.png") for g in generators for p in range(100) for r in (1, 2, 3, 4)],
        )
    return root


@pytest.mark.parametrize(("prompts", "index"), [(False, False), (True, True)])
def test_aigciqa2023_prompt_groups_survive_every_split(
    tmp_path: Path, prompts: bool, index: bool
) -> None:
    m = IMPORTERS["aigciqa2023"](_aigc(tmp_path, prompts, index))
    prompt_of = {r.image: int(r.image.split("/")[-1][:-4]) % 400 // 4 for r in m.rows}
    groups: dict[str, set[int]] = {}
    for row in m.rows:
        groups.setdefault(row.group, set()).add(prompt_of[row.image])
        assert row.extra["prompt_group"] == row.group
    # 100 prompts x 24 images; with the texts, prompts 3 and 7 (one text) are one group
    assert len(groups) == (99 if prompts else 100)
    assert all(len(p) == 1 for g, p in groups.items() if g != "prompt_003")
    rule = "from DATA/pic-index.xlsx" if index else "prompt = (k mod 400) div 4"
    assert rule in m.info.groups
    out = tmp_path / "m.csv"
    write_manifest(m, out)
    assert rule in next(line for line in out.read_text().splitlines() if "groups:" in line)
    assert read_manifest(out).info.groups == m.info.groups
    for ratios in ((0.6, 0.2, 0.2), (0.8, 0.2)):
        for split in make_splits(read_manifest(out), ratios, repeats=10, seed=3):
            part_of = {i: p for p in ("train", "val", "test") for i in split.part(p)}
            seen: dict[int, str] = {}
            for image, part in part_of.items():
                assert seen.setdefault(prompt_of[image], part) == part, image
    if prompts:
        assert m.by_id()["Image/allimg/5.png"].extra["prompt"] == "prompt text 1"
        assert m.by_id()["Image/allimg/5.png"].extra["generator"] == "Controlnet"


def test_aigciqa2023_malformed_prompt_files_name_the_file(tmp_path: Path) -> None:
    root = _aigc(tmp_path, prompts=False, index=False)
    L.xlsx(root / "prompts.xlsx", [("Basic", "Animals", "a corgi")] * 99)
    with pytest.raises(ManifestError, match="prompts.xlsx: 99 prompt rows, AIGCIQA2023 has 100"):
        IMPORTERS["aigciqa2023"](root)


def test_agiqa3k_one_prompt_text_in_two_groups_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "agiqa3k"
    root.mkdir()
    L.make_agiqa3k(root, L.blank_file(tmp_path))
    text = (root / "data.csv").read_text().replace('sushi, number 7"', 'sushi, number 5"')
    (root / "data.csv").write_text(text)
    with pytest.raises(
        ManifestError,
        match=r"data.csv:9: prompt 'a tray of sushi, number 5' is"
        r" in group 'prompt_007' here but in group 'prompt_005' at .*data.csv:7",
    ):
        IMPORTERS["agiqa3k"](root)


# ---------------------------------------------------------------- 3. --authentic


def test_authentic_with_an_unmapped_reference_column_is_refused(tmp_path: Path) -> None:
    path = _live_list(tmp_path)
    args = [
        "import",
        "csv",
        "--labels",
        str(path),
        "--name",
        "live",
        "--authentic",
        "--map",
        "image=dis_img_path,score=score",
        "--out",
        str(tmp_path / "m.csv"),
    ]
    res = CliRunner().invoke(data_main, args)
    assert res.exit_code == 2 and "column 'ref_img_path' looks like a reference column" in (
        res.output
    )
    assert "--not-content ref_img_path" in res.output and not (tmp_path / "m.csv").exists()
    res = CliRunner().invoke(data_main, [*args, "--not-content", "ref_img_path"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        data_main, [*args, "--not-content", "nope", "--out", str(tmp_path / "x.csv")]
    )
    assert res.exit_code == 2 and "--not-content: no column(s) ['nope']" in res.output


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("ref", "reference"),
        ("Reference", "reference"),
        ("ref_img", "reference"),
        ("refImage", "reference"),
        ("src", "reference"),
        ("source_name", "reference"),
        ("pristine", "reference"),
        ("orig_file", "reference"),
        ("hq_name", "reference"),
        ("prompt", "prompt"),
        ("caption", "prompt"),
        ("dis_img_path", None),
        ("preference", None),
        ("std", None),
    ],
)
def test_reference_like_column_names(column: str, kind: str | None) -> None:
    from iqadata.importers._columns import content_kind

    assert content_kind(column) == kind


def test_group_without_ref_and_an_unmapped_prompt_column(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "ai.csv").write_text("name,model,prompt,mos\na.png,m1,a cat,1\nb.png,m2,a cat,2\n")
    kw = {"name": "ai", "labels": LabelSpec("MOS", lower_better=False, score_range=(0.0, 5.0))}
    cols = {"image": "name", "score": "mos"}
    with pytest.raises(LabelSpecError, match="column 'prompt' looks like a prompt column"):
        import_csv(tmp_path / "ai.csv", columns={**cols, "group": "model"}, **kw)
    m = import_csv(tmp_path / "ai.csv", columns={**cols, "prompt": "prompt"}, **kw)
    assert [r.group for r in m.rows] == ["a cat", "a cat"]
    assert m.rows[0].extra["prompt_group"] == "a cat"


# ---------------------------------------------------------------- 4. reference paths


def test_references_with_one_file_name_in_ten_folders_are_ten_groups(tmp_path: Path) -> None:
    lines = ["dist,ref,mos"]
    for k in range(10):
        for level in range(3):
            lines.append(f"scene{k}/d{level}.png,scene{k}/ref.png,{level}")
            (tmp_path / f"scene{k}").mkdir(exist_ok=True)
            (tmp_path / f"scene{k}" / f"d{level}.png").write_bytes(b"%d" % level)
        (tmp_path / f"scene{k}" / "ref.png").write_bytes(b"ref%d" % k)
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    m = import_csv(
        tmp_path / "list.csv",
        name="scenes",
        columns={"image": "dist", "ref": "ref", "score": "mos"},
        labels=LabelSpec("MOS", lower_better=False, score_range=(0.0, 2.0)),
    )
    assert sorted({r.group for r in m.rows}) == [f"scene{k}/ref.png" for k in range(10)]
    splits = make_splits(m, (0.6, 0.2, 0.2), repeats=3)
    assert all(len(s.train) == 18 and len(s.test) == 6 for s in splits)
