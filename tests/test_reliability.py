"""Nothing lost, ever: outputs that never delete, one writer per shard, verified training
reads, a full disk, and one clear line (no traceback) for every user-reachable error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from test_extract_run import _photo, make_dataset

from cache.backends import StoreBusyError
from cache.cli import main as cache_main
from cache.store import open_store
from extract.cli import main as extract_main
from heads.cli import main as train_main
from iqadata.manifest import Split, file_sha256, write_split

HELPER = Path(__file__).with_name("_store_writer.py")
ROOT = Path(__file__).resolve().parents[1]
NSS = ["--backbone", "nss", "--arch", "size=32", "--arch", "grid=8", "--shard-size", "2"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_error_line(output: str) -> None:
    assert "Traceback" not in output, output
    assert sum(line.startswith("Error:") for line in output.splitlines()) == 1, output


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _extract(manifest: Path, out: str, *extra: str) -> object:
    return CliRunner().invoke(extract_main, [*NSS, "--manifest", str(manifest), "--out", out,
                                             *extra])


# ---------------------------------------------------------------- outputs that never delete


def test_extract_onto_the_dataset_folder_deletes_nothing(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path)
    before = _files(tmp_path)
    res = _extract(manifest, str(tmp_path))
    assert res.exit_code == 2 and "not a feature store; nothing was written" in res.output
    _one_error_line(res.output)
    assert _files(tmp_path) == before


def _extracted(tmp_path: Path) -> str:
    """The test dataset's NSS features, extracted into ``tmp_path/f.zarr``."""
    manifest = make_dataset(tmp_path)
    store = str(tmp_path / "f.zarr")
    assert _extract(manifest, store).exit_code == 0
    return store


def _folder_with(folder: Path, name: str, text: str) -> Path:
    """A folder of someone else's: one file ``name`` holding ``text``."""
    folder.mkdir()
    (folder / name).write_text(text)
    return folder


def test_extract_onto_dot_deletes_nothing(tmp_path: Path, monkeypatch) -> None:
    manifest = make_dataset(tmp_path)
    before = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = _extract(manifest, ".")
    assert res.exit_code == 2 and _files(tmp_path) == before


def test_export_and_import_onto_folders_delete_nothing(tmp_path: Path) -> None:
    store = _extracted(tmp_path)
    keep = _folder_with(tmp_path / "notes.zarr", "draft.txt", "mine")
    for cmd in (["export", store, "--to", str(keep)], ["import", store, "--to", str(keep)]):
        res = CliRunner().invoke(cache_main, cmd)
        assert res.exit_code == 2 and "nothing was written" in res.output, res.output
        assert _files(keep) == {"draft.txt": b"mine"}
    (tmp_path / "x.h5").write_bytes(b"a file of mine")
    res = CliRunner().invoke(cache_main, ["export", store, "--to", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and (tmp_path / "x.h5").read_bytes() == b"a file of mine"


def _split_for(manifest_rows: list[str], folder: Path) -> Path:
    digest = file_sha256(folder / "manifest.csv")
    split = Split(train=tuple(manifest_rows[:3]), val=(), test=tuple(manifest_rows[3:]),
                  manifest_sha256=digest)
    write_split(split, folder / "split.json")
    return folder / "split.json"


def _train(tmp_path: Path, store: str, out: Path, *extra: str) -> object:
    split = _split_for([f"d{i}.png" for i in (0, 2, 4, 1, 3)], tmp_path)  # ref0 | ref1
    args = ["--head", "sfem_nr", "--features", store, "--manifest", str(tmp_path / "manifest.csv"),
            "--split", str(split), "--epochs", "1", "--batch-size", "2", "--out", str(out),
            "--set", "width=4", "--set", "scales=[1]", "--set", "pool_size=2", *extra]
    return CliRunner().invoke(train_main, args)


def test_train_out_onto_a_foreign_folder_deletes_nothing(tmp_path: Path) -> None:
    store = _extracted(tmp_path)
    out = _folder_with(tmp_path / "paper", "notes.md", "results so far")
    res = _train(tmp_path, store, out)
    assert res.exit_code == 2 and "nothing was written" in res.output
    assert _files(out) == {"notes.md": b"results so far"}
    res = _train(tmp_path, store, tmp_path / "run")  # 80/20-style split: no validation part
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "no validation part" in metrics["runs"][0]["selection"]
    assert _train(tmp_path, store, tmp_path / "run").exit_code == 0  # its own output: fine


# ---------------------------------------------------------------- one writer per store


def _writer(url: str, first: int = 0, stop: int = 10**6, slow: float = 0.0, claims=False):
    args = [sys.executable, str(HELPER), url, str(first), str(stop), "--slow", str(slow)]
    if claims:
        args.append("--claims")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_a_second_hdf5_writer_is_refused_and_the_first_succeeds(tmp_path: Path) -> None:
    url = str(tmp_path / "one.h5")
    first = _writer(url, slow=0.15)
    with pytest.raises(StoreBusyError, match="open for writing by another process"):
        open_store(url, "a")
    res = CliRunner().invoke(cache_main, ["info", url])
    assert res.exit_code == 1 and "another process" in res.output
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode()
    with open_store(url) as s:
        assert not s.missing_shards() and s.verify().ok


def test_two_zarr_writers_compute_each_shard_once(tmp_path: Path) -> None:
    url = str(tmp_path / "shared.zarr")
    procs = [_writer(url, slow=0.1, claims=True) for _ in range(2)]
    wrote = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        wrote.append([int(x) for x in out.split()])
    assert sorted(wrote[0] + wrote[1]) == list(range(12))  # every shard, each once
    assert wrote[0] and wrote[1]  # both did some of the work
    with open_store(url) as s:
        assert s.verify().ok and not s.missing_shards()
    assert not (tmp_path / "shared.zarr" / ".iqa-claims").exists()


def test_concurrent_extractions_into_a_cache_root_compute_each_shard_once(
    tmp_path: Path, monkeypatch
) -> None:
    import extract.fill as fill_mod
    import extract.run as run_mod
    from extract.config import ExtractConfig

    manifest = make_dataset(tmp_path, n=10)
    real = fill_mod.fill_shards

    def slow(*args, **kwargs):  # makes the two writers overlap on 2 busy cores
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(fill_mod, "fill_shards", slow)
    monkeypatch.setattr(fill_mod, "WAIT_POLL_S", 0.1)
    cfg = ExtractConfig(backbone="nss", random_init=True, shard_size=2,
                        arch=(("grid", 8), ("size", 32)))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(run_mod.run_extract(
        cfg, manifest, cache_root=str(tmp_path / "root"), progress=False)))
        for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 2 and results[0].store == results[1].store
    assert sum(r.computed_rows for r in results) == results[0].rows  # nothing twice
    alone = run_mod.run_extract(cfg, manifest, out=str(tmp_path / "alone.zarr"), progress=False)
    with open_store(results[0].store) as a, open_store(alone.store) as b:
        for name in a.arrays:
            assert a.read(slice(None))[name].tobytes() == b.read(slice(None))[name].tobytes()


# ---------------------------------------------------------------- training reads verified data


def _damaged_store(tmp_path: Path, how: str) -> str:
    store = _extracted(tmp_path)
    shard = tmp_path / "f.zarr" / "features" / "nss" / "c" / "0" / "0" / "0" / "0"
    if how == "flip":
        data = bytearray(shard.read_bytes())
        data[100] ^= 0x10
        shard.write_bytes(bytes(data))
    elif how == "delete":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[: len(shard.read_bytes()) // 2])
    return store


@pytest.mark.parametrize("how", ["flip", "delete", "truncate"])
def test_damaged_shards_stop_training_with_one_line(tmp_path: Path, how: str) -> None:
    store = _damaged_store(tmp_path, how)
    res = _train(tmp_path, store, tmp_path / "run")
    assert res.exit_code == 1, res.output
    assert "shard 0 of 'nss'" in res.output and "iqa-cache verify" in res.output
    _one_error_line(res.output)
    res = CliRunner().invoke(cache_main, ["verify", store, "--reset-corrupt"])
    assert res.exit_code == 1 and "reset" in res.output
    assert _extract(tmp_path / "manifest.csv", store, "--resume").exit_code == 0
    assert _train(tmp_path, store, tmp_path / "run2").exit_code == 0


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                        capture_output=True)
    if ok.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): " + ok.stderr.decode()[:80])
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_loses_nothing_and_resumes_bit_identical(tmp_path: Path, small_disk) -> None:
    manifest = make_dataset(tmp_path, n=10)
    args = ["--arch", "size=128", "--arch", "grid=32"]
    url = str(small_disk / "f.zarr")
    res = _extract(manifest, url, *args)
    assert res.exit_code == 1 and "No space left on device" in res.output, res.output
    _one_error_line(res.output)
    with open_store(url) as s:
        assert s.missing_shards() and not s.verify().corrupt_shards  # committed: intact
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    assert _extract(manifest, url, *args, "--resume").exit_code == 0
    assert _extract(manifest, str(tmp_path / "ref.zarr"), *args).exit_code == 0
    with open_store(url) as a, open_store(str(tmp_path / "ref.zarr")) as b:
        assert a.read(slice(None))["nss"].tobytes() == b.read(slice(None))["nss"].tobytes()
    assert not list(small_disk.rglob("*.partial"))


# ---------------------------------------------------------------- one line for bad input


def test_missing_and_damaged_stores_are_one_line(tmp_path: Path) -> None:
    for cmd in ("info", "verify"):
        res = CliRunner().invoke(cache_main, [cmd, str(tmp_path / "nope.zarr")])
        assert res.exit_code == 1 and "no feature store at" in res.output
        _one_error_line(res.output)
    manifest = make_dataset(tmp_path)
    store = tmp_path / "f.zarr"
    assert _extract(manifest, str(store)).exit_code == 0
    (store / "zarr.json").write_text("{ torn")
    res = CliRunner().invoke(cache_main, ["info", str(store)])
    assert res.exit_code == 1 and "f.zarr/zarr.json is damaged" in res.output
    _one_error_line(res.output)


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path)
    for bad in (["--batch-size", "0"], ["--shard-size", "0"], ["--views", "rot90"]):
        res = _extract(manifest, str(tmp_path / "x.zarr"), *bad)
        assert res.exit_code == 2 and "Traceback" not in res.output, bad
    assert not (tmp_path / "x.zarr").exists()


def test_small_hdf5_stores_and_exports(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=1)
    res = CliRunner().invoke(extract_main, [*NSS[:-2], "--manifest", str(manifest),
                                            "--out", str(tmp_path / "f.h5")])
    assert res.exit_code == 0, res.output  # 3 rows, shards of 64: once a chunk-shape crash
    res = CliRunner().invoke(cache_main, ["export", str(tmp_path / "f.h5"),
                                          "--to", str(tmp_path / "g.h5")])
    assert res.exit_code == 0 and ": ok;" in res.output


# ---------------------------------------------------------------- failures can be retried


def test_failed_images_are_retried_after_a_fix(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, corrupt=True)
    store = str(tmp_path / "f.zarr")
    res = _extract(manifest, store)
    assert res.exit_code == 1 and "1 failed" in res.output and "--retry-failed" in res.output
    res = _extract(manifest, store, "--resume")
    assert res.exit_code == 1 and "nothing recomputed" in res.output
    Image.fromarray(_photo(3)).save(tmp_path / "bad.png")
    res = _extract(manifest, store, "--retry-failed")
    assert res.exit_code == 0, res.output
    assert "computed 2 rows" in res.output and "0 failed" in res.output  # one shard redone
    with open_store(store) as s:
        assert s.written.all() and not s.failures


def test_a_finished_store_holds_no_temporary_files(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path)
    store = tmp_path / "f.zarr"
    assert _extract(manifest, str(store), "--batch-size", "1").exit_code == 0
    with open_store(str(store), "a") as s:
        s.uncommit([1])
    stale = store / "features" / "nss" / "c" / "0.abc.partial"
    stale.write_bytes(b"torn")
    os.utime(stale, (0, 0))
    claims = store / ".iqa-claims"
    claims.mkdir()
    (claims / "shard_000001.claim").write_text('{"host": "gone", "pid": 1, "started": 0}')
    os.utime(claims / "shard_000001.claim", (0, 0))
    assert _extract(manifest, str(store), "--resume").exit_code == 0
    assert not list(store.rglob("*.partial")) and not claims.exists()
    shutil.rmtree(store)
