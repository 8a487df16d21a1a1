"""Importers for PromptIQA's other tasks: face (GFIQA-20k), AI-generated (AGIQA-3k,
AIGCIQA2023) and underwater (UWIQA) image quality.

Layouts: AGIQA-3k's ``data.csv`` is the file its authors publish (header ``name, prompt,
adj1, adj2, style, mos_quality, std_quality, mos_align, std_align``; 2,982 rows, checked).
For GFIQA-20k, AIGCIQA2023 and UWIQA no label file was available here: their layouts are
the ones PromptIQA's released loaders read (``utils/dataset/folders.py``; no code taken)
and their counts those of the PromptIQA paper's Table 1 (GFIQA-20k 19,988, where the
loader's ``dataset_info.json`` says 19,998 and the GFIQA-20k paper 20,000, so a count
error says which of them a copy matches; AIGCIQA2023 2,400; UWIQA 890).

Deviations, on purpose:

* AGIQA-3k renders each of its 300 prompts with up to 10 generators; the trailing number
  of a name (``AttnGAN_normal_005.jpg``) is the prompt. Rows of one prompt share a
  ``group`` and a ``prompt_group`` (``prompt_005``) so a prompt's images never sit in
  train and test at once (the papers split by image, which leaks prompts). Rows with one
  ``prompt`` text in two groups are refused (in the published ``data.csv`` the 300
  numbers and the 300 texts match one to one). Its image folder is found (``AGIQA-3K/``,
  ``img/``, ``image/``, ``images/`` or the root) unless given.
* AIGCIQA2023 (6 generators x 100 prompts x 4 renders): image ``k`` of
  ``Image/allimg/<k>.png`` (0-based) has label ``k`` of ``MOSz`` (quality);
  ``mosz2.mat`` (authenticity) and ``mosz3.mat`` (correspondence), when beside it, are
  kept as extra columns. Images are grouped by prompt (``prompt_017``, 24 images each),
  not one group per image (the renders of one prompt are near-duplicates in content).
  The prompt of image ``k`` comes from the authors' ``pic-index.xlsx`` (row ``k``:
  generator, ``<prompt>-<render>.png``) when it is in the root, ``DATA/`` or
  ``DATA/MOS/``, else from the index rule that file follows (and public loaders use),
  prompt = (k mod 400) div 4; the manifest's ``# groups:`` line says which. The prompt
  texts of ``AIGCIQA2023_Prompts.xlsx`` (or ``prompts.xlsx``; 100 rows of style, class,
  prompt) are kept as ``prompt``, ``prompt_style`` and ``prompt_class`` when present, and
  prompts of one text share a group. The two files are the ones the authors publish in
  their repository (wangjiarui153/AIGCIQA2023), read here as files, no code taken.
"""

from __future__ import annotations

import re
from dataclasses import replace

from iqadata.content import PROMPT_GROUP
from iqadata.importers._build import Release, check_groups, official_release
from iqadata.importers._common import (
    Located,
    csv_records,
    load_mat,
    parse_float,
    require_columns,
)
from iqadata.importers._paths import DiskIndex, find_file, find_image_dir, join_id
from iqadata.importers._prompts import aigc_prompt_groups
from iqadata.importers.authentic import authentic_row, numbered_rows
from iqadata.manifest import Manifest

AGIQA_FOLDERS = ("AGIQA-3K", "img", "image", "images", "")
AGIQA_EXTRA = ("prompt", "adj1", "adj2", "style", "std_quality", "mos_align", "std_align")
AIGC_EXTRA = {"mosz2.mat": "authenticity", "mosz3.mat": "correspondence"}
_PROMPT_NO = re.compile(r"_(\d+)\.[A-Za-z]+$")


@official_release("gfiqa20k", ["mos.csv"])
def import_gfiqa20k(release: Release, *, image_dir: str = "image") -> Manifest:
    """GFIQA-20k: ``mos.csv`` with ``img_name, mos`` (0..1); 19,988 face images."""
    header, records = csv_records(release.label_path)
    require_columns(header, ("img_name", "mos"), release.label_path)
    located = [
        Located(
            authentic_row(join_id(image_dir, rec["img_name"]), parse_float(rec["mos"], where)),
            where,
        )
        for where, rec in records
    ]
    return release.manifest(located)


def _prompt_group(name: str, prompt: str) -> str:
    match = _PROMPT_NO.search(name)
    return f"prompt_{match.group(1)}" if match else f"prompt {prompt}"


@official_release("agiqa3k", ["data.csv"])
def import_agiqa3k(release: Release, *, image_dir: str | None = None) -> Manifest:
    """AGIQA-3k: ``data.csv``; perceptual quality ``mos_quality`` (0..5); 2,982 images."""
    header, records = csv_records(release.label_path)
    require_columns(header, ("name", "mos_quality"), release.label_path)
    rows = list(records)
    if image_dir is None and rows:
        index = DiskIndex(release.base)
        image_dir = find_image_dir(index, AGIQA_FOLDERS, rows[0][1]["name"], rows[0][0])
    located = []
    for where, rec in rows:
        extra = {k: rec[k] for k in AGIQA_EXTRA if k in rec}
        score = parse_float(rec["mos_quality"], where)
        row = authentic_row(join_id(image_dir or "", rec["name"]), score, **extra)
        group = _prompt_group(rec["name"], rec.get("prompt", ""))
        row = replace(row, group=group, extra={**extra, PROMPT_GROUP: group})
        located.append(Located(row, where))
    manifest = release.manifest(located)
    prompt_text = ("prompt", lambda row: row.extra.get("prompt", "").strip())
    check_groups(manifest.rows, [item.where for item in located], prompt_text)
    return manifest


@official_release("aigciqa2023", ["DATA/MOS/mosz1.mat"])
def import_aigciqa2023(release: Release, *, image_dir: str = "Image/allimg") -> Manifest:
    """AIGCIQA2023: ``DATA/MOS/mosz1.mat`` (``MOSz``, quality, 0..100); 2,400 images."""
    label_path = release.label_path
    scores = load_mat(label_path, "MOSz").reshape(-1)
    beside = {column: find_file(label_path.parent, name) for name, column in AIGC_EXTRA.items()}
    extras = {c: load_mat(f, "MOSz").reshape(-1) for c, f in beside.items() if f is not None}
    prompts = aigc_prompt_groups(release.base, len(scores))
    located = []
    for k, score in enumerate(scores):
        where = f"{label_path}: entry {k + 1}"
        extra = {c: repr(float(v[k])) for c, v in extras.items() if k < len(v)}
        extra |= prompts.extra[k]
        row = authentic_row(join_id(image_dir, f"{k}.png"), parse_float(score, where), **extra)
        located.append(Located(replace(row, group=prompts.groups[k]), where))
    manifest = release.manifest(located)
    return replace(manifest, info=replace(manifest.info, groups=prompts.rule))


@official_release("uwiqa", ["IQA_Value.xlsx"])
def import_uwiqa(
    release: Release, *, image_dir: str = "img", sheet: str | None = None
) -> Manifest:
    """UWIQA: ``IQA_Value.xlsx`` rows ``(number, MOS 0..1)`` after a header -> ``%04d.png``."""
    located = numbered_rows(
        release.label_path, lambda n: join_id(image_dir, f"{n:04d}.png"), sheet
    )
    return release.manifest(located)
