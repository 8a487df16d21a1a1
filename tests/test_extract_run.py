"""The extraction stage end to end: run_extract and iqa-extract on the nss backbone."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cache.store import open_store
from extract.cli import main as extract_main
from extract.config import ExtractConfig, build_backbone
from extract.images import load_image
from extract.job import Cluster, FillJob
from extract.run import run_extract
from extract.shards import ShardStats
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow, write_manifest

SIZE = (96, 72)  # W, H: small, non-square


def _photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    base = np.sin(xx / (5 + seed)) + np.cos(yy / 7)  # smooth structure, not white noise
    img = np.stack([base, base * 0.5, -base], axis=-1) * 60 + 128
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, n: int = 5, corrupt: bool = False) -> Path:
    """``n`` distorted PNGs of two references (FR layout), optionally one corrupt file."""
    rows = []
    for ref in range(2):
        Image.fromarray(_photo(ref)).save(root / f"ref{ref}.png")
    for i in range(n):
        name = f"d{i}.png"
        Image.fromarray(_photo(i % 2 + 10 * i)).save(root / name)
        rows.append(ManifestRow(image=name, ref=f"ref{i % 2}.png", score=float(i),
                                group=f"ref{i % 2}"))
    if corrupt:
        (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        rows.append(ManifestRow(image="bad.png", ref="ref0.png", score=1.0, group="ref0"))
    path = root / "manifest.csv"
    info = DatasetInfo(name="tiny", score_range=(0, 10))
    write_manifest(Manifest(info, tuple(rows)), path)
    return path


def _cfg(**kw: object) -> ExtractConfig:
    base: dict = dict(backbone="nss", random_init=True, batch_size=2, shard_size=2)
    base.update(kw)
    return ExtractConfig(**base)


def test_rows_equal_a_direct_forward(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path)
    result = run_extract(_cfg(), manifest, out=str(tmp_path / "f.zarr"), progress=False)
    store = open_store(result.store)
    assert store.n_rows == 5 + 2 and not store.missing_shards() and store.written.all()
    backbone = build_backbone(_cfg())
    x, valid = backbone.preprocess(load_image(tmp_path / "d3.png"))
    with torch.inference_mode():
        expected = {k: v[0].numpy() for k, v in backbone.forward_features(x[None]).items()}
    got = store.read([store.row_of("d3.png")])
    for name, value in expected.items():
        assert got[name].shape == (1, *backbone.outputs[name])
        np.testing.assert_allclose(got[name][0], value.astype(np.float16), rtol=1e-3, atol=1e-3)
    assert tuple(store.valid_size([store.row_of("d3.png")])[0]) == tuple(valid)
    assert tuple(store.orig_size([store.row_of("d3.png")])[0]) == (SIZE[1], SIZE[0])


def test_flip_views_are_flipped_images(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=2)
    Image.fromarray(_photo(0)[:, ::-1]).save(tmp_path / "ref0_h.png")
    cfg = _cfg(views=("identity", "hflip"))
    store = open_store(run_extract(cfg, manifest, out=str(tmp_path / "v.zarr"),
                                   progress=False).store)
    assert store.n_rows == 2 * (2 + 2)
    backbone = build_backbone(cfg)
    x, _ = backbone.preprocess(load_image(tmp_path / "ref0_h.png"))
    with torch.inference_mode():
        flipped = backbone.forward_features(x[None])
    got = store.read([store.row_of("ref0.png", "hflip")])
    for name, value in flipped.items():
        np.testing.assert_allclose(got[name][0], value[0].numpy(), rtol=1e-2, atol=1e-2)


def test_resume_writes_only_missing_shards(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=6)
    out = str(tmp_path / "r.zarr")
    full = run_extract(_cfg(), manifest, out=str(tmp_path / "full.zarr"), progress=False)
    import extract.fill as fill_mod

    original = fill_mod.fill_shards

    def stop_after_one(job: FillJob, shards: Iterable[int]) -> ShardStats:
        def first_only() -> Iterator[int]:
            for k in shards:
                yield k
                job.stop.set()  # as a Ctrl-C while shard k is in flight: it is finished
        return original(job, first_only())

    fill_mod.fill_shards = stop_after_one
    try:
        first = run_extract(_cfg(), manifest, out=out, progress=False)
    finally:
        fill_mod.fill_shards = original
    assert first.computed_rows == 2 and len(open_store(out).missing_shards()) == 3
    with pytest.raises(FileExistsError, match="--resume"):
        run_extract(_cfg(), manifest, out=out, progress=False)
    second = run_extract(_cfg(), manifest, out=out, resume=True, progress=False)
    assert second.computed_rows == 8 - 2
    a, b = open_store(out), open_store(full.store)
    for name in a.arrays:
        got, want = a.read(range(8), [name])[name], b.read(range(8), [name])[name]
        np.testing.assert_array_equal(got, want)


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=2)
    out = str(tmp_path / "m.zarr")
    run_extract(_cfg(), manifest, out=out, progress=False)
    with pytest.raises(ValueError, match="storage_dtype"):
        run_extract(_cfg(storage_dtype="float32"), manifest, out=out, resume=True, progress=False)


def test_cache_root_reuses_a_store(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=3)
    root = str(tmp_path / "team-cache")
    first = run_extract(_cfg(), manifest, cache_root=root, progress=False)
    again = run_extract(_cfg(), manifest, cache_root=root, progress=False)
    assert first.computed_rows == 5 and not first.reused
    assert again.reused and again.computed_rows == 0 and again.store == first.store


def test_cache_root_subset_and_superset_reuse_the_rows_they_share(tmp_path: Path) -> None:
    root = str(tmp_path / "team-cache")
    run_extract(_cfg(), make_dataset(tmp_path, n=3), cache_root=root, progress=False)
    manifest = make_dataset(tmp_path, n=5)  # the same 3 images and 2 references, plus 2
    bigger = run_extract(_cfg(), manifest, cache_root=root, progress=False)
    # shards of 2: [d0 d1] known, [d2 d3] half known, [d4 ref0] half known, [ref1] known
    assert (bigger.computed_rows, bigger.copied_rows) == (2, 5)
    alone = run_extract(_cfg(), manifest, out=str(tmp_path / "alone.zarr"), progress=False)
    with open_store(bigger.store) as a, open_store(alone.store) as b:
        assert a.verify().ok and a.image_ids == b.image_ids
        assert a.read(slice(None))["nss"].tobytes() == b.read(slice(None))["nss"].tobytes()
        assert np.array_equal(a.valid_size(slice(None)), b.valid_size(slice(None)))
    subset = run_extract(_cfg(), make_dataset(tmp_path, n=2), cache_root=root, progress=False)
    assert (subset.computed_rows, subset.copied_rows) == (0, 4)  # d0 d1 ref0 ref1: all known


def test_cli_records_failures_and_exits_nonzero(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=3, corrupt=True)
    out = tmp_path / "c.zarr"
    result = CliRunner().invoke(extract_main, [
        "--backbone", "nss", "--manifest", str(manifest), "--out", str(out),
        "--batch-size", "2", "--shard-size", "2",
    ])
    assert result.exit_code == 1, result.output
    assert "bad.png" in result.output and "1 image(s) failed" in result.output
    store = open_store(str(out))
    assert "bad.png" in store.failures
    assert store.written.sum() == store.n_rows - 1
    with pytest.raises(Exception, match="unwritten|missing|written"):
        store.read([store.row_of("bad.png")])


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=1)
    runner = CliRunner()
    res = runner.invoke(extract_main, ["--backbone", "sam_vit_x", "--manifest", str(manifest),
                                       "--out", str(tmp_path / "x.zarr")])
    assert res.exit_code == 2 and "sam_vit_x" in res.output
    res = runner.invoke(extract_main, ["--backbone", "nss", "--manifest", str(manifest),
                                       "--out", str(tmp_path / "x.zarr"), "--views", "hflip"])
    assert res.exit_code == 2 and "identity" in res.output
    res = runner.invoke(extract_main, ["--backbone", "nss", "--manifest", str(manifest)],
                        env={"IQA_CACHE_ROOT": ""})
    assert res.exit_code == 2 and "--out" in res.output


def test_cli_threads_set_the_forward_threads_and_leave_the_store_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--threads N`` runs the forward on N torch threads; the store is the same bytes."""
    import extract.run as run_mod

    manifest = make_dataset(tmp_path, n=3)
    seen: list[int] = []
    real = run_mod.run_extract

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "run_extract", spy)
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            res = CliRunner().invoke(extract_main, [
                "--backbone", "nss", "--manifest", str(manifest), "--batch-size", "2",
                "--out", str(tmp_path / f"t{n}.zarr"), "--threads", str(n)])
            assert res.exit_code == 0, res.output
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]
    one, two = (open_store(str(tmp_path / f"t{n}.zarr")) for n in (1, 2))
    assert one.fingerprint == two.fingerprint
    for name in one.arrays:
        rows = range(one.n_rows)
        assert one.read(rows, [name])[name].tobytes() == two.read(rows, [name])[name].tobytes()


@pytest.mark.slow
def test_local_cluster_equals_one_process(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path, n=6)
    one = open_store(run_extract(_cfg(), manifest, out=str(tmp_path / "one.zarr"),
                                 progress=False).store)
    two = open_store(run_extract(_cfg(), manifest, out=str(tmp_path / "two.zarr"),
                                 cluster=Cluster(workers=2), progress=False).store)
    assert not two.missing_shards()
    for name in one.arrays:
        a = one.read(range(one.n_rows), [name])[name]
        b = two.read(range(two.n_rows), [name])[name]
        assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(one.valid_size(range(8)), two.valid_size(range(8)))
