"""One contract every store backend passes (memory, Zarr on disk, Zarr on fsspec, HDF5)."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
import zarr

from cache.backends import BACKENDS
from cache.backends.memory import MemoryBackend
from cache.create import create_store, store_fields
from cache.fingerprint import FingerprintMismatch, check_fingerprint, fingerprint_of
from cache.layout import StoreLayout
from cache.outputs import OutputPathError
from cache.store import ArraySpec, IncompleteStoreError, StoreError, open_store
from cache.testing import fast_reader, write_bypassing_checksums

os.environ.setdefault("HF_HUB_OFFLINE", "1")

IDS = [f"img/{i:02d}.png" for i in range(5)]
VIEWS = ("identity", "flip")
ARRAYS = [ArraySpec("embed", (3, 4, 4)), ArraySpec("feature", (6,), "float32")]
FIELDS = {"backbone": "tiny", "weights_sha256": "random-init", "mean": [0.485, 0.456]}


def shard_data(store, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Smooth, deterministic features for shard ``k``."""
    rng = np.random.default_rng(seed + k)
    n = len(store.shard_rows(k))
    return {a.name: rng.normal(size=(n, *a.shape)).astype(a.dtype) for a in store.arrays.values()}


def write_all(store, seed: int = 0, failures=None) -> None:
    for k in store.missing_shards():
        n = len(store.shard_rows(k))
        sizes = np.tile([[4, 3]], (n, 1))
        store.writer.write_shard(k, shard_data(store, k, seed), sizes, sizes * 16, failures)


class StoreContract:
    """Subclass with a ``url`` fixture, or a ``local_name`` for a store of that name in a
    temporary folder (and ``backend`` when the URL does not decide it).

    ``serves`` names the ``cache.backends.BACKENDS`` entry the subclass tests.
    """

    serves = ""
    local_name = ""
    backend: str | None = None
    storage_options: dict | None = None

    @pytest.fixture
    def url(self, tmp_path) -> str:
        if not self.local_name:
            raise NotImplementedError
        return str(tmp_path / self.local_name)

    def make(self, url, **kw):
        layout = dict(arrays=ARRAYS, image_ids=IDS, views=VIEWS, shard_size=2)
        layout.update((k, kw.pop(k)) for k in list(kw) if k in layout)
        args = dict(
            fingerprint_fields=FIELDS, backend=self.backend, storage_options=self.storage_options
        )
        args.update(kw)
        return create_store(url, StoreLayout(**layout), **args)

    def reopen(self, url, mode="r"):
        return open_store(url, mode, backend=self.backend, storage_options=self.storage_options)

    def test_layout_is_image_major(self, url):
        s = self.make(url)
        assert (s.n_images, s.n_views, s.n_rows, s.n_shards) == (5, 2, 10, 3)
        assert s.row_of("img/01.png", "flip") == 3
        assert list(s.rows_of(["img/04.png", "img/00.png"])) == [8, 0]
        assert list(s.shard_rows(0)) == [0, 1, 2, 3]
        assert list(s.shard_rows(2)) == [8, 9]
        assert s.missing_shards() == [0, 1, 2]
        assert not s.written.any()
        with pytest.raises(KeyError, match="nope.png"):
            s.row_of("nope.png")
        with pytest.raises(KeyError, match="view 'rot90'"):
            s.row_of("img/00.png", "rot90")

    def test_round_trip_is_exact(self, url):
        s = self.make(url)
        write_all(s)
        r = self.reopen(url)
        got = r.read(list(r.shard_rows(1)))
        want = shard_data(r, 1)
        for name in want:
            assert got[name].dtype == np.float32
            assert got[name].shape == (4, *r.arrays[name].shape)
            np.testing.assert_array_equal(got[name], want[name].astype(np.float32))
        assert r.read([9, 0, 9], ["embed"])["embed"].shape == (3, 3, 4, 4)
        np.testing.assert_array_equal(r.read([9, 0])["feature"][1], r.read(0)["feature"][0])
        np.testing.assert_array_equal(r.valid_size([0, 9]), [[4, 3], [4, 3]])
        np.testing.assert_array_equal(r.orig_size(slice(0, 1)), [[64, 48]])
        assert r.missing_shards() == [] and r.written.all()

    def test_unwritten_rows_are_refused(self, url):
        s = self.make(url)
        k = 1
        n = len(s.shard_rows(k))
        s.writer.write_shard(k, shard_data(s, k), np.ones((n, 2)), np.ones((n, 2)))
        with pytest.raises(IncompleteStoreError, match="2 of 3 requested rows are not written"):
            s.read([0, 4, 9])
        loose = s.read([0, 4], allow_unwritten=True)
        assert np.isnan(loose["embed"][0]).all() and np.isfinite(loose["embed"][1]).all()
        assert int((~s.written).sum()) == 6
        assert s.missing_shards() == [0, 2]

    def test_failures_are_recorded_not_written(self, url):
        s = self.make(url)
        write_all(s, failures={1: "decode error: truncated"})
        why = "decode error: truncated"
        assert s.failures == {"img/00.png": why, "img/02.png": why, "img/04.png": why}
        assert s.written.sum() == 10 - 3
        assert s.missing_shards() == []
        assert np.isnan(s.read(1, allow_unwritten=True)["embed"]).all()
        assert (s.valid_size([1]) == -1).all()
        with pytest.raises(IncompleteStoreError, match="row 1, image 'img/00.png'"):
            s.read([0, 1])

    def test_non_finite_rows_become_failures(self, url):
        s = self.make(url)
        data = shard_data(s, 0)
        data["embed"] = data["embed"].astype(np.float32)
        data["embed"][2, 0, 0, 0] = 1e6  # float16 overflow -> inf
        before = {n: a.copy() for n, a in data.items()}
        s.writer.write_shard(0, data, np.ones((4, 2)), np.ones((4, 2)))
        for name in data:  # the caller's arrays are left alone
            np.testing.assert_array_equal(data[name], before[name])
        assert "overflow" in s.failures["img/01.png"]
        assert list(s.written[:4]) == [True, True, False, True]

    def test_write_shard_checks_inputs(self, url):
        s = self.make(url)
        data = shard_data(s, 0)
        sizes = np.ones((4, 2))
        with pytest.raises(StoreError, match="array 'embed' has shape"):
            s.writer.write_shard(0, {**data, "embed": data["embed"][:3]}, sizes, sizes)
        with pytest.raises(StoreError, match="has arrays \\['embed'\\]"):
            s.writer.write_shard(0, {"embed": data["embed"]}, sizes, sizes)
        with pytest.raises(StoreError, match="valid_size shape"):
            s.writer.write_shard(0, data, sizes[:2], sizes)
        with pytest.raises(IndexError, match="shard 3 out of range"):
            s.writer.write_shard(3, data, sizes, sizes)
        write_all(s)
        with pytest.raises(StoreError, match="read-only"):
            self.reopen(url).writer.write_shard(0, data, sizes, sizes)

    def test_verify_finds_corruption(self, url):
        s = self.make(url)
        write_all(s)
        assert s.verify().ok
        bad = np.zeros((4, 3, 4, 4), dtype=np.float16)
        write_bypassing_checksums(s, "embed", 4, bad)
        report = s.verify()
        assert not report.ok
        assert report.corrupt_shards == {1: ["embed: checksum mismatch"]}
        assert "1 corrupt" in report.summary()

    def test_resume_and_fingerprint_refusal(self, url):
        s = self.make(url)
        k = 0
        s.writer.write_shard(k, shard_data(s, k), np.ones((4, 2)), np.ones((4, 2)))
        s.close()
        again = self.make(url)
        assert again.missing_shards() == [1, 2]
        assert again.fingerprint == s.fingerprint
        again.close()
        with pytest.raises(FingerprintMismatch, match=r"\['backbone'\].*'tiny' != 'other'"):
            self.make(url, fingerprint_fields={**FIELDS, "backbone": "other"})
        with pytest.raises(FingerprintMismatch, match="image ids: 5 in the store vs 4 given"):
            self.make(url, image_ids=IDS[:4])
        with pytest.raises(FingerprintMismatch, match=r"\['arrays'\]"):
            self.make(url, arrays=ARRAYS[:1])
        with pytest.raises(FingerprintMismatch, match=r"\['views'\]"):
            self.make(url, views=("identity",))

    def test_attributes_record_provenance(self, url):
        s = self.make(url, provenance={"backbone": "tiny", "manifest_sha256": "ab" * 32})
        assert s.fingerprint == fingerprint_of(FIELDS)  # lossless: the caller's fields as given
        assert s.fingerprint_fields == FIELDS
        for key in ("backbone", "manifest_sha256", "package_version", "dtype"):
            assert key in s.provenance
        assert "created_at" not in s.provenance  # no clock time: re-extraction is byte-identical
        assert s.provenance["dtype"] == {"embed": "float16", "feature": "float32"}
        check_fingerprint(s.fingerprint, s)
        check_fingerprint(FIELDS, s)
        with pytest.raises(FingerprintMismatch, match="weights_sha256"):
            check_fingerprint({**FIELDS, "weights_sha256": "00"}, s)

    def test_bitround_is_explicit_and_recorded(self, url):
        s = self.make(url, keepbits=4)
        write_all(s)
        bits = s.read(list(range(4)), ["embed"])["embed"].astype(np.float16).view(np.uint16)
        assert not (bits & 0b111111).any()  # the 6 low mantissa bits are zero
        assert s.fingerprint_fields == {**FIELDS, "lossy": {"bitround_keepbits": 4}}
        assert s.provenance["lossy"] == {"bitround_keepbits": 4}
        assert s.verify().ok
        assert s.fingerprint == fingerprint_of(store_fields(FIELDS, 4)) != fingerprint_of(FIELDS)
        with pytest.raises(ValueError, match="keepbits=12 invalid for 'embed'"):
            self.make(url, keepbits=12)  # checked before the existing store is opened

    def test_open_missing_store_fails(self, url):
        with pytest.raises(StoreError, match="no feature store at"):
            self.reopen(url)

    def test_verified_reads_catch_damage(self, url):
        s = self.make(url)
        write_all(s)
        s.close()
        opts = {"backend": self.backend, "storage_options": self.storage_options}
        with open_store(url, verify=True, **opts) as checked:
            checked.read([0, 1])  # shard 0 checks out
        with self.reopen(url, "a") as damaged:
            write_bypassing_checksums(damaged, "embed", 5, np.zeros((1, 3, 4, 4), np.float16))
        with open_store(url, verify=True, **opts) as checked:
            checked.read([0, 1])
            with pytest.raises(StoreError, match="shard 1 of 'embed' fails its checksum"):
                checked.read([5])
        with self.reopen(url) as plain:
            assert plain.read([5])["embed"].max() == 0  # unverified reads serve the damage
        with self.reopen(url, "a") as damaged:
            damaged.uncommit([1])
        with self.reopen(url) as s:
            assert s.missing_shards() == [1]  # --resume rewrites it

    def test_small_store_fewer_rows_than_a_shard(self, url):
        s = self.make(url, image_ids=IDS[:1], shard_size=64)
        write_all(s)
        assert self.reopen(url).verify().ok


class TestMemoryStore(StoreContract):
    serves = "memory"

    @pytest.fixture
    def url(self):
        url = f"memory://contract-{uuid.uuid4().hex}"
        yield url
        MemoryBackend.remove(url)


class TestZarrLocalStore(StoreContract):
    serves = "zarr"
    local_name = "feats.zarr"

    def test_shards_are_few_files(self, url):
        s = self.make(url)
        write_all(s)
        embed_files = [p for p in os.listdir(os.path.join(url, "features/embed/c"))]
        assert len(embed_files) == s.n_shards  # one shard file per shard, not per row

    @pytest.mark.parametrize("codec", ["none", "zstd", "blosc-zstd", "blosc-lz4"])
    def test_fast_reads_match_zarr(self, url, codec):
        s = self.make(url, codec=codec)
        for k in (0, 2):  # shard 1 stays unwritten
            n = len(s.shard_rows(k))
            s.writer.write_shard(k, shard_data(s, k), np.ones((n, 2)), np.ones((n, 2)))
        rows = np.array([9, 0, 5, 3, 8, 0])
        fast = fast_reader(s, "features/embed")
        assert fast is not None and fast_reader(s, "written") is None
        got = fast.read(rows)  # type: ignore[attr-defined]
        want = zarr.open_array(os.path.join(url, "features/embed"), mode="r")[:][rows]
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))  # NaNs too
        assert np.isnan(got[2]).all()

    def test_verify_reports_a_damaged_shard_file(self, url):
        s = self.make(url)
        write_all(s)
        shard = os.path.join(url, "features", "embed", "c", "1", "0", "0", "0")
        with open(shard, "r+b") as fh:
            fh.seek(-3, os.SEEK_END)
            fh.write(b"\xff\xff\xff")  # breaks the shard index checksum
        report = s.verify()
        assert list(report.corrupt_shards) == [1]
        assert "embed: unreadable" in report.corrupt_shards[1][0]

    def test_xarray_reads_named_dimensions(self, url):
        xr = pytest.importorskip("xarray")
        s = self.make(url)
        write_all(s)
        ds = xr.open_zarr(url, group="features", consolidated=False)
        assert ds["embed"].dims == ("row", "embed_channel", "embed_y", "embed_x")
        assert ds["feature"].dims == ("row", "feature_dim0")
        rows = np.array([0, 3, 9])
        want = open_store(url).read(rows, ["embed"], dtype=None)["embed"]
        np.testing.assert_array_equal(ds["embed"].values[rows], want)
        root = xr.open_zarr(url, consolidated=False)
        assert list(root["image_id"].values[:2]) == [IDS[0], IDS[0]]  # one row per view


class TestZarrFsspecMemoryStore(StoreContract):
    serves = "zarr"
    backend = "zarr"

    @pytest.fixture
    def url(self):
        return f"memory://zarr-contract-{uuid.uuid4().hex}"


class TestHDF5Store(StoreContract):
    serves = "hdf5"
    local_name = "feats.h5"

    def test_dimensions_are_labelled(self, url):
        import h5py

        self.make(url).close()
        with h5py.File(url, "r") as fh:  # a plain h5py reader, libhdf5's file locking on
            assert [d.label for d in fh["features/embed"].dims] == [
                "row", "embed_channel", "embed_y", "embed_x"]


class TestZarrLocalOutputs:
    """A store is created only where nothing else is: never over a folder of data."""

    def test_folder_with_data_is_refused_and_kept(self, tmp_path):
        folder = tmp_path / "kadid10k"
        folder.mkdir()
        (folder / "I01.png").write_bytes(b"not a store")
        with pytest.raises(OutputPathError, match="not a feature store; nothing was written"):
            create_store(str(folder), StoreLayout(ARRAYS, IDS), fingerprint_fields=FIELDS)
        assert sorted(p.name for p in folder.iterdir()) == ["I01.png"]

    def test_empty_folder_is_used(self, tmp_path):
        folder = tmp_path / "empty.zarr"
        folder.mkdir()
        s = create_store(str(folder), StoreLayout(ARRAYS, IDS), fingerprint_fields=FIELDS)
        assert s.n_images == 5 and not (folder / ".iqa-claims").exists()

    def test_a_store_finished_by_another_writer_is_reopened_not_rebuilt(
        self, tmp_path, monkeypatch
    ):
        import cache.create as store_mod

        url = str(tmp_path / "s.zarr")
        s = create_store(url, StoreLayout(ARRAYS, IDS, VIEWS, 2), fingerprint_fields=FIELDS)
        write_all(s)
        s.close()
        real, looks = store_mod.store_exists, []

        def first_look_misses(*args, **kwargs):  # the other writer finished just after it
            looks.append(1)
            return False if len(looks) == 1 else real(*args, **kwargs)

        monkeypatch.setattr(store_mod, "store_exists", first_look_misses)
        again = create_store(url, StoreLayout(ARRAYS, IDS, VIEWS, 2), fingerprint_fields=FIELDS)
        assert not again.missing_shards() and again.verify().ok  # nothing cleared

    def test_interrupted_creation_is_rebuilt(self, tmp_path):
        url = str(tmp_path / "half.zarr")
        zarr.open_group(url, mode="w").create_array("written", shape=(4,), dtype=bool)
        (tmp_path / "half.zarr" / ".iqa-claims").mkdir()
        (tmp_path / "half.zarr" / ".iqa-claims" / "create.claim").write_text(
            '{"host": "elsewhere", "pid": 1, "started": 0}'
        )
        os.utime(tmp_path / "half.zarr" / ".iqa-claims" / "create.claim", (0, 0))  # stale
        s = create_store(url, StoreLayout(ARRAYS, IDS), fingerprint_fields=FIELDS)
        assert s.n_images == 5


def test_hdf5_output_never_truncates_a_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_bytes(b"precious")
    with pytest.raises(OutputPathError, match="notes.h5 already holds data"):
        create_store(str(path), StoreLayout(ARRAYS, IDS), fingerprint_fields=FIELDS)
    assert path.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.h5"]  # no half-built file left


def test_every_backend_has_a_contract_subclass():
    tested = {cls.serves for cls in StoreContract.__subclasses__()}
    assert tested == set(BACKENDS)
