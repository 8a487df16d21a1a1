"""``iqa-cache`` through click's CliRunner on tiny stores in tmp_path."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from click.testing import CliRunner

from cache.cli import main
from cache.create import create_store
from cache.fingerprint import fingerprint_of
from cache.layout import StoreLayout
from cache.root import CacheRoot
from cache.store import ArraySpec, open_store
from cache.testing import write_bypassing_checksums

FIELDS = {"backbone": "toy", "weights_sha256": "random-init"}


IDS = [f"i{i}.png" for i in range(4)]


def make(url: str, n_images: int = 4, fill: bool = True, fields=FIELDS) -> str:
    s = create_store(url, StoreLayout([ArraySpec("feature", (8,))], IDS[:n_images], shard_size=2),
                     fingerprint_fields=fields, provenance={"dataset": "demo", "backbone": "toy"})
    for k in range(s.n_shards if fill else 1):
        n = len(s.shard_rows(k))
        sizes = np.ones((n, 2))
        s.writer.write_shard(k, {"feature": np.full((n, 8), k + 0.5)}, sizes, sizes)
    fp = s.fingerprint
    s.close()
    return fp


@pytest.fixture
def root(tmp_path) -> CacheRoot:
    root = CacheRoot(tmp_path / "root")
    make(root.path_for("demo", "toy", fingerprint_of_fields(FIELDS), IDS))
    other = {**FIELDS, "backbone": "toy2"}
    make(root.path_for("demo", "toy2", fingerprint_of_fields(other), IDS), fill=False,
         fields=other)
    return root


def fingerprint_of_fields(fields) -> str:
    return fingerprint_of(fields)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_help_explains_every_command():
    code, out = run("--help")
    assert code == 0
    for cmd in ("ls", "info", "verify", "du", "export", "import", "gc"):
        assert cmd in out
    assert "cache root" in out


def test_ls_table_and_json(root):
    code, out = run("ls", root.root)
    assert code == 0 and "demo" in out and "4/4" in out and "2/4" in out
    code, out = run("ls", root.root, "--json")
    data = json.loads(out)
    assert sorted(d["rows_written"] for d in data) == [2, 4]
    assert {d["complete"] for d in data} == {True, False}


def test_find_reuses_a_store(root):
    fp = fingerprint_of_fields(FIELDS)
    assert root.find("demo", fp, IDS) == root.path_for("demo", "toy", fp, IDS)
    assert root.find("demo", "0" * 64, IDS) is None
    assert root.find("other", fp, IDS) is None
    assert root.find("demo", fp, IDS[:3]) is None  # a subset is another store


def test_info_and_verify(root, tmp_path):
    url = root.path_for("demo", "toy", fingerprint_of_fields(FIELDS), IDS)
    code, out = run("info", url)
    assert code == 0 and "4/4 written" in out and "feature (8,) float16" in out
    assert json.loads(run("info", url, "--json")[1])["provenance"]["dataset"] == "demo"
    code, out = run("verify", url)
    assert code == 0 and ": ok;" in out
    with open_store(url, "a") as s:
        write_bypassing_checksums(s, "feature", 0, np.zeros((2, 8), np.float16))
    code, out = run("verify", url, "--json")
    assert code == 1 and json.loads(out)["corrupt_shards"] == {"0": ["feature: checksum mismatch"]}


def test_du_counts_bytes(root):
    code, out = run("du", root.root, "--json")
    assert code == 0 and json.loads(out)["demo"] > 0


def test_export_import_round_trip(root, tmp_path):
    url = root.path_for("demo", "toy", fingerprint_of_fields(FIELDS), IDS)
    h5 = str(tmp_path / "demo.h5")
    code, out = run("export", url, "--to", h5)
    assert code == 0 and ": ok;" in out
    other_root = tmp_path / "root2"
    code, out = run("import", h5, "--to", str(other_root))
    assert code == 0 and "imported" in out
    with open_store(url) as a, open_store(h5) as b:
        back = CacheRoot(other_root).find("demo", a.fingerprint, IDS)
        assert back is not None
        with open_store(back) as c:
            for s in (b, c):
                assert s.fingerprint == a.fingerprint and s.provenance == a.provenance
                np.testing.assert_array_equal(s.read(slice(None))["feature"],
                                              a.read(slice(None))["feature"])


def test_export_keeps_partial_state(root, tmp_path):
    url = root.path_for("demo", "toy2", fingerprint_of_fields({**FIELDS, "backbone": "toy2"}),
                        IDS)
    h5 = str(tmp_path / "part.h5")
    run("export", url, "--to", h5)
    with open_store(h5) as s:
        assert s.missing_shards() == [1] and s.written.tolist() == [True, True, False, False]


def test_gc_is_a_dry_run_by_default(root, tmp_path):
    code, out = run("gc", root.root, "--min-age", "0")
    assert code == 0 and "would remove" in out and "incomplete (1 shards uncommitted)" in out
    assert len(root.candidates()) == 2
    code, out = run("gc", root.root, "--min-age", "24")
    assert "nothing to remove" in out  # fresh stores are left to writers in flight
    lock = tmp_path / "dvc.lock"
    lock.write_text("nothing here\n")
    code, out = run("gc", root.root, "--min-age", "0", "--referenced", str(lock), "--yes")
    assert code == 0 and out.count("removed") == 2 and "unreferenced" in out
    assert root.candidates() == []


def test_ls_needs_a_root(monkeypatch):
    monkeypatch.delenv("IQA_CACHE_ROOT", raising=False)
    result = CliRunner().invoke(main, ["ls"])
    assert result.exit_code == 2 and "IQA_CACHE_ROOT" in result.output
    assert os.environ.get("IQA_CACHE_ROOT") is None
    assert time.time() > 0
