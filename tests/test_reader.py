"""Training read path: lazy fork-safe datasets, preloading, and the lock-step pair reader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cache.create import create_store
from cache.layout import StoreLayout
from cache.store import ArraySpec, IncompleteStoreError
from heads.store_reader import FeatureDataset, PairedFeatureDataset, check_fits

IDS = ["ref0.png", "ref1.png", "d00.png", "d01.png", "d10.png", "d11.png", "d12.png"]
REF_OF = {"d00.png": "ref0.png", "d01.png": "ref0.png", "d10.png": "ref1.png",
          "d11.png": "ref1.png", "d12.png": "ref1.png"}
ARRAYS = [ArraySpec("embed", (2, 3, 3)), ArraySpec("feature", (4,))]


def make_store(url: str, ids=IDS, skip_shards=(), views=("identity", "flip")) -> None:
    fields = {"backbone": "toy"}
    s = create_store(url, StoreLayout(ARRAYS, ids, views, 2), fingerprint_fields=fields)
    for k in range(s.n_shards):
        if k in skip_shards:
            continue
        rows = np.array(s.shard_rows(k))
        feats = {
            a.name: np.broadcast_to(rows.reshape(-1, *[1] * len(a.shape)), (len(rows), *a.shape))
            for a in ARRAYS
        }  # each row's features equal its row number
        sizes = np.stack([rows, rows + 1], axis=1)
        s.writer.write_shard(k, feats, sizes, sizes)
    s.close()


@pytest.fixture(params=["zarr", "hdf5"])
def url(request, tmp_path) -> str:
    url = str(tmp_path / ("f.zarr" if request.param == "zarr" else "f.h5"))
    make_store(url)
    return url


def test_dataloader_with_two_workers(url):
    ds = FeatureDataset(url)
    ds[0]  # the parent opens the store first: workers must still open their own
    pickle.dumps(ds)  # no open handles travel to workers
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    rows = []
    for batch in loader:
        emb = batch["features"]["embed"]
        assert emb.dtype == torch.float32 and emb.shape[1:] == (2, 3, 3)
        assert torch.equal(emb[:, 0, 0, 0], batch["row"].float())
        assert torch.equal(batch["valid_size"][:, 1], batch["row"] + 1)
        rows += batch["row"].tolist()
    assert rows == list(range(14))


def test_unwritten_rows_refused_or_dropped(tmp_path):
    url = str(tmp_path / "part.zarr")
    make_store(url, skip_shards=(1,))
    with pytest.raises(IncompleteStoreError, match="4 of 14 selected rows are not written"):
        FeatureDataset(url)
    ds = FeatureDataset(url, written_only=True)
    assert len(ds) == 10 and 4 not in ds.rows


def test_preload_matches_lazy(url):
    lazy, ram = FeatureDataset(url, rows=[5, 1, 12]), FeatureDataset(url, rows=[5, 1, 12],
                                                                     preload=True)
    assert ram._src.ram is not None and ram._src.ram["embed"].dtype == np.float16
    for i in range(3):
        a, b = lazy[i], ram[i]
        assert a["row"] == b["row"]
        assert torch.equal(a["features"]["feature"], b["features"]["feature"])
        assert b["features"]["feature"].dtype == torch.float32


def test_preload_refuses_what_does_not_fit():
    with pytest.raises(MemoryError, match="needs 1.00 GiB but only 0.50 GiB"):
        check_fits(2**30, "the store", available=2**29)


@pytest.mark.parametrize("separate", [False, True])
def test_pairs_follow_reference_ids(tmp_path, separate):
    url = str(tmp_path / "dist.zarr")
    make_store(url)
    ref_url, ref_ids = url, IDS
    if separate:
        ref_url, ref_ids = str(tmp_path / "refs.h5"), ["ref1.png", "ref0.png"]
        make_store(ref_url, ids=ref_ids)
    rows = [4, 5, 9]  # d00 identity, d00 flip, d10 flip
    ds = PairedFeatureDataset(url, ref_url, REF_OF, rows=rows, preload=separate)
    want = [2 * ref_ids.index(REF_OF[IDS[r // 2]]) + r % 2 for r in rows]
    assert ds.ref_rows.tolist() == want
    item = ds[1]
    assert item["row"] == 5 and item["ref_row"] == 2 * ref_ids.index("ref0.png") + 1
    assert item["ref_features"]["embed"][0, 0, 0] == item["ref_row"]
    assert item["features"]["embed"][0, 0, 0] == 5
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    assert batch["ref_row"].tolist() == want
    assert torch.equal(batch["ref_valid_size"][:, 0], torch.tensor(want))


def test_pairs_need_a_reference(tmp_path):
    url = str(tmp_path / "dist.zarr")
    make_store(url)
    with pytest.raises(KeyError, match="image 'ref0.png' has no reference"):
        PairedFeatureDataset(url, url, REF_OF)


def test_pairs_refuse_unwritten_references(tmp_path):
    url, ref_url = str(tmp_path / "d.zarr"), str(tmp_path / "r.zarr")
    make_store(url)
    make_store(ref_url, ids=["ref0.png", "ref1.png", "x.png"], skip_shards=(0,))
    rows = [4, 5, 8]
    with pytest.raises(IncompleteStoreError, match="3 reference rows are not written"):
        PairedFeatureDataset(url, ref_url, REF_OF, rows=rows)
    assert len(PairedFeatureDataset(url, ref_url, REF_OF, rows=rows, written_only=True)) == 0
