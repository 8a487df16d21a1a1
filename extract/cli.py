"""``iqa-extract``: run a frozen backbone once over a dataset into a feature store.

A thin click layer over :func:`extract.run.run_extract`; torch and the backbones are
imported inside the command, so ``--help`` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cache.console import Command, UsageProblem, parse_assignments
from extract.registry import BACKBONES

if TYPE_CHECKING:
    from extract.run import ExtractResult

ROOT_ENV = "IQA_CACHE_ROOT"


def _from_params(opts: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Checkpoint and architecture overrides of ``--backbone`` from ``--params``."""
    if not opts["params_file"]:
        return None, {}
    import yaml

    with open(opts["params_file"], encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    name = opts["backbone"]
    path = (params.get("checkpoints") or {}).get(name) or None
    if path is not None and not Path(path).exists():
        raise click.BadParameter(
            f"checkpoint {path!r} for {name} (from {opts['params_file']}) does not exist",
            param_hint="--params",
        )
    arch = (params.get("arch") or {}).get(name) or {}
    if not isinstance(arch, dict):
        raise click.BadParameter(f"arch.{name} must be a mapping", param_hint="--params")
    return path, arch


def _views(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command(cls=Command)
@click.option("--backbone", required=True, type=click.Choice(sorted(BACKBONES)),
              help="Frozen backbone to run.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=True),
              help="Local weights: SAM .pth, SD 1.5 diffusers folder, PromptIQA checkpoint. "
                   "Never downloaded. Not needed for the weight-free nss backbones.")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file (e.g. params.yaml) with per-backbone mappings 'checkpoints' "
                   "(an empty entry means none) and 'arch' (overrides); the explicit "
                   "--checkpoint and --arch options win.")
@click.option("--random-init", is_flag=True,
              help="Random weights (tests and benchmarks only; recorded in the fingerprint).")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Dataset manifest CSV (see 'iqa-data import').")
@click.option("--out", help="Store to write: a .zarr folder, an fsspec URL or a .h5 file "
              "(new, an empty folder, or a store to --resume; nothing else is overwritten).")
@click.option("--cache-root", help=f"Shared cache root (default ${ROOT_ENV} when --out is not "
              "given): reuse the store of the same fingerprint and images if it is there, copy "
              "rows other stores of the dataset hold, compute the rest. With --out too, the "
              "store is built at --out and also filed in the root.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda:0.")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default="fp32",
              show_default=True, help="Compute dtype (autocast). Use bf16/fp16 on GPUs; on a CPU "
              "bf16 speed depends on the torch build and the processor: measure first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--views", default="identity", show_default=True,
              help="Comma-separated pixel views stored as extra rows: identity,hflip,vflip.")
@click.option("--which", type=click.Choice(["all", "images", "refs"]), default="all",
              show_default=True, help="Rows: distorted images and their references, or one.")
@click.option("--storage-dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True)
@click.option("--shard-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per shard file (the unit of writing and of distributed work).")
@click.option("--codec", default="default", show_default=True, help="Store codec name.")
@click.option("--keepbits", type=click.IntRange(min=1), default=None,
              help="Lossy: keep this many mantissa bits (float16: 1-9); recorded in the "
                   "fingerprint. Default: lossless.")
@click.option("--arch", multiple=True, metavar="KEY=VALUE",
              help="Architecture override (e.g. tiny test configs); repeatable.")
@click.option("--resume", is_flag=True,
              help="Continue an existing store with the same fingerprint: write only what is "
                   "missing (several processes may fill one Zarr store at once).")
@click.option("--retry-failed", is_flag=True,
              help="Also compute again the images recorded as failed (after fixing them).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Run on a local dask cluster with N worker processes.")
@click.option("--scheduler", help="Run on an existing dask cluster (scheduler address).")
@click.option("--decode-workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads decoding images ahead of the forward pass.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads of the forward on a CPU (0: torch's default, all cores). "
                   "The store is the same bytes with any count. Small backbones (nss) or "
                   "cores shared with other work: 1 (multi-threaded kernels wait on each "
                   "other's descheduled threads).")
@click.option("--attention", default="sdpa", show_default=True,
              type=click.Choice(["sdpa", "sdpa_qk", "reference"]),
              help="SAM attention kernel: sdpa (fused, bias as a mask), sdpa_qk (bias folded "
                   "into q and k: no mask, flash kernels) or reference (segment_anything's). "
                   "Recorded in the fingerprint.")
@click.option("--cast-weights", is_flag=True,
              help="Run in --dtype with cast weights instead of autocast (recorded).")
@click.option("--compile", "compile_forward", is_flag=True,
              help="torch.compile the forward (static batch shape; recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def main(**opts: Any) -> None:
    """Extract frozen-backbone features for every image of a manifest into a store.

    The store is fingerprinted (backbone, weights, preprocessing, dtypes, views): the same
    fingerprint and image id always mean the same features. Images that cannot be decoded
    are recorded in the store's failure list; the run goes on and exits with status 1.
    Ctrl-C finishes the shard in flight; --resume continues later.

    Example: iqa-extract --backbone sam_vit_h --checkpoint sam_vit_h_4b8939.pth
    --manifest kadid.csv --out features/sam_vit_h/kadid10k.zarr --dtype bf16
    """
    from extract.config import ExtractConfig, arch_overrides
    from extract.job import Cluster
    from extract.run import run_extract

    checkpoint, arch = _from_params(opts)
    arch.update(parse_assignments(opts["arch"], "--arch"))
    cache_root = opts["cache_root"] or (None if opts["out"] else os.environ.get(ROOT_ENV))
    if not opts["out"] and not cache_root:
        raise click.UsageError(f"give --out, --cache-root (or ${ROOT_ENV}), or both")
    try:
        cfg = ExtractConfig(
            backbone=opts["backbone"], checkpoint=opts["checkpoint"] or checkpoint,
            random_init=opts["random_init"], arch=arch_overrides(arch),
            device=opts["device"], dtype=opts["dtype"], batch_size=opts["batch_size"],
            views=_views(opts["views"]), storage_dtype=opts["storage_dtype"],
            shard_size=opts["shard_size"], codec=opts["codec"], which=opts["which"],
            decode_workers=opts["decode_workers"], keepbits=opts["keepbits"],
            attention=opts["attention"], cast_weights=opts["cast_weights"],
            compile=opts["compile_forward"],
        )
    except ValueError as err:
        raise UsageProblem(str(err)) from err
    cluster = None
    if opts["workers"] or opts["scheduler"]:
        cluster = Cluster(workers=opts["workers"], scheduler=opts["scheduler"])
    if opts["threads"]:
        import torch

        torch.set_num_threads(opts["threads"])
    result = run_extract(
        cfg,
        opts["manifest"],
        out=opts["out"],
        cache_root=cache_root,
        resume=opts["resume"],
        retry_failed=opts["retry_failed"],
        cluster=cluster,
    )
    _report(result, opts["as_json"])
    if result.interrupted:
        sys.exit(130)
    if result.failures:
        sys.exit(1)


def _report(result: ExtractResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({**vars(result), "failed_rows": result.failed_rows}, indent=1))
        return
    fp = result.fingerprint[:16]
    if result.reused:
        click.echo(f"{result.store}: complete store with fingerprint {fp} found; nothing "
                   f"recomputed ({result.written_rows} of {result.rows} rows written)")
    else:
        copied = f", {result.copied_rows} copied from stores in the cache root" if (
            result.copied_rows) else ""
        click.echo(f"{result.store}: computed {result.computed_rows} rows{copied} in "
                   f"{result.seconds:.1f} s; {result.written_rows} of {result.rows} rows "
                   f"written, {result.failed_rows} failed (fingerprint {fp})")
    if result.interrupted:
        click.echo("stopped early: run again with --resume to finish", err=True)
    if result.failures:
        click.echo(f"{len(result.failures)} image(s) failed and have no features (fix them "
                   "and run again with --retry-failed):", err=True)
        for image, reason in sorted(result.failures.items())[:20]:
            click.echo(f"  {image}: {reason}", err=True)
        if len(result.failures) > 20:
            click.echo(f"  ... and {len(result.failures) - 20} more (iqa-cache info)", err=True)
