"""Direct shard writes give the files zarr writes, atomically; HDF5 direct row reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

import cache.backends.zarr as zb
import cache.backends.zarr_direct_write as fw
from cache.backends.zarr_direct_write import ShardFileWriter
from cache.create import create_store
from cache.layout import StoreLayout
from cache.store import ArraySpec, open_store

ROW = (4, 3, 5)


def _array(path: Path, dtype: str, compressors: object = None) -> zarr.Array:
    """10 rows in shards of 4, one row per chunk, as the store's feature arrays."""
    return zarr.create_array(str(path), shape=(10, *ROW), dtype=dtype, chunks=(1, *ROW),
                             shards=(4, *ROW), fill_value=np.nan,
                             compressors=compressors)


def _writer(arr_path: Path) -> ShardFileWriter:
    meta = json.loads((arr_path / "zarr.json").read_text())
    writer = ShardFileWriter.for_array(arr_path, meta)
    assert writer is not None
    return writer


def _data(n: int, dtype: str, nan_rows: tuple[int, ...] = ()) -> np.ndarray:
    data = np.random.default_rng(n).normal(size=(n, *ROW)).astype(dtype)
    data[list(nan_rows)] = np.nan
    return data


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize(
    ("start", "n", "nan_rows"), [(0, 4, ()), (4, 4, (1, 2)), (8, 2, (0,)), (4, 4, (0, 3))]
)
def test_shard_file_is_the_one_zarr_writes(
    tmp_path: Path, dtype: str, start: int, n: int, nan_rows: tuple[int, ...]
) -> None:
    _array(tmp_path / "a", dtype)
    theirs = _array(tmp_path / "b", dtype)
    data = _data(n, dtype, nan_rows)
    data[0, 0, 0, 0] = np.nan if 0 not in nan_rows else data[0, 0, 0, 0]  # NaN, not empty
    _writer(tmp_path / "a").write(start, data)
    theirs[start : start + n] = data
    key = Path("c", str(start // 4), "0", "0", "0")
    assert (tmp_path / "a" / key).read_bytes() == (tmp_path / "b" / key).read_bytes()
    back = zarr.open_array(str(tmp_path / "a"), mode="r")[start : start + n]
    np.testing.assert_array_equal(back, data)  # plain zarr reads it (NaN == NaN here)
    assert not list(tmp_path.rglob("*.partial"))


def test_all_empty_shard_removes_the_file_as_zarr_does(tmp_path: Path) -> None:
    _array(tmp_path / "a", "float16")
    theirs = _array(tmp_path / "b", "float16")
    writer = _writer(tmp_path / "a")
    writer.write(0, _data(4, "float16"))
    theirs[0:4] = _data(4, "float16")
    empty = np.full((4, *ROW), np.nan, dtype=np.float16)
    writer.write(0, empty)
    theirs[0:4] = empty
    assert not writer.shard_path(0).exists() and not (tmp_path / "b/c/0/0/0/0").exists()
    assert np.isnan(zarr.open_array(str(tmp_path / "a"), mode="r")[0:4]).all()


def test_a_failed_write_leaves_the_old_shard_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _array(tmp_path / "a", "float32")
    writer = _writer(tmp_path / "a")
    old = _data(4, "float32")
    writer.write(0, old)
    before = writer.shard_path(0).read_bytes()

    def broken(fd: int, parts: list) -> int:
        os.write(fd, bytes(parts[0][:10]))  # some bytes reach the temp file, then it fails
        raise OSError("disk full")

    monkeypatch.setattr(fw.os, "writev", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.write(0, _data(4, "float32") + 1)
    assert writer.shard_path(0).read_bytes() == before
    assert not list(tmp_path.rglob("*.partial"))


def test_other_layouts_and_partial_writes_go_through_zarr(tmp_path: Path) -> None:
    from zarr.codecs import ZstdCodec

    _array(tmp_path / "z", "float16", compressors=[ZstdCodec(level=3)])
    meta = json.loads((tmp_path / "z" / "zarr.json").read_text())
    assert ShardFileWriter.for_array(tmp_path / "z", meta) is None
    _array(tmp_path / "a", "float16")
    writer = _writer(tmp_path / "a")
    assert not writer.accepts(1, _data(4, "float16"))  # not shard-aligned
    assert not writer.accepts(0, _data(3, "float16"))  # not the whole shard
    with pytest.raises(ValueError, match="not one whole shard"):
        writer.write(0, _data(3, "float16"))


def _store(url: str, failures: dict[int, str] | None = None) -> None:
    ids = [f"i{i}" for i in range(5)]
    store = create_store(url, StoreLayout([ArraySpec("embed", ROW)], ids, shard_size=2),
                         fingerprint_fields={"t": 1})
    for k in range(store.n_shards):
        n = len(store.shard_rows(k))
        sizes = np.ones((n, 2), int)
        store.writer.write_shard(k, {"embed": _data(n, "float16") + k}, sizes, sizes,
                          failures if k == 1 else None)


def test_stores_are_byte_identical_with_and_without_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store(str(tmp_path / "fast.zarr"), {0: "bad"})
    monkeypatch.setattr(zb, "FASTWRITE", False)
    _store(str(tmp_path / "zarr.zarr"), {0: "bad"})
    for shard in (tmp_path / "zarr.zarr" / "features").rglob("c/*/*/*/*"):
        twin = tmp_path / "fast.zarr" / shard.relative_to(tmp_path / "zarr.zarr")
        assert twin.read_bytes() == shard.read_bytes(), shard
    assert open_store(str(tmp_path / "fast.zarr")).verify().ok


def test_hdf5_direct_reads_equal_h5py_reads(tmp_path: Path) -> None:
    url = str(tmp_path / "s.h5")
    ids = [f"i{i}" for i in range(5)]
    store = create_store(url, StoreLayout([ArraySpec("embed", ROW)], ids, shard_size=2),
                         fingerprint_fields={"t": 1})
    store.writer.write_shard(1, {"embed": _data(2, "float16")}, np.ones((2, 2)), np.ones((2, 2)))
    rows = [3, 0, 2, 2, 4]
    writable = store.read(rows, allow_unwritten=True, dtype=None)["embed"]  # read_direct_chunk
    store.close()
    reader = open_store(url)  # read-only: cached offsets + preadv
    direct = reader.read(rows, allow_unwritten=True, dtype=None)["embed"]
    assert direct.tobytes() == writable.tobytes()
    assert np.isnan(direct[[1, 4]]).all() and not np.isnan(direct[[0, 2, 3]]).any()
    whole = reader.read(slice(None), allow_unwritten=True, dtype=None)["embed"]
    assert whole[rows].tobytes() == direct.tobytes()


def test_new_stores_use_xxh3_and_older_ones_keep_blake2b(tmp_path: Path) -> None:
    from cache.shard_writer import digest
    from cache.transfer import copy_store

    url = str(tmp_path / "s.zarr")
    _store(url)
    store = open_store(url, "a")
    assert store.checksum == "xxh3-128"
    data = store.read(range(2), allow_unwritten=True, dtype=None)["embed"]
    commit = store._backend.read("commit", slice(None))[0]
    assert commit[1:17].tobytes() == digest(data, "xxh3-128") != digest(data, "blake2b")
    # a store written before the attribute existed: blake2b commit rows, no attribute
    attrs = store._backend.read_attrs()
    del attrs["checksum"]
    store._backend.write_attrs(attrs)
    old = open_store(url, "a")
    assert old.checksum == "blake2b" and not old.verify().ok  # xxh3 rows, read as blake2b
    for k in range(old.n_shards):
        rows = old.shard_rows(k)
        arr = old.read(range(rows.start, rows.stop), allow_unwritten=True, dtype=None)["embed"]
        row = np.frombuffer(b"\x01" + digest(arr, "blake2b"), np.uint8)[None]
        old._backend.write("commit", k, row)
    assert open_store(url).verify().ok
    assert open_store(url, verify=True).read(range(4))["embed"].shape[0] == 4  # verified reads
    copy = copy_store(url, str(tmp_path / "s.h5"))  # an old store exports to a new one
    assert copy.checksum == "xxh3-128" and copy.verify().ok
    want = open_store(url).read(range(4))["embed"]
    assert copy.read(range(4))["embed"].tobytes() == want.tobytes()


def test_float32_reads_equal_numpy_casts() -> None:
    from cache.layout import as_dtype

    every = np.arange(65536, dtype=np.uint16).view(np.float16)  # every float16 bit pattern
    rows = np.tile(every, 2).reshape(2, 256, 256)
    got, want = as_dtype(rows, "float32"), rows.astype(np.float32)
    assert got.dtype == np.float32 and got.shape == rows.shape
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all()
    assert as_dtype(rows, "float16") is rows
