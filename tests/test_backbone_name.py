"""The backbone's name has one reader (``FeatureStore.backbone``) that every command uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cache.cli import main as cache_main
from cache.create import create_store
from cache.layout import StoreLayout
from cache.record import ExtractionRecord, RecordError, backbone_of, record_of
from cache.root import CacheRoot, store_info
from cache.store import ArraySpec, FeatureStore, open_store
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow

IDS = ["a.png", "b.png"]


def _store(url: str, fields: dict, provenance: dict) -> FeatureStore:
    layout = StoreLayout([ArraySpec("feature", (4,))], IDS, shard_size=2)
    store = create_store(url, layout, fingerprint_fields=fields, provenance=provenance)
    store.writer.write_shard(0, {"feature": np.ones((2, 4))}, np.ones((2, 2)), np.ones((2, 2)))
    return store


def test_every_reader_takes_the_fingerprint_field(tmp_path: Path) -> None:
    root = CacheRoot(str(tmp_path / "root"))
    fields = {"backbone": "nss", "weights_sha256": "weight-free"}
    url = root.path_for("toy", "nss", "0" * 64, IDS)
    # a store whose provenance names another backbone than its fingerprint does
    with _store(url, fields, {"dataset": "toy", "backbone": "stale"}) as store:
        assert store_info(store).backbone == "nss"  # `iqa-cache ls` and `info`
        assert store.backbone == "nss"
        fp = store.fingerprint
    rows = tuple(ManifestRow(image=i, score=1.0, group=i) for i in IDS)
    manifest = Manifest(DatasetInfo(name="toy", score_range=(0, 1)), rows)
    assert root.find_for(manifest, "nss") == url  # `iqa-train-head --backbone`
    other = tmp_path / "other"
    res = CliRunner().invoke(cache_main, ["import", url, "--to", str(other)])
    assert res.exit_code == 0, res.output
    assert [p.name for p in (other / "toy").iterdir()][0].startswith(f"nss-{fp[:16]}")


def test_stores_without_the_field_name_it_where_they_did(tmp_path: Path) -> None:
    teacher = _store(str(tmp_path / "t.zarr"), {"kind": "maps"}, {"backbone": "dpiqa_teacher"})
    assert teacher.backbone == "dpiqa_teacher"  # teacher maps: provenance only
    legacy = {"extract_config": {"backbone": "sam_vit_b", "dtype": "bf16"}}
    assert backbone_of({}, legacy, legacy["extract_config"]) == "sam_vit_b"
    record = record_of(legacy, {})
    assert record == ExtractionRecord(backbone="sam_vit_b", compute_dtype="bf16")
    assert backbone_of({}, {}) == ""
    with pytest.raises(RecordError, match="no extraction record"):
        record_of({"extraction": {"version": 1, "arch": {}}}, {})
    assert open_store(str(tmp_path / "t.zarr")).backbone == "dpiqa_teacher"
