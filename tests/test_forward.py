"""The shared batched forward: same numbers for float and uint8 inputs, rounding, batch fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cache.shard_writer import storage_values
from extract.forward import (
    BatchSizeError,
    DeviceRunner,
    configure,
    forward_batches,
    kernel_fields,
    largest_fitting_batch,
    to_stored,
)
from extract.registry import get_backbone

TINY_SAM = {"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 2,
            "global_attn_indexes": (1,)}


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(30, 53), (70, 23), (45, 45), (64, 64), (12, 80)]
    return [rng.integers(0, 256, (*shapes[i % 5], 3), dtype=np.uint8) for i in range(n)]


def _sam() -> torch.nn.Module:
    torch.manual_seed(0)
    model = get_backbone("sam_vit_b")(random_init=True, **TINY_SAM)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.parametrize("name", ["sam", "nss"])
def test_uint8_and_float_inputs_give_the_same_bits(name: str, one_thread: None) -> None:
    model = _sam() if name == "sam" else get_backbone("nss")(size=32, grid=8)
    images = _images(5)
    floats = [model.preprocess(im)[0] for im in images]
    raw = [model.prepare(im)[0] for im in images]
    assert all(t.dtype == torch.uint8 for t in raw)
    a = forward_batches(model, floats, batch_size=2, dtype="fp32")
    b = forward_batches(model, raw, batch_size=2, dtype="fp32")
    with torch.inference_mode():
        direct = model.forward_features(torch.stack(floats[2:4]))  # the second batch
    for key, shape in model.outputs.items():
        assert a[key].shape == (5, *shape) and a[key].dtype == np.float32
        assert a[key].tobytes() == b[key].tobytes()
        assert a[key][2:4].tobytes() == direct[key].numpy().tobytes()


def test_out_dtype_and_to_stored_round_as_a_store(one_thread: None) -> None:
    model = get_backbone("nss")(size=32, grid=8)
    inputs = [model.prepare(im)[0] for im in _images(3)]
    full = forward_batches(model, inputs, batch_size=3, dtype="fp32")
    half = forward_batches(model, inputs, batch_size=3, dtype="fp32", out_dtype="float16")
    assert half["nss"].dtype == np.float16
    assert half["nss"].tobytes() == full["nss"].astype(np.float16).tobytes()
    stored = to_stored(full, "float16", keepbits=5)
    want = storage_values(full["nss"], "float16", 5)
    assert stored["nss"].tobytes() == want.tobytes()
    assert not np.array_equal(stored["nss"], half["nss"])  # bit-rounding did something


def test_on_batch_and_empty_input(one_thread: None) -> None:
    model = get_backbone("nss")(size=32, grid=8)
    inputs = [model.prepare(im)[0] for im in _images(5)]
    seen: list[int] = []
    forward_batches(model, inputs, batch_size=2, dtype="fp32", on_batch=seen.append)
    assert seen == [2, 2, 1]
    empty = forward_batches(model, [], batch_size=2, dtype="fp32")
    assert empty["nss"].shape == (0, *model.outputs["nss"])
    with pytest.raises(ValueError, match="the backbone is on cpu"):
        forward_batches(model, inputs, batch_size=2, dtype="fp32", device="meta")


def test_runner_keeps_order_and_passes_markers(one_thread: None) -> None:
    model = get_backbone("nss")(size=32, grid=8)
    x = [model.prepare(im)[0] for im in _images(4)]
    items = [("a", x[:2]), ("end", []), ("b", x[2:]), ("end2", [])]
    out = list(DeviceRunner(model, dtype="fp32").map(items))
    assert [k for k, _ in out] == ["a", "end", "b", "end2"]
    assert out[1][1] is None and out[0][1]["nss"].shape[0] == 2


def test_cast_weights_bf16_close_and_fingerprinted(one_thread: None) -> None:
    ref, low = _sam(), configure(_sam(), dtype="bf16", cast_weights=True)
    assert next(low.parameters()).dtype == torch.bfloat16
    assert low.pixel_mean.dtype == torch.bfloat16  # finish normalises in float32 anyway
    x = [ref.prepare(im)[0] for im in _images(2)]
    a = forward_batches(ref, x, batch_size=2, dtype="fp32")["embed"]
    b = forward_batches(low, x, batch_size=2, dtype="bf16")["embed"]
    assert np.linalg.norm(b - a) / np.linalg.norm(a) < 3e-2
    assert kernel_fields(low, dtype="bf16", cast_weights=True, compiled=False) == {
        "attention": "sdpa", "cast_weights": True}
    assert kernel_fields(ref, dtype="fp32", cast_weights=True, compiled=True) == {
        "attention": "sdpa", "compile": True}
    nss = get_backbone("nss")()
    assert kernel_fields(nss, dtype="fp32", cast_weights=False, compiled=False) == {}


def test_batch_size_error_names_one_that_fits() -> None:
    per_image = 3 << 30

    def probe(n: int) -> int:
        if n * per_image > 20 << 30:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return n * per_image

    largest_fitting_batch(probe, 6, 24 << 30, "cuda:0")  # fits: no error
    with pytest.raises(BatchSizeError, match=r"batch size 32 does not fit on cuda:0 .*"
                       r"use --batch-size 7 or less"):
        largest_fitting_batch(probe, 32, 24 << 30, "cuda:0")

    def never(n: int) -> int:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(BatchSizeError, match="not even one image fits"):
        largest_fitting_batch(never, 4, 1 << 30, "cuda:0")


def test_compiled_forward_sees_one_batch_shape(one_thread: None) -> None:
    """The compile wiring (static shape, padding dropped); the eager backend keeps it fast."""
    model = get_backbone("nss")(size=32, grid=8)
    inputs = [model.prepare(im)[0] for im in _images(3)]
    eager = forward_batches(model, inputs, batch_size=2, dtype="fp32")
    compiled = configure(get_backbone("nss")(size=32, grid=8), dtype="fp32", compile_batch=2,
                         compile_backend="eager")
    shapes: list[tuple[int, ...]] = []
    inner = compiled.forward_features
    compiled.forward_features = lambda x: shapes.append(tuple(x.shape)) or inner(x)
    got = forward_batches(compiled, inputs, batch_size=2, dtype="fp32")
    assert shapes == [(2, 3, 32, 32), (2, 3, 32, 32)]  # the last batch of one was padded
    assert got["nss"].shape == (3, *model.outputs["nss"])
    np.testing.assert_allclose(got["nss"], eager["nss"], rtol=1e-5, atol=1e-5)
