"""Split files: a train/val/test partition of a manifest's image ids, as JSON.

``{"train": [...], "val": [...], "test": [...], "seed": 0, "ratios": [...],
"manifest_sha256": "..."}``. A split is only valid with the manifest it was made for:
:meth:`Split.check_against` compares the recorded sha256 with the manifest's, and refuses
a split that puts one reference, prompt group or group in two parts (:mod:`iqadata.content`),
whoever made it. Import these names from :mod:`iqadata.manifest`.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iqadata.content import shared_content, split_parts
from iqadata.manifest_base import ManifestError, atomic_write_text, decode_text

if TYPE_CHECKING:
    from iqadata.manifest import Manifest

PARTS = ("train", "val", "test")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class UncheckedSplitWarning(UserWarning):
    """A split file records no manifest hash, so it cannot be checked against one."""


@dataclass(frozen=True)
class Split:
    """A train/val/test partition of a manifest's image ids.

    Attributes:
        manifest_sha256: sha256 of the manifest file the split was made for ("" if unknown).
        path: the file it was read from (None when built in memory).
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int = 0
    ratios: tuple[float, ...] = (0.6, 0.2, 0.2)
    manifest_sha256: str = ""
    path: Path | None = field(default=None, compare=False)

    def part(self, name: str) -> tuple[str, ...]:
        if name not in PARTS:
            raise ManifestError(f"split part must be one of {PARTS}, got {name!r}")
        return tuple(getattr(self, name))

    def check_against(self, manifest: Manifest, where: str = "split") -> None:
        """Fail unless the split was made for ``manifest``, lists each of its images once
        and keeps each reference, prompt group and group in one part.

        A split without a recorded hash (an old file) is accepted with a warning.

        Raises:
            ManifestError: one line naming the split and the manifest.
        """
        name = str(self.path) if self.path is not None else where
        self._check_hash(manifest, name)
        known = set(manifest.image_ids)
        seen: set[str] = set()
        for part in PARTS:
            for image in self.part(part):
                if image not in known:
                    raise ManifestError(f"{name}: {part} image {image!r} is not in the manifest")
                if image in seen:
                    raise ManifestError(f"{name}: image {image!r} is in two parts")
                seen.add(image)
        leak = shared_content(manifest.rows, split_parts(self))
        if leak:
            raise ManifestError(
                f"{name}: {leak} of the split (a content leak); make the split again with"
                " 'iqa-data split' (re-import the manifest first if its groups split it)"
            )

    def _check_hash(self, manifest: Manifest, name: str) -> None:
        target = (
            str(manifest.path) if manifest.path is not None else f"manifest {manifest.info.name}"
        )
        if not self.manifest_sha256:
            warnings.warn(
                f"{name} records no manifest_sha256, so it cannot be checked against {target};"
                " make it again with 'iqa-data split'",
                UncheckedSplitWarning,
                stacklevel=3,
            )
            return
        actual = manifest.sha256()
        if actual != self.manifest_sha256:
            raise ManifestError(
                f"{name} was made for another manifest (sha256 {self.manifest_sha256[:12]}...) "
                f"than {target} (sha256 {actual[:12]}...); make the split again from this "
                "manifest with 'iqa-data split'"
            )


def write_split(split: Split, path: str | os.PathLike[str]) -> None:
    data = {
        "seed": split.seed,
        "ratios": list(split.ratios),
        "manifest_sha256": split.manifest_sha256,
        **{part: list(split.part(part)) for part in PARTS},
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _line_of(text: str, needles: list[str], start: int = 0) -> int:
    """1-based line of the first of ``needles`` found at or after ``start`` (else 1)."""
    for needle in needles:
        at = text.find(needle, start)
        if at >= 0:
            return text.count("\n", 0, at) + 1
    return 1


def _fail(path: Path, text: str, key: str, problem: str, value: Any = None) -> ManifestError:
    """A ManifestError at the line of ``key`` (or of ``value`` after it)."""
    start = max(text.find(json.dumps(key)), 0)
    needles = [json.dumps(key)]
    if value is not None:
        needles = [json.dumps(value), json.dumps(value, ensure_ascii=False), *needles]
    return ManifestError(f"{path}:{_line_of(text, needles, start)}: {key}: {problem}")


def _ids(data: dict, key: str, text: str, path: Path) -> tuple[str, ...]:
    if key not in data:
        if key == "val":
            return ()
        raise ManifestError(f"{path}:1: not a split file: no {key!r} list")
    value = data[key]
    if not isinstance(value, list):
        raise _fail(path, text, key, "must be a list of image ids")
    for item in value:
        if not isinstance(item, str) or not item:
            raise _fail(path, text, key, f"{item!r} is not an image id", item)
    return tuple(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _meta(data: dict, text: str, path: Path) -> tuple[int, tuple[float, ...], str]:
    seed, ratios = data.get("seed", 0), data.get("ratios", [])
    sha = data.get("manifest_sha256", "")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _fail(path, text, "seed", f"must be an integer, got {seed!r}")
    if not isinstance(ratios, list) or not all(_number(r) for r in ratios):
        raise _fail(path, text, "ratios", f"must be a list of numbers, got {ratios!r}")
    if not isinstance(sha, str) or (sha and not _SHA256.match(sha)):
        raise _fail(path, text, "manifest_sha256", f"must be a sha256 hex digest, got {sha!r}")
    return seed, tuple(float(r) for r in ratios), sha


def split_files(path: str | os.PathLike[str]) -> list[Path]:
    """The split files a path names: the file itself, or a folder's sorted ``*.json`` files.

    Names starting with a dot are not splits (``iqa-data split`` leaves its output marker,
    ``.iqa-output.json``, beside the ``split_NN.json`` files).

    Raises:
        ManifestError: a folder that holds no split file.
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    found = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
    if not found:
        raise ManifestError(f"no split files (*.json) in {path}")
    return found


def read_split(path: str | os.PathLike[str]) -> Split:
    """Read a split file.

    Raises:
        ManifestError: ``<file>:<line>: <problem>`` for a missing, garbled or wrong file.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"split file not found: {path}")
    text = decode_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}:{err.lineno}: not a split file: {err.msg}") from None
    except RecursionError:
        raise ManifestError(f"{path}:1: not a split file: nested too deeply") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}:1: not a split file: expected a JSON object of id lists")
    train, val, test = (_ids(data, part, text, path) for part in PARTS)
    seed, ratios, sha = _meta(data, text, path)
    return Split(train, val, test, seed=seed, ratios=ratios, manifest_sha256=sha, path=path)
