"""The Zarr backend on S3, against moto's S3-compatible server on 127.0.0.1 (conftest)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from test_store_contract import FIELDS, IDS, VIEWS, StoreContract, write_all

from cache.fingerprint import fingerprint_of
from cache.root import CacheRoot
from cache.store import open_store
from cache.transfer import copy_store

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto")



@pytest.fixture(scope="module")
def s3_options(s3_endpoint):
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem(**options).mkdir("features")
    return options


class TestS3Store(StoreContract):
    """The contract's I/O-bound tests on S3; the pure-logic ones run on the other backends.

    Each store creation costs ~25 requests against moto, so the rest are left out here.
    """

    serves = "zarr"
    backend = None  # s3:// -> Zarr through FsspecStore
    test_layout_is_image_major = None
    test_failures_are_recorded_not_written = None
    test_non_finite_rows_become_failures = None
    test_write_shard_checks_inputs = None
    test_attributes_record_provenance = None

    @pytest.fixture
    def url(self, s3_options):
        self.storage_options = s3_options
        return f"s3://features/contract-{uuid.uuid4().hex}.zarr"


def test_cache_root_on_s3_and_copy_back(s3_options, tmp_path):
    root = CacheRoot("s3://features/root", storage_options=s3_options)
    s = StoreContract()
    s.storage_options = s3_options
    url = root.path_for("demo", "tiny", fingerprint_of(FIELDS), IDS, VIEWS)
    store = s.make(url, provenance={"dataset": "demo", "backbone": "tiny"})
    write_all(store)
    assert root.find("demo", store.fingerprint, IDS, VIEWS) == url
    (info,) = root.list_stores()
    assert (info.dataset, info.rows_written, info.complete) == ("demo", 10, True)
    assert info.stored_bytes > 0 and info.files > 0
    assert root.du()["demo"] == info.stored_bytes
    local = copy_store(url, str(tmp_path / "copy.h5"), storage_options=s3_options)
    with local, open_store(url, storage_options=s3_options) as remote:
        assert local.fingerprint == remote.fingerprint and local.verify().ok
        np.testing.assert_array_equal(local.read(slice(None))["embed"],
                                      remote.read(slice(None))["embed"])
