"""fill_shards: progress per row, reuse of known rows, bounded prefetch, kernel fingerprints."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import extract.loader as loader
from cache.manifest import read_manifest
from cache.store import open_store
from extract.run import ExtractConfig, build_backbone, fingerprint_fields, open_output, run_extract
from extract.shards import fill_shards
from tests.test_extract_run import make_dataset

NSS = {"size": 32, "grid": 8}


def _cfg(**kw: object) -> ExtractConfig:
    base: dict = dict(backbone="nss", random_init=True, batch_size=2, shard_size=3,
                      arch=tuple(NSS.items()))  # fmt: skip
    base.update(kw)
    return ExtractConfig(**base)


def _fresh(tmp_path: Path, name: str, n: int = 7, **kw: object) -> tuple:
    manifest_path = make_dataset(tmp_path, n=n, corrupt=True)
    cfg = _cfg(**kw)
    backbone = build_backbone(cfg)
    manifest = read_manifest(manifest_path)
    store = open_output(cfg, backbone, manifest, str(tmp_path / name), resume=False)
    return cfg, backbone, manifest, store


def _all(store: object) -> dict[str, np.ndarray]:
    return store.read(range(store.n_rows), allow_unwritten=True, dtype=None)  # type: ignore[attr-defined]


def test_on_rows_reports_rows_as_batches_finish(tmp_path: Path, one_thread: None) -> None:
    cfg, backbone, manifest, store = _fresh(tmp_path, "p.zarr")
    rows, shards = [], []
    stats = fill_shards(store, backbone, manifest, store.missing_shards(), batch_size=2,
                        dtype="fp32", on_rows=rows.append,
                        on_shard=lambda k, n: shards.append((k, n)))  # fmt: skip
    assert sum(rows) == store.n_rows == stats.rows == sum(n for _, n in shards)
    assert len(rows) > len(shards) and max(rows) <= 2  # per batch, not per shard
    assert [k for k, _ in shards] == list(range(store.n_shards))


def test_reused_rows_are_neither_decoded_nor_computed(
    tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, backbone, manifest, full = _fresh(tmp_path, "full.zarr")
    fill_shards(full, backbone, manifest, full.missing_shards(), batch_size=2, dtype="fp32")
    want = _all(full)
    shape = backbone.outputs["nss"]
    known = {  # shard 1: its first image (row 0) and third (row 2), with marked values
        0: ({"nss": np.full(shape, 7.0, np.float16)}, (8, 8), (72, 96)),
        2: ({"nss": np.full(shape, -3.0, np.float16)}, (8, 8), (72, 96)),
    }
    asked: list[int] = []

    def reuse(k: int) -> dict | None:
        asked.append(k)
        return known if k == 1 else None

    decoded: list[str] = []
    real = loader.load_image
    monkeypatch.setattr(loader, "load_image", lambda p, **kw: decoded.append(Path(p).name)
                        or real(p, **kw))  # fmt: skip
    store = open_output(cfg, backbone, manifest, str(tmp_path / "reuse.zarr"), resume=False)
    stats = fill_shards(store, backbone, manifest, store.missing_shards(), batch_size=2,
                        dtype="fp32", reuse=reuse)  # fmt: skip
    assert asked == list(range(store.n_shards)) and stats.reused_rows == 2
    ids = store.image_ids
    assert ids[3] not in decoded and ids[5] not in decoded and ids[4] in decoded
    got = _all(store)
    assert np.all(got["nss"][3] == 7.0) and np.all(got["nss"][5] == -3.0)
    others = [r for r in range(store.n_rows) if r not in (3, 5)]
    assert got["nss"][others].tobytes() == want["nss"][others].tobytes()
    assert store.verify().ok and not store.missing_shards()
    assert tuple(store.orig_size([3])[0]) == (72, 96)


def test_prefetch_bounds_images_decoded_ahead(
    tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, backbone, manifest, store = _fresh(tmp_path, "m.zarr", n=9)
    lock, state = threading.Lock(), {"ahead": 0, "peak": 0}
    real_prepare, real_forward = backbone.prepare, backbone.forward_features

    def prepare(image: np.ndarray) -> tuple:
        with lock:
            state["ahead"] += 1
            state["peak"] = max(state["peak"], state["ahead"])
        return real_prepare(image)

    def forward(x: torch.Tensor) -> dict:
        with lock:
            state["ahead"] -= len(x)
        return real_forward(x)

    monkeypatch.setattr(backbone, "prepare", prepare)
    monkeypatch.setattr(backbone, "forward_features", forward)
    fill_shards(store, backbone, manifest, store.missing_shards(), batch_size=2, dtype="fp32",
                decode_workers=2, prefetch=3)  # fmt: skip
    # at most `prefetch` jobs in flight, plus one batch collecting and one in the runner
    assert 0 < state["peak"] <= 3 + 2 * 2, state


def test_kernels_enter_the_fingerprint_only_when_they_change_bits() -> None:
    tiny = (("depth", 2), ("embed_dim", 32), ("global_attn_indexes", (1,)), ("img_size", 64),
            ("num_heads", 2), ("window_size", 2))  # fmt: skip
    fields = {}
    for attention in ("reference", "sdpa", "sdpa_qk"):
        cfg = ExtractConfig(backbone="sam_vit_b", random_init=True, arch=tiny, attention=attention)
        fields[attention] = fingerprint_fields(build_backbone(cfg), cfg)
    assert "kernels" not in fields["reference"]  # stores made before the option: unchanged
    assert fields["sdpa"]["kernels"] == {"attention": "sdpa"}
    assert fields["sdpa_qk"]["kernels"] == {"attention": "sdpa_qk"}
    nss = _cfg()
    assert "kernels" not in fingerprint_fields(build_backbone(nss), nss)
    cast = _cfg(dtype="bf16", cast_weights=True)
    assert fingerprint_fields(build_backbone(cast), cast)["kernels"] == {"cast_weights": True}


def test_unknown_attention_kernel_is_one_clear_error(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=1)
    cfg = ExtractConfig(backbone="sam_vit_b", random_init=True, attention="flash",
                        arch=(("depth", 1), ("embed_dim", 32), ("img_size", 32),
                              ("num_heads", 2), ("window_size", 2)))  # fmt: skip
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        run_extract(cfg, manifest, out=str(tmp_path / "x.zarr"), progress=False)


def test_partial_fill_then_resume_is_bit_identical_to_one_run(
    tmp_path: Path, one_thread: None
) -> None:
    cfg, backbone, manifest, a = _fresh(tmp_path, "a.zarr")
    fill_shards(a, backbone, manifest, [0, 2], batch_size=2, dtype="fp32")
    b = open_store(str(tmp_path / "a.zarr"), "a")
    fill_shards(b, backbone, manifest, b.missing_shards(), batch_size=2, dtype="fp32")
    c = open_output(cfg, backbone, manifest, str(tmp_path / "c.zarr"), resume=False)
    fill_shards(c, backbone, manifest, c.missing_shards(), batch_size=2, dtype="fp32")
    assert _all(b)["nss"].tobytes() == _all(c)["nss"].tobytes()


@pytest.mark.slow
def test_distributed_reports_rows_and_reuses_like_one_process(
    tmp_path: Path, one_thread: None
) -> None:
    from extract.distributed import fill_distributed

    cfg, backbone, manifest, one = _fresh(tmp_path, "one.zarr")
    known = {1: ({"nss": np.full(backbone.outputs["nss"], 2.0, np.float16)}, (8, 8), (72, 96))}
    fill_shards(one, backbone, manifest, one.missing_shards(), batch_size=2, dtype="fp32",
                reuse=lambda k: known if k == 2 else None)  # fmt: skip
    two = open_output(cfg, backbone, manifest, str(tmp_path / "two.zarr"), resume=False)
    rows: list[int] = []
    stats = fill_distributed(cfg, manifest, two, two.missing_shards(), workers=2,
                             on_rows=rows.append, reuse=lambda k: known if k == 2 else None)
    assert sum(rows) == two.n_rows == stats.rows and stats.reused_rows == 1
    assert len(rows) > 1  # per batch, as worker events (a late event is topped up at the end)
    assert _all(one)["nss"].tobytes() == _all(two)["nss"].tobytes()


@pytest.mark.slow
def test_gpu_cluster_gives_each_worker_its_own_device() -> None:
    import os

    from dask.distributed import Client

    from extract.distributed import gpu_cluster

    with gpu_cluster(["3", "5"], workers=3) as cluster, Client(cluster) as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        threads = client.nthreads()
    assert sorted(seen.values()) == ["3", "3", "5"]  # round robin, one GPU per worker
    assert set(threads.values()) == {1}
    with pytest.raises(ValueError, match="no GPU visible"):
        gpu_cluster([])


def test_random_init_backbones_are_the_same_in_every_build() -> None:
    cfg = ExtractConfig(backbone="sam_vit_b", random_init=True,
                        arch=(("depth", 1), ("embed_dim", 32), ("img_size", 32),
                              ("num_heads", 2), ("window_size", 2)))  # fmt: skip
    state = torch.get_rng_state()
    a, b = build_backbone(cfg).state_dict(), build_backbone(cfg).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert all(torch.equal(a[k], b[k]) for k in a)  # workers of a cluster agree
