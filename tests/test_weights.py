"""Safe weight loading: round trips, strictness, clear errors, cached hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from extract.weights import WeightsError, load_weights, read_state_dict, weights_sha256


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    src = _model()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(src.state_dict(), str(path))
    else:
        torch.save(src.state_dict(), path)
    dst = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    load_weights(dst, path)
    assert _same(src, dst)


def test_wrapped_state_dict_and_key_map(tmp_path: Path) -> None:
    src = _model()
    state = {f"module.net.{k}": v for k, v in src.state_dict().items()}
    state["module.other.weight"] = torch.zeros(2)
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": state, "prompt_num": 10}, path)

    def key_map(key: str) -> str | None:
        return key.removeprefix("module.net.") if key.startswith("module.net.") else None

    dst = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    load_weights(dst, path, key_map=key_map)
    assert _same(src, dst)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    state = _model().state_dict()
    del state["0.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(
        WeightsError, match=r"missing keys: 0\.bias.*unexpected keys: extra\.weight"
    ):
        load_weights(_model(), path)
    load_weights(_model(), path, strict=False)  # tolerated when asked


def test_shape_mismatch_is_an_error_even_when_not_strict(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(nn.Sequential(nn.Linear(3, 5)).state_dict(), path)
    with pytest.raises(WeightsError, match=r"shape mismatch: 0\.bias \(5,\) vs model \(4,\)"):
        load_weights(nn.Sequential(nn.Linear(3, 4)), path, strict=False)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(_model().state_dict(), str(path))
    else:
        torch.save(_model().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match=rf"w\{suffix}: not a readable"):
        read_state_dict(path)


def test_missing_empty_foreign_and_pickled_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="checkpoint not found: .*absent.pth"):
        read_state_dict(tmp_path / "absent.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        read_state_dict(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="text.pth: not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "text.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown checkpoint type '.npz'"):
        read_state_dict(tmp_path / "w.npz")
    torch.save({"model": _Opaque()}, tmp_path / "obj.pth")
    with pytest.raises(WeightsError, match="obj.pth: refused"):
        read_state_dict(tmp_path / "obj.pth")


class _Opaque:
    """An arbitrary object: ``weights_only=True`` must refuse to unpickle it."""


def test_sha256_is_cached_per_mtime_and_size(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    assert weights_sha256(path) == hashlib.sha256(b"abc").hexdigest()
    stat = path.stat()
    path.write_bytes(b"abd")  # same size: the cache must not answer for the old content...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights_sha256(path) == hashlib.sha256(b"abc").hexdigest()  # ...unless mtime lies
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weights_sha256(path) == hashlib.sha256(b"abd").hexdigest()


def test_directory_hash_depends_on_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "d" / "unet").mkdir(parents=True)
    (tmp_path / "d" / "unet" / "w.bin").write_bytes(b"1")
    first = weights_sha256(tmp_path / "d")
    (tmp_path / "d" / "unet" / "w.bin").rename(tmp_path / "d" / "unet" / "v.bin")
    assert weights_sha256(tmp_path / "d") != first
