"""``iqa-data audit``: exact and near-duplicate content within and across datasets.

A thin click layer over :func:`iqadata.audit.audit`; the file it writes is read by
``iqa-train-head --exclude-overlap`` and ``iqa-test-head`` (:mod:`iqadata.overlap`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from cache.console import Command, UsageProblem, count_option, out_option
from cache.outputs import atomic_write_text, check_output_file
from iqadata.audit import MAX_DISTANCE, AuditConfig, audit
from iqadata.manifest import read_manifest, read_split, split_files
from iqadata.overlap import is_audit


def _splits(paths: tuple[Path, ...], manifests: list[Any]) -> list[list[tuple[str, Any]]]:
    if not paths:
        return []
    if len(paths) != len(manifests):
        raise UsageProblem(f"give one --splits per manifest ({len(manifests)}), or none")
    out = []
    for path, manifest in zip(paths, manifests, strict=True):
        named = []
        for file in split_files(path):
            split = read_split(file)
            split.check_against(manifest, where=str(file))
            named.append((str(file), split))
        out.append(named)
    return out


def _summary(result: dict[str, Any], out: Path) -> str:
    s = result["summary"]
    n_images = sum(d["images"] for d in result["datasets"])
    n_refs = sum(d["references"] for d in result["datasets"])
    line = (
        f"audited {len(result['datasets'])} manifest(s), {n_images} images and {n_refs}"
        f" references: {s['exact']} exact and {s['near']} near-duplicate pair(s),"
        f" {s['within']} within a dataset and {s['across']} across datasets;"
        f" {s['excluded']} image(s) to exclude; wrote {out}"
    )
    if s["unreadable"]:
        line += f"\nwarning: {s['unreadable']} file(s) could not be read (listed in {out})"
    return line


@click.command("audit", cls=Command)
@click.argument(
    "manifests",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@out_option("Audit JSON to write (new, or an earlier audit).", folder=False)
@click.option(
    "--splits",
    "split_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Split file or folder, one per manifest in order: name the splits that put a"
    " within-dataset pair in two parts.",
)
@click.option(
    "--max-distance",
    default=MAX_DISTANCE,
    show_default=True,
    type=click.IntRange(0, 32),
    help="Largest Hamming distance of two 64-bit perceptual hashes that counts as near.",
)
@click.option(
    "--exact-only",
    is_flag=True,
    help="Only byte-identical files (no image is read when the manifests hold their hashes).",
)
@count_option(
    "--workers",
    default=min(4, os.cpu_count() or 1),
    minimum=1,
    help="Threads reading and hashing images.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the audit as JSON too.")
def audit_cmd(
    manifests: tuple[Path, ...],
    out: Path,
    split_paths: tuple[Path, ...],
    max_distance: int,
    exact_only: bool,
    workers: int,
    as_json: bool,
) -> None:
    """Find images that share content within MANIFEST's splits or across the MANIFESTs.

    Exact duplicates by sha256, near duplicates (resized, re-encoded) by a perceptual
    hash. Pairs of one dataset's content group (a reference and its distortions) are not
    reported. Pass the file to iqa-train-head --exclude-overlap and iqa-test-head.
    """
    if len(set(manifests)) != len(manifests):
        raise UsageProblem("a manifest is given twice")
    check_output_file(out, is_audit, "content audit")
    read = [read_manifest(m) for m in manifests]
    if len({m.sha256() for m in read}) != len(read):
        raise UsageProblem("two of the manifests have the same content (one file copied)")
    cfg = AuditConfig(max_distance, not exact_only, workers)
    result = audit(read, _splits(split_paths, read), cfg)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=1))
    click.echo(_summary(result, out), err=as_json)
