"""Content audit files: which images share content with other images or other datasets.

``iqa-data audit`` (:mod:`iqadata.audit`) writes one JSON file; training
(``iqa-train-head --exclude-overlap``) and cross-dataset tests (``iqa-test-head``) read it
here, so both stages depend on the format, not on the code that computes it::

    {"kind": "iqa-content-audit", "version": 1,
     "method": {...},                        # how exact and near duplicates were found
     "datasets": [{"name": "live", "manifest": "...", "manifest_sha256": "...", ...}],
     "pairs": [{"kind": "exact" | "near", "distance": 0, "scope": "within" | "across",
                "a": {"dataset": 0, "id": "...", "role": "image" | "reference",
                      "group": "...", "rows": ["<image ids it stands for>"]},
                "b": {...}}],
     "exclude": [{"dataset": "live", "manifest_sha256": "...", "ids": [...]}],
     "summary": {...}}

A pair is two items (an image, or a reference standing for the rows that use it) of
different datasets, or of one dataset but different content groups, whose files are
byte-identical (``exact``) or perceptually close (``near``). ``exclude`` lists, per
manifest (by its sha256), every row an item of a pair stands for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqadata.manifest_base import ManifestError, decode_text, file_sha256

KIND = "iqa-content-audit"
VERSION = 1


@dataclass(frozen=True)
class Side:
    """One item of a pair: its manifest (sha256), id, role and the image ids it stands for."""

    manifest_sha256: str
    dataset: str
    id: str
    role: str
    rows: frozenset[str]


@dataclass(frozen=True)
class Pair:
    kind: str
    distance: int
    a: Side
    b: Side


@dataclass(frozen=True)
class Audit:
    """A content audit as read from its file."""

    path: Path
    sha256: str
    manifests: dict[str, str]  # manifest sha256 -> dataset name
    pairs: tuple[Pair, ...]
    exclude: dict[str, frozenset[str]]  # manifest sha256 -> image ids

    def excluded(self, manifest_sha256: str, manifest: str) -> frozenset[str]:
        """The image ids of a manifest that share content outside their group.

        Raises:
            ManifestError: the manifest was not part of the audit.
        """
        if manifest_sha256 not in self.exclude:
            raise ManifestError(
                f"{self.path} does not cover {manifest} (sha256 {manifest_sha256[:12]}...;"
                f" audited: {', '.join(sorted(self.manifests.values()))}); run 'iqa-data"
                " audit' with this manifest and the others"
            )
        return self.exclude[manifest_sha256]

    def links(
        self, sha_a: str, ids_a: Collection[str], sha_b: str, ids_b: Collection[str]
    ) -> list[tuple[str, Pair]]:
        """(id of ``ids_a``, pair) for every pair joining one of ``ids_a`` (manifest
        ``sha_a``) to one of ``ids_b`` (manifest ``sha_b``)."""
        found = []
        for pair in self.pairs:
            for mine, other in ((pair.a, pair.b), (pair.b, pair.a)):
                if mine.manifest_sha256 != sha_a or other.manifest_sha256 != sha_b:
                    continue
                if other.rows.isdisjoint(ids_b):
                    continue
                found += [(i, pair) for i in sorted(mine.rows.intersection(ids_a))]
        return found


def is_audit(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a content audit file (any version)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def _side(raw: dict[str, Any], datasets: list[dict[str, Any]]) -> Side:
    d = datasets[int(raw["dataset"])]
    return Side(d["manifest_sha256"], d["name"], raw["id"], raw["role"], frozenset(raw["rows"]))


def read_audit(path: str | os.PathLike[str]) -> Audit:
    """Read a content audit written by ``iqa-data audit``.

    Raises:
        ManifestError: a missing file, or one that is not an audit of this version.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"content audit not found: {path}")
    try:
        data = json.loads(decode_text(path))
    except ValueError as err:
        raise ManifestError(f"{path}: not a content audit: {err}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("version") != VERSION:
        raise ManifestError(
            f"{path}: not a content audit (version {VERSION}); write one with 'iqa-data audit'"
        )
    try:
        datasets = list(data["datasets"])
        pairs = tuple(
            Pair(p["kind"], int(p["distance"]), _side(p["a"], datasets), _side(p["b"], datasets))
            for p in data["pairs"]
        )
        exclude = {e["manifest_sha256"]: frozenset(e["ids"]) for e in data["exclude"]}
        manifests = {d["manifest_sha256"]: d["name"] for d in datasets}
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ManifestError(f"{path}: malformed content audit ({err!r})") from None
    return Audit(path, file_sha256(path), manifests, pairs, exclude)
