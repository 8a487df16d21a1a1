"""The Zarr backend on S3, against moto's standalone S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
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

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(endpoint: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto server at {endpoint} did not start in {timeout} s")


@pytest.fixture(scope="module")
def s3_options():
    port = _free_port()
    env = {**os.environ, **CREDENTIALS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_up(endpoint, proc)
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        s3fs.S3FileSystem(**options).mkdir("features")
        yield options
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
                                      remote.read(slice(None))["embed"])  # fmt: skip
