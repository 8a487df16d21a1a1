"""Kill-safety, resume and parallel writers, with real subprocesses."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cache.backends import StoreBusyError
from cache.store import open_store

HELPER = Path(__file__).with_name("_store_writer.py")
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_store_writer", HELPER)
writer = importlib.util.module_from_spec(_spec)  # the same code, run in this process
_spec.loader.exec_module(writer)


@pytest.fixture(scope="module")
def want(tmp_path_factory) -> dict[str, np.ndarray]:
    """The store written by one uninterrupted in-process run."""
    url = str(tmp_path_factory.mktemp("ref") / "reference.zarr")
    writer.main(url, 0, 10**6, 0.0)
    return snapshot(url)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def start(url: str, first: int = 0, stop: int = 10**6, slow: float = 0.0) -> subprocess.Popen:
    args = [sys.executable, str(HELPER), url, str(first), str(stop), "--slow", str(slow)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


def snapshot(url: str) -> dict[str, np.ndarray]:
    with open_store(url) as s:
        assert s.verify().ok
        out = {n: a.view(np.uint8) for n, a in s.read(slice(None), allow_unwritten=True,
                                                         dtype=None).items()}
        out["written"] = s.written
        out["commit"] = s.read_raw("commit", slice(None))
        out["sizes"] = s.read_raw("sizes", slice(None))
        out["failure"] = s.read_raw("failure", slice(None)).astype(str)
        return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", ["killed.zarr", "killed.h5"])
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path, want, name):
    url = str(tmp_path / name)
    rng = random.Random(0)
    committed = []
    for _ in range(4):
        proc = start(url, slow=0.05)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open_store(url) as s:  # openable after every kill, committed shards intact
            report = s.verify()
            assert not report.corrupt_shards
            committed.append(s.n_shards - len(report.missing_shards))
    assert committed == sorted(committed) and committed[0] < 12 and committed[-1] > 0, committed
    finish(start(url))
    assert_same(snapshot(url), want)
    assert not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("*.creating"))


def test_two_writers_on_disjoint_shards_lose_nothing(tmp_path, want):
    url = str(tmp_path / "parallel.zarr")
    writer.main(url, 0, 0, 0.0)  # rank 0 creates the store before the workers start
    procs = [start(url, 0, 6), start(url, 6, 12)]
    for p in procs:
        finish(p)
    assert_same(snapshot(url), want)
    with open_store(url) as s:
        assert s.missing_shards() == [] and len(s.failures) == 2


def test_reopen_for_append_removes_only_stale_partial_files(tmp_path):
    url = str(tmp_path / "p.zarr")
    writer.main(url, 0, 1, 0.0)
    stale = Path(url, "features", "embed", "c", "5.abc.partial")
    fresh = Path(url, "features", "embed", "c", "6.def.partial")
    for p in (stale, fresh):
        p.write_bytes(b"torn")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    with open_store(url, "a") as s:
        assert s.missing_shards() == list(range(1, 12))
    assert not stale.exists() and fresh.exists()  # a fresh one may be a live writer's


def test_hdf5_resume_after_a_clean_stop(tmp_path, want):
    url = str(tmp_path / "r.h5")
    writer.main(url, 0, 4, 0.0)
    with open_store(url) as s:
        assert s.missing_shards() == list(range(4, 12))
    writer.main(url, 0, 10**6, 0.0)
    assert_same(snapshot(url), want)


def test_a_killed_hdf5_writer_leaves_a_valid_file_that_resumes_in_place(tmp_path, want):
    """The writer works in SWMR mode: killed, it leaves a valid file with its flags set."""
    import h5py

    url = str(tmp_path / "swmr.h5")
    proc = start(url, slow=0.05)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(OSError, match="consistency flags"):  # what plain h5py says of it
        h5py.File(url, "r")
    with open_store(url) as s:  # read in SWMR mode: committed shards intact
        report = s.verify()
        assert not report.corrupt_shards and 0 < s.n_shards - len(report.missing_shards) < 12
    inode = os.stat(url).st_ino
    finish(start(url))  # the next writer rebuilds the file once, then fills it
    assert os.stat(url).st_ino != inode
    with h5py.File(url, "r") as fh:  # flags cleared: any HDF5 reader opens it again
        assert "features" in fh
    assert_same(snapshot(url), want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swmr.h5"]  # no temporaries


def test_the_hdf5_lock_dies_with_its_writer_and_is_shared_within_a_process(tmp_path):
    url = str(tmp_path / "lock.h5")
    proc = start(url, slow=0.5)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    with pytest.raises(StoreBusyError, match="open for writing by another process"):
        open_store(url)  # no reader while another process writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_store(url, "a") as w, open_store(url) as r:  # one process may read what it writes
        assert r.n_shards == w.n_shards == 12


def test_an_hdf5_store_opens_unlocked_with_a_warning_where_files_cannot_be_locked(
    tmp_path, monkeypatch
):
    import errno
    import fcntl

    import cache.backends.filelock as filelock

    url = str(tmp_path / "nolocks.h5")
    writer.main(url, 0, 2, 0.0)

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr(filelock, "_unlocked_warned", set())
    with pytest.warns(RuntimeWarning, match="no file locks .*run one at a time"):
        with open_store(url, "a") as s:
            assert s.missing_shards() == list(range(2, 12))
