"""The GPU check of the extraction stage: one JSON object, inside a time budget.

Measures, with random-init weights unless checkpoints are given (speed does not depend on
the weights):

* ``sam``: SAM ViT-H/L/B bare-forward images/s at batch 8, 16 and 32 in bf16 (autocast)
  and fp32, with the peak GPU memory of each;
* ``sam_kernels``: ViT-H bf16 at batch 16 with each attention kernel, and with cast bf16
  weights instead of autocast (optionally compiled, ``--compile``);
* ``e2e``: extraction efficiency (``bench_extract``: fill_shards on JPEGs vs the bare
  forward) for ViT-H bf16 at batch 16;
* ``other``: SD 1.5 U-Net (512 px) and MoNet (224 px) bare-forward images/s in bf16;
* ``heads``: seconds per epoch of ``sfem_fr`` on a SAM-shaped LIVE-sized store, fed from
  RAM and from the store (``bench_heads``).

Each item is skipped, with the reason, once ``--budget`` seconds have passed; an error in
one item (out of memory, say) is recorded and the rest go on. Run through ``bench/gpu.sh``.
``--smoke`` runs every item on the CPU with the tests' tiny configurations (a check of the
script itself, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench import bench_extract, bench_heads
from extract.config import ExtractConfig, build_backbone
from extract.forward import autocast

START = time.perf_counter()
SETUP: dict[str, Any] = {"device": "cuda", "arch": {}}  # --smoke: cpu, tiny configurations


def _cuda(name: str) -> Any:
    """``torch.cuda.<name>`` on a CUDA run, a no-op returning 0 on the CPU."""
    return getattr(torch.cuda, name) if SETUP["device"] == "cuda" else lambda *a: 0


def _elapsed() -> float:
    return time.perf_counter() - START


def bare_rate(backbone: Any, batch: int, dtype: str, rounds: int) -> dict[str, Any]:
    """Images/s of ``forward_features`` on one device-resident batch, and peak memory."""
    _cuda("empty_cache")()
    _cuda("reset_peak_memory_stats")()
    h, w = backbone.preprocessing()["input_size"]
    weights = next(backbone.parameters()).dtype
    x = torch.randn(batch, 3, h, w, device=SETUP["device"], dtype=weights)
    with torch.inference_mode(), autocast(torch.device(SETUP["device"]), dtype):
        backbone.forward_features(x)  # warm-up (and compilation)
        _cuda("synchronize")()
        start = time.perf_counter()
        for _ in range(rounds):
            backbone.forward_features(x)
        _cuda("synchronize")()
    seconds = time.perf_counter() - start
    peak = _cuda("max_memory_allocated")() / 2**30
    return {"img_s": batch * rounds / seconds, "peak_gib": peak}


def _build(backbone: str, batch: int = 16, **kw: Any) -> Any:
    """A random-init backbone on the GPU (built on the CPU: some builders draw CPU noise)."""
    arch = tuple(sorted(SETUP["arch"].get(backbone, {}).items()))
    cfg = ExtractConfig(backbone=backbone, random_init=True, arch=arch, device=SETUP["device"],
                        batch_size=batch, **kw)
    return build_backbone(cfg)


def sam_grid(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in ("vit_h", "vit_l", "vit_b"):
        model = _guarded(f"build sam_{variant}", lambda v=variant: _build(f"sam_{v}"), args)
        for dtype in ("bf16", "fp32"):
            for batch in (8, 16, 32):
                key = f"sam_{variant}/{dtype}/b{batch}"
                if isinstance(model, dict):  # the build failed or was skipped
                    out[key] = model
                    continue
                out[key] = _guarded(key, lambda m=model, d=dtype, b=batch: bare_rate(
                    m, b, d, args.rounds), args)
        del model
    return out


def sam_kernels(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    model = _build("sam_vit_h")
    for kernel in ("reference", "sdpa", "sdpa_qk"):
        model.set_attention(kernel)
        out[f"attention={kernel}"] = _guarded(
            kernel, lambda m=model: bare_rate(m, 16, "bf16", args.rounds), args)
    del model
    out["cast_weights"] = _guarded("cast", lambda: bare_rate(
        _build("sam_vit_h", dtype="bf16", cast_weights=True), 16, "bf16", args.rounds), args)
    if args.compile:
        out["compile"] = _guarded("compile", lambda: bare_rate(
            _build("sam_vit_h", compile=True), 16, "bf16", args.rounds), args)
    return out


def e2e(args: argparse.Namespace) -> dict[str, Any]:
    ns = bench_extract.parser().parse_args([
        "--backbone", "sam_vit_h", "--device", SETUP["device"], "--dtype", "bf16",
        "--batch-size", "16", "--images", str(args.e2e_images),
        "--decode-workers", str(args.decode_workers), "--repeats", "2",
    ])
    cfg = bench_extract.config_of(ns)
    cfg = replace(cfg, arch=tuple(sorted(SETUP["arch"].get(cfg.backbone, {}).items())))
    with tempfile.TemporaryDirectory() as tmp:
        return bench_extract.measure(ns, cfg, Path(tmp))


def others(args: argparse.Namespace) -> dict[str, Any]:
    runs = {"sd15_unet/bf16/b8": ("sd15_unet", 8), "monet/bf16/b32": ("monet", 32)}
    return {key: _guarded(key, lambda n=name, b=batch: bare_rate(_build(n, b), b, "bf16",
                                                                  args.rounds), args)
            for key, (name, batch) in runs.items()}


def heads(args: argparse.Namespace) -> dict[str, Any]:
    ns = argparse.Namespace(batch_size=16, device=SETUP["device"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        bench_heads.make_store(root, args.head_rows, 29, (256, 64, 64))
        write_s = time.perf_counter() - t0
        pre, lazy, n = bench_heads.paired_epoch(root, ns)
    return {"rows": n, "store_write_s": write_s, "preloaded_s_per_epoch": pre,
            "store_s_per_epoch": lazy, "loader_efficiency": pre / lazy}


def _guarded(key: str, fn: Callable[[], Any], args: argparse.Namespace) -> Any:
    """``fn()``, or why not: over the time budget, or the error it raised."""
    if _elapsed() > args.budget:
        return {"skipped": f"time budget of {args.budget:.0f} s spent"}
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - one item's failure must not lose the others
        _cuda("empty_cache")()
        return {"error": f"{type(err).__name__}: {err}"[:500],
                "where": traceback.format_exc(limit=2)[-500:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=420.0, help="seconds before items are skipped")
    p.add_argument("--rounds", type=int, default=3, help="timed batches per configuration")
    p.add_argument("--e2e-images", type=int, default=192)
    p.add_argument("--decode-workers", type=int, default=max(2, (os.cpu_count() or 4) - 4))
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    p.add_argument("--only", default="sam,sam_kernels,e2e,others,heads")
    p.add_argument("--head-rows", type=int, default=779)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny configs: check the script")
    args = p.parse_args()
    if args.smoke:
        from tests.test_backbones import TINY

        SETUP.update(device="cpu", arch=TINY)
        args.rounds, args.e2e_images, args.head_rows = 1, 4, 20
    elif not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device visible (--smoke checks the script on a CPU)")
    name = torch.cuda.get_device_name() if SETUP["device"] == "cuda" else "cpu (smoke)"
    result: dict[str, Any] = {
        "device": name, "torch": torch.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "budget_s": args.budget,
    }
    items = {"sam": sam_grid, "sam_kernels": sam_kernels, "e2e": e2e, "others": others,
             "heads": heads}
    for name in args.only.split(","):
        result[name] = _guarded(name, lambda fn=items[name]: fn(args), args)
    result["elapsed_s"] = _elapsed()
    text = json.dumps(result, indent=1)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu.json").write_text(text)


if __name__ == "__main__":
    main()
