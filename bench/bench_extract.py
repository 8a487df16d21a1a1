"""Extraction efficiency: end-to-end ``run_extract`` vs a bare forward on preloaded tensors.

efficiency = (images/s of decode + preprocess + forward + store write)
           / (images/s of the forward alone over tensors already in memory),
same backbone, batch size, dtype and device, measured in one run. Goal: >= 0.9.

    python bench/bench_extract.py --backbone nss --images 64
    python bench/bench_extract.py --backbone sam_vit_b --images 8 --dtype bf16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from cache.manifest import DatasetInfo, Manifest, ManifestRow, write_manifest
from extract.loader import prepare_image
from extract.run import ExtractConfig, build_backbone, run_extract
from extract.shards import autocast

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def make_dataset(root: Path, n: int, size: tuple[int, int]) -> Path:
    """Write ``n`` JPEGs (crops of scikit-image photos) and a manifest; return its path."""
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        photo = getattr(skdata, PHOTOS[i % len(PHOTOS)])()
        img = Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC)
        name = f"img{i:04d}.jpg"
        img.save(root / name, quality=90)
        rows.append(ManifestRow(image=name, score=float(rng.uniform(1, 5)), group=name))
    path = root / "manifest.csv"
    write_manifest(Manifest(DatasetInfo(name="bench", score_range=(1, 5)), tuple(rows)), path)
    return path


def bare_forward(cfg: ExtractConfig, manifest: Path, n: int) -> float:
    """Seconds for the forward pass alone over preprocessed tensors held in memory."""
    backbone = build_backbone(cfg)
    root = manifest.parent
    tensors = [
        prepare_image(root / f"img{i:04d}.jpg", ("identity",), backbone.preprocess)[0].tensor
        for i in range(n)
    ]
    device = torch.device(cfg.device)
    with torch.inference_mode(), autocast(device, cfg.dtype):
        backbone.forward_features(torch.stack(tensors[: cfg.batch_size]).to(device))  # warm-up
        start = time.perf_counter()
        for s in range(0, n, cfg.batch_size):
            out = backbone.forward_features(torch.stack(tensors[s : s + cfg.batch_size]).to(device))
            for v in out.values():
                v.float().cpu().numpy()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="nss")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="512x384", help="image WxH")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cfg = ExtractConfig(
        backbone=args.backbone, random_init=True, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, shard_size=max(args.batch_size, 16),
    )
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_dataset(Path(tmp), args.images, (w, h))
        bare = bare_forward(cfg, manifest, args.images)
        # warm-up run so both sides start with a built model and warm caches
        run_extract(cfg, manifest, out=str(Path(tmp) / "warm.zarr"), progress=False)
        start = time.perf_counter()
        run_extract(cfg, manifest, out=str(Path(tmp) / "f.zarr"), progress=False)
        e2e = time.perf_counter() - start
    n = args.images
    print(f"backbone={args.backbone} images={n} batch={args.batch_size} dtype={args.dtype} "
          f"device={args.device} threads={torch.get_num_threads()}")
    print(f"bare forward : {n / bare:8.2f} img/s ({bare:.2f} s)")
    print(f"end to end   : {n / e2e:8.2f} img/s ({e2e:.2f} s, incl. model build)")
    print(f"efficiency   : {bare / e2e:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
