"""fill_shards: progress per row, reuse of donor rows, bounded prefetch, kernel fingerprints."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import extract.loader as loader
from cache.create import create_store
from cache.layout import StoreLayout
from cache.root import RowDonors
from cache.store import FeatureStore, open_store
from extract.config import ExtractConfig, build_backbone, fingerprint_fields
from extract.distributed import fill_distributed, gpu_cluster
from extract.job import Cluster, FillJob
from extract.run import open_output, run_extract
from extract.shards import fill_shards
from iqadata.manifest import read_manifest
from tests.test_extract_run import make_dataset

NSS = {"size": 32, "grid": 8}


def _cfg(**kw: object) -> ExtractConfig:
    base: dict = dict(backbone="nss", random_init=True, batch_size=2, shard_size=3,
                      arch=tuple(NSS.items()))
    base.update(kw)
    return ExtractConfig(**base)


class Rows:
    """A progress that records each count it is given (``extract.job.RowProgress``)."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def update(self, n: int = 1) -> None:
        self.counts.append(n)

    def write(self, text: str) -> None:
        pass


def _fresh(tmp_path: Path, name: str, n: int = 7, **kw: object) -> FillJob:
    manifest_path = make_dataset(tmp_path, n=n, corrupt=True)
    cfg = _cfg(**kw)
    backbone = build_backbone(cfg)
    manifest = read_manifest(manifest_path)
    store = open_output(cfg, backbone, manifest, str(tmp_path / name))
    return FillJob(store, backbone, cfg, manifest, Rows())


def _again(job: FillJob, store: FeatureStore, donors: RowDonors | None = None) -> FillJob:
    """The same settings and backbone on another store (and donors)."""
    return FillJob(store, job.backbone, job.cfg, job.manifest, Rows(), donors=donors)


def _donor(job: FillJob, url: str, ids: list[str]) -> FeatureStore:
    """A store of ``job``'s fingerprint holding ``ids`` (one shard), not filled yet."""
    arrays = list(job.store.arrays.values())
    fields = fingerprint_fields(job.backbone, job.cfg)
    layout = StoreLayout(arrays, ids, job.store.views, len(ids))
    return create_store(url, layout, fingerprint_fields=fields)


def _all(store: FeatureStore) -> dict[str, np.ndarray]:
    return store.read(range(store.n_rows), allow_unwritten=True, dtype=None)


def test_progress_counts_rows_as_batches_finish(tmp_path: Path, one_thread: None) -> None:
    job = _fresh(tmp_path, "p.zarr")
    stats = fill_shards(job, job.store.missing_shards())
    rows = job.progress.counts  # type: ignore[attr-defined]
    assert sum(rows) == job.store.n_rows == stats.rows and stats.shards == job.store.n_shards
    assert len(rows) > stats.shards and max(rows) <= 2  # per batch, not per shard
    assert not job.store.missing_shards()


def test_donor_rows_are_neither_decoded_nor_computed(
    tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _fresh(tmp_path, "full.zarr")
    fill_shards(job, job.store.missing_shards())
    want, ids = _all(job.store), job.store.image_ids
    # a donor store holding images 3 and 5 (shard 1's first and third) with marked values
    donor = _donor(job, str(tmp_path / "donor.zarr"), [ids[3], ids[5]])
    shape = job.backbone.outputs["nss"]
    marked = np.stack([np.full(shape, 7.0, np.float16), np.full(shape, -3.0, np.float16)])
    donor.writer.write_shard(0, {"nss": marked}, np.array([(8, 8)] * 2), np.array([(72, 96)] * 2))
    decoded: list[str] = []
    real = loader.load_image
    monkeypatch.setattr(loader, "load_image", lambda p, **kw: decoded.append(Path(p).name)
                        or real(p, **kw))
    cfg = job.cfg
    store = open_output(cfg, job.backbone, job.manifest, str(tmp_path / "reuse.zarr"))
    donors = RowDonors([donor.url])
    stats = fill_shards(_again(job, store, donors), store.missing_shards())
    assert stats.reused_rows == 2
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
    job = _fresh(tmp_path, "m.zarr", n=9, decode_workers=2)
    backbone = job.backbone
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
    fill_shards(job, job.store.missing_shards(), prefetch=3)
    # at most `prefetch` jobs in flight, plus one batch collecting and one in the runner
    assert 0 < state["peak"] <= 3 + 2 * 2, state


def test_kernels_enter_the_fingerprint_only_when_they_change_bits() -> None:
    tiny = (("depth", 2), ("embed_dim", 32), ("global_attn_indexes", (1,)), ("img_size", 64),
            ("num_heads", 2), ("window_size", 2))
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
                              ("num_heads", 2), ("window_size", 2)))
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        run_extract(cfg, manifest, out=str(tmp_path / "x.zarr"), progress=False)


def test_partial_fill_then_resume_is_bit_identical_to_one_run(
    tmp_path: Path, one_thread: None
) -> None:
    job = _fresh(tmp_path, "a.zarr")
    fill_shards(job, [0, 2])
    b = open_store(str(tmp_path / "a.zarr"), "a")
    fill_shards(_again(job, b), b.missing_shards())
    c = open_output(job.cfg, job.backbone, job.manifest, str(tmp_path / "c.zarr"))
    fill_shards(_again(job, c), c.missing_shards())
    assert _all(b)["nss"].tobytes() == _all(c)["nss"].tobytes()


@pytest.mark.slow
def test_distributed_reports_rows_and_uses_donors_like_one_process(
    tmp_path: Path, one_thread: None
) -> None:
    job = _fresh(tmp_path, "plain.zarr")
    fill_shards(job, job.store.missing_shards())
    donor = _donor(job, str(tmp_path / "donor.zarr"), job.store.image_ids[:4])
    fill_shards(_again(job, donor), [0])  # images 0-3: shard 0 below whole, a row of shard 1
    cfg, backbone, manifest = job.cfg, job.backbone, job.manifest
    one = open_output(cfg, backbone, manifest, str(tmp_path / "one.zarr"))
    here = fill_shards(_again(job, one, RowDonors([donor.url])), one.missing_shards())
    two = open_output(cfg, backbone, manifest, str(tmp_path / "two.zarr"))
    on_dask = _again(job, two, RowDonors([donor.url]))
    stats = fill_distributed(on_dask, two.missing_shards(), Cluster(workers=2))
    rows = on_dask.progress.counts  # type: ignore[attr-defined]
    assert sum(rows) == two.n_rows == stats.rows
    assert here.reused_rows == 4  # every donor row in one process
    assert stats.reused_rows == 3  # on dask: the shard the donor holds whole
    assert len(rows) > 2  # per batch, as worker events (a late event is topped up at the end)
    for store in (one, two):
        assert _all(store)["nss"].tobytes() == _all(job.store)["nss"].tobytes()


@pytest.mark.slow
def test_gpu_cluster_gives_each_worker_its_own_device() -> None:
    import os

    from dask.distributed import Client

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
                              ("num_heads", 2), ("window_size", 2)))
    state = torch.get_rng_state()
    a, b = build_backbone(cfg).state_dict(), build_backbone(cfg).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert all(torch.equal(a[k], b[k]) for k in a)  # workers of a cluster agree
