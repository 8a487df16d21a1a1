"""``iqa-cache``: list, inspect, verify, copy and clean feature stores and cache roots."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cache.console import Group
from cache.root import STORE_SUFFIXES, CacheRoot, store_info
from cache.store import open_store
from cache.transfer import copy_store

ROOT_ENV = "IQA_CACHE_ROOT"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _emit(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=1, sort_keys=True) if as_json else text)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(cls=Group)
def main() -> None:
    """Inspect and manage feature stores (the output of iqa-extract) and shared cache roots.

    A store holds the cached backbone features of one dataset (Zarr directory, HDF5 file,
    or an s3:// / memory:// URL). A cache root is a folder or URL holding stores as
    <root>/<dataset>/<backbone>-<fingerprint>-<rows>.zarr, shared by a team. ROOT defaults to
    $IQA_CACHE_ROOT. ls, info, verify, du and gc take --json for machine-readable output.

    \b
    Examples:
      iqa-cache ls /shared/iqa                  what is cached and how complete
      iqa-cache info feats.zarr                 one store's layout and provenance
      iqa-cache verify feats.zarr               recompute checksums (exit 1 if bad)
      iqa-cache verify feats.zarr --reset-corrupt   then 'iqa-extract --resume' redoes them
      iqa-cache du /shared/iqa                  disk use per dataset
      iqa-cache export feats.zarr --to f.h5     one file to hand around
      iqa-cache import f.h5 --to /shared/iqa    file a received store in the root
      iqa-cache gc /shared/iqa [--yes]          drop incomplete stores (dry run first)
    """


def _root(root: str | None) -> CacheRoot:
    root = root or os.environ.get(ROOT_ENV)
    if not root:
        raise click.UsageError(f"give ROOT or set ${ROOT_ENV}")
    return CacheRoot(root)


@main.command("ls")
@click.argument("root", required=False)
@json_option
def ls_cmd(root: str | None, as_json: bool) -> None:
    """List the stores under ROOT: dataset, backbone, rows written, size, fingerprint."""
    infos = _root(root).list_stores()
    rows = [
        (i.dataset, i.backbone, f"{i.rows_written}/{i.rows_total}", _human(i.stored_bytes),
         i.fingerprint[:16], "yes" if i.complete else "NO", i.url)
        for i in infos
    ]
    header = ("dataset", "backbone", "rows", "size", "fingerprint", "complete", "store")
    _emit(as_json, [i.to_json() for i in infos], _table(header, rows) if rows else "no stores")


@main.command("info")
@click.argument("store")
@json_option
def info_cmd(store: str, as_json: bool) -> None:
    """Show one STORE: arrays, rows, shards, failures, fingerprint and provenance."""
    with open_store(store) as s:
        info = store_info(s)
        data = {**info.to_json(), "views": list(s.views), "shard_size": s.shard_size,
                "codec": s.meta.get("codec"), "keepbits": s.keepbits, "failures": s.failures,
                "fingerprint_fields": s.fingerprint_fields, "provenance": s.provenance}
    lines = [
        f"store        {info.url} ({info.backend})",
        f"dataset      {info.dataset or '-'}   backbone {info.backbone or '-'}",
        f"fingerprint  {info.fingerprint}",
        f"rows         {info.rows_written}/{info.rows_total} written, {info.failed} failed",
        f"shards       {info.shards_committed}/{info.shards_total} committed "
        f"({data['shard_size']} images each), codec {data['codec']}, keepbits {data['keepbits']}",
        f"size         {_human(info.stored_bytes)} in {info.files} files",
        "arrays       " + ", ".join(f"{n} {tuple(s)} {d}" for n, (s, d) in info.arrays.items()),
    ]
    _emit(as_json, data, "\n".join(lines))


@main.command("verify")
@click.argument("store")
@click.option("--reset-corrupt", is_flag=True,
              help="Mark corrupt shards as not written, so 'iqa-extract --resume' recomputes "
                   "them (their bytes are left in place until then).")
@json_option
def verify_cmd(store: str, reset_corrupt: bool, as_json: bool) -> None:
    """Recompute STORE's shard checksums; exit 1 when a shard is corrupt or missing."""
    with open_store(store, "a" if reset_corrupt else "r") as s:
        report = s.verify()
        if reset_corrupt and report.corrupt_shards:
            s.uncommit(sorted(report.corrupt_shards))
    data = {"ok": report.ok, "url": report.url, "n_shards": report.n_shards,
            "missing_shards": report.missing_shards, "missing_rows": report.missing_rows,
            "failed_rows": report.failed_rows,
            "corrupt_shards": {str(k): v for k, v in report.corrupt_shards.items()}}
    text = report.summary() + "".join(
        f"\n  shard {k}: {'; '.join(v)}" for k, v in report.corrupt_shards.items()
    )
    if reset_corrupt and report.corrupt_shards:
        text += (f"\n{len(report.corrupt_shards)} corrupt shard(s) reset: run 'iqa-extract ... "
                 "--resume' to compute them again")
    _emit(as_json, data, text)
    if not report.ok:
        sys.exit(1)


@main.command("du")
@click.argument("root", required=False)
@json_option
def du_cmd(root: str | None, as_json: bool) -> None:
    """Disk use of ROOT per dataset folder, and the total."""
    usage = _root(root).du()
    rows = [(d, _human(n)) for d, n in usage.items()] + [("total", _human(sum(usage.values())))]
    _emit(as_json, usage, _table(("dataset", "size"), rows))


@main.command("export")
@click.argument("store")
@click.option("--to", "dest", required=True, help="Destination, e.g. feats.h5 or out.zarr.")
@click.option("--codec", default=None, help="Lossless codec of the copy (default: the source's).")
def export_cmd(store: str, dest: str, codec: str | None) -> None:
    """Copy STORE to another backend (e.g. one HDF5 file to hand around), then verify it.

    The destination must be new, an empty folder, or an earlier copy of the same store
    (then only its missing shards are copied); nothing else is overwritten.
    """
    with copy_store(store, dest, codec=codec) as out:
        click.echo(f"exported {store} -> {out.url}: {out.verify().summary()}")


@main.command("import")
@click.argument("file")
@click.option("--to", "dest", required=True,
              help="A store URL (ending .zarr/.h5), or a cache root to file it in.")
def import_cmd(file: str, dest: str) -> None:
    """Copy the store FILE into a store or a cache root (filed by dataset + fingerprint)."""
    if not dest.rstrip("/").endswith(STORE_SUFFIXES):
        with open_store(file) as src:
            dataset = str(src.provenance.get("dataset") or Path(file).stem)
            backbone = src.backbone or "features"
            dest = CacheRoot(dest).path_for(dataset, backbone, src.fingerprint, src.image_ids,
                                            src.views)
    with copy_store(file, dest) as out:
        click.echo(f"imported {file} -> {out.url}: {out.verify().summary()}")



@main.command("gc")
@click.argument("root", required=False)
@click.option("--referenced", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="File naming the stores in use (dvc.lock, metrics.json...); repeatable. "
              "With it, stores named in none of these files are removed too.")
@click.option("--min-age", default=24.0, show_default=True,
              help="Only touch stores unmodified for this many hours.")
@click.option("--yes", is_flag=True, help="Delete for real (default: dry run).")
@json_option
def gc_cmd(
    root: str | None, referenced: tuple[str, ...], min_age: float, yes: bool, as_json: bool
) -> None:
    """Remove incomplete (and, with --referenced, unreferenced) stores under ROOT.

    A dry run unless --yes: it prints what it would delete.
    """
    cache_root = _root(root)
    text = "\n".join(Path(p).read_text(errors="replace") for p in referenced) or None
    plan = cache_root.gc_plan(text, min_age_hours=min_age)
    for url, _ in plan if yes else []:
        cache_root.remove(url)
    verb = "removed" if yes else "would remove"
    lines = [f"{verb} {url}: {why}" for url, why in plan] or ["nothing to remove"]
    _emit(as_json, {"removed" if yes else "would_remove": dict(plan)}, "\n".join(lines))


if __name__ == "__main__":
    main()
