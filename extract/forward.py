"""The one batched forward of stage 1: extraction and scoring run the same numbers.

``forward_batches`` runs a backbone over per-image inputs, ``batch_size`` at a time, in
order; ``to_stored`` turns its outputs into the values a store keeps. ``extract.shards``
streams a store's shards through the same ``DeviceRunner`` that ``forward_batches`` uses, so
a feature computed during extraction and one computed while scoring a new image are the
same numbers whenever the batches are the same.

On a CUDA device the runner overlaps everything it can: inputs arrive as pinned uint8
tensors (``Backbone.prepare`` in the decode threads), are copied on a side stream while
the previous batch runs, are finished on the device (``Backbone.finish``: normalise, pad),
and the outputs come back to pinned host memory one batch behind, already cast to the
storage dtype. On a CPU every step runs in place, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cache.shard_writer import storage_values

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}


class BatchSizeError(ValueError):
    """The batch does not fit on the device."""


def autocast(device: torch.device, dtype: str) -> Any:
    """Autocast context for ``dtype`` (``fp32`` = none)."""
    target = AUTOCAST_DTYPES[dtype]
    if target is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=target)


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for neither)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _weights_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """bf16/fp16 when the weights themselves were cast (``configure(cast_weights=True)``)."""
    for p in module.parameters():
        return p.dtype if p.dtype in (torch.bfloat16, torch.float16) else None
    return None


def finish_inputs(backbone: Any, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The model input for a batch: ``finish`` for uint8 ``prepare`` outputs, else a stack."""
    if all(t.dtype == torch.uint8 for t in inputs):
        return backbone.finish(inputs)
    return torch.stack(inputs)  # (B, 3, H, W): already preprocessed


@dataclass
class _Flight:
    """One batch on its way through the device."""

    key: Any
    inputs: list[torch.Tensor]  # host tensors, alive until their copy is done
    on_device: list[torch.Tensor]
    uploaded: Any = None  # CUDA event: inputs copied
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    done: Any = None  # CUDA event: outputs copied back


class DeviceRunner:
    """Runs batches of per-image inputs through a backbone, one batch ahead on CUDA.

    Args:
        backbone: a frozen backbone on its device.
        dtype: ``fp32``, ``bf16`` or ``fp16``: autocast, or the input cast when the weights
            were cast (``configure``).
        out_dtype: the numpy dtype outputs come back in (cast on CUDA devices, where it
            halves the copy for float16 stores; on a CPU numpy casts, as a store would).
    """

    def __init__(self, backbone: Any, *, dtype: str, out_dtype: str = "float32") -> None:
        self.backbone, self.dtype, self.out_dtype = backbone, dtype, out_dtype
        self.device = device_of(backbone)
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.cast = _weights_dtype(backbone)
        self.pad_to: int | None = getattr(backbone, "compiled_batch", None)

    def map(
        self, batches: Iterable[tuple[Any, list[torch.Tensor]]]
    ) -> Iterator[tuple[Any, dict[str, np.ndarray] | None]]:
        """Yield ``(key, outputs)`` per ``(key, inputs)`` in order (None for no inputs)."""
        items = iter(batches)
        nxt = self._upload(next(items, None))
        running: _Flight | None = None
        while nxt is not None:
            current = nxt
            nxt = self._upload(next(items, None))  # this copy overlaps the forward below
            self._launch(current)
            if running is not None:
                yield running.key, self._collect(running)
            running = current
        if running is not None:
            yield running.key, self._collect(running)

    def _upload(self, item: tuple[Any, list[torch.Tensor]] | None) -> _Flight | None:
        if item is None:
            return None
        key, inputs = item
        if not self.cuda or not inputs:
            return _Flight(key, inputs, [t.to(self.device) for t in inputs])
        assert self.copy_stream is not None
        with torch.cuda.stream(self.copy_stream):
            on_device = [t.to(self.device, non_blocking=True) for t in inputs]
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        return _Flight(key, inputs, on_device, uploaded=event)

    def _launch(self, flight: _Flight) -> None:
        if not flight.on_device:
            return
        if flight.uploaded is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(flight.uploaded)
            for t in flight.on_device:
                t.record_stream(stream)  # the side stream's memory is used on this one
        n = len(flight.on_device)
        with torch.inference_mode():
            x = finish_inputs(self.backbone, flight.on_device)  # (B, 3, H, W) float32
            x = x.to(self.cast) if self.cast is not None else x
            if self.pad_to is not None and n < self.pad_to:  # compiled: one static shape
                x = torch.cat([x, x[-1:].expand(self.pad_to - n, *x.shape[1:])])
            with autocast(self.device, "fp32" if self.cast else self.dtype):
                out = self.backbone.forward_features(x)
        flight.outputs = {name: self._to_host(v[:n]) for name, v in out.items()}
        flight.on_device = []
        if self.cuda:
            flight.done = torch.cuda.Event()
            flight.done.record(torch.cuda.current_stream(self.device))

    def _to_host(self, v: torch.Tensor) -> torch.Tensor:
        if not self.cuda:
            return v.float()
        v = v.to(_TORCH_DTYPES[self.out_dtype])
        host = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
        return host.copy_(v, non_blocking=True)

    def _collect(self, flight: _Flight) -> dict[str, np.ndarray] | None:
        if not flight.outputs:
            return None
        if flight.done is not None:
            flight.done.synchronize()
        return {k: v.numpy().astype(self.out_dtype, copy=False) for k, v in flight.outputs.items()}


def forward_batches(
    backbone: Any,
    tensors: Sequence[torch.Tensor],
    *,
    batch_size: int,
    dtype: str,
    device: torch.device | str | None = None,
    out_dtype: str = "float32",
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``backbone`` over per-image inputs in order, ``batch_size`` at a time.

    Contract: the inputs are either ``backbone.preprocess`` outputs (float ``(3, H, W)``)
    or ``backbone.prepare`` outputs (uint8, finished on the device by ``backbone.finish``);
    both give the same numbers. Batches are ``tensors[0:b], tensors[b:2b], ...``, so the
    same inputs, batch size, dtype and device give the same bits. ``dtype`` is the compute
    dtype (autocast, or the input cast for cast weights). Rounding to what a store keeps is
    ``to_stored``'s job; scoring applies it too.

    Args:
        device: where the backbone is (checked; the backbone is not moved).
        out_dtype: numpy dtype of the outputs (``float32``, or a store's ``float16``).
        on_batch: called with the number of rows after each batch.

    Returns:
        ``{name: (len(tensors), *shape)}`` for every declared output.
    """
    if device is not None and torch.device(device) != device_of(backbone):
        raise ValueError(f"the backbone is on {device_of(backbone)}, not on {device}")
    runner = DeviceRunner(backbone, dtype=dtype, out_dtype=out_dtype)
    batches = ((s, list(tensors[s : s + batch_size])) for s in range(0, len(tensors), batch_size))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in backbone.outputs}
    for _, out in runner.map(batches):
        assert out is not None
        for name in parts:
            parts[name].append(out[name])
        if on_batch is not None:
            on_batch(len(next(iter(out.values()))))
    if not tensors:
        return {n: np.empty((0, *s), out_dtype) for n, s in backbone.outputs.items()}
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def to_stored(
    features: Mapping[str, np.ndarray], storage_dtype: str, keepbits: int | None = None
) -> dict[str, np.ndarray]:
    """The values a store with ``storage_dtype`` (and bit-rounding ``keepbits``) keeps."""
    return {name: storage_values(v, storage_dtype, keepbits) for name, v in features.items()}


def configure(
    backbone: Any,
    *,
    dtype: str,
    cast_weights: bool = False,
    compile_batch: int | None = None,
    compile_backend: str = "inductor",
) -> Any:
    """Cast the weights to ``dtype`` (instead of autocast) and/or compile the forward.

    Args:
        cast_weights: run in ``dtype`` throughout (weights and activations), as
            segment-anything-fast does; no effect for ``fp32``.
        compile_batch: ``torch.compile`` the forward for this static batch size (partial
            batches are padded to it, their padding dropped).
        compile_backend: ``torch.compile``'s backend (tests use ``"eager"``).
    """
    if cast_weights and AUTOCAST_DTYPES[dtype] is not None:
        backbone.to(AUTOCAST_DTYPES[dtype])
    if compile_batch is not None:
        backbone.forward_features = torch.compile(
            backbone.forward_features, dynamic=False, backend=compile_backend
        )
        backbone.compiled_batch = compile_batch
    return backbone


def kernel_fields(backbone: Any, *, dtype: str, cast_weights: bool, compiled: bool) -> dict:
    """What besides weights, preprocessing and dtype changes the bits (for fingerprints).

    Empty for the reference kernels, so stores made before these options keep their
    fingerprints.
    """
    fields = dict(backbone.kernel_config()) if hasattr(backbone, "kernel_config") else {}
    if cast_weights and AUTOCAST_DTYPES[dtype] is not None:
        fields["cast_weights"] = True
    if compiled:
        fields["compile"] = True
    return fields


def largest_fitting_batch(
    probe: Callable[[int], int], batch_size: int, free_bytes: int, where: str
) -> None:
    """Raise ``BatchSizeError`` with the largest batch that fits, unless ``batch_size`` fits.

    Args:
        probe: runs one batch of the given size and returns its peak bytes, or raises
            ``torch.OutOfMemoryError``.
        free_bytes: device memory free before the probes.
        where: the device, for the message.
    """
    try:
        probe(batch_size)
        return
    except torch.OutOfMemoryError:
        pass
    try:
        per_image = max(1, probe(1))
    except torch.OutOfMemoryError:
        raise BatchSizeError(f"{where}: not even one image fits in device memory") from None
    fit = max(1, int(0.9 * free_bytes) // per_image)
    raise BatchSizeError(
        f"batch size {batch_size} does not fit on {where} ({per_image / 2**30:.2f} GiB per "
        f"image, {free_bytes / 2**30:.1f} GiB free): use --batch-size {min(fit, batch_size - 1)}"
        " or less"
    )


_FITTED: set[tuple[int, int, str]] = set()


def check_batch_fits(backbone: Any, batch_size: int, dtype: str) -> None:
    """On CUDA, run one zero batch before the first real one; a clear error if it fails.

    The probe doubles as the warm-up (kernel selection, compilation). Done once per
    backbone, batch size and dtype in a process; nothing to do on a CPU.
    """
    device = device_of(backbone)
    key = (id(backbone), batch_size, dtype)
    if device.type != "cuda" or key in _FITTED:
        return
    h, w = backbone.preprocessing()["input_size"]
    runner = DeviceRunner(backbone, dtype=dtype)

    def probe(n: int) -> int:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        zeros = [torch.zeros(3, h, w) for _ in range(n)]
        for _ in runner.map([(0, zeros)]):
            pass
        return torch.cuda.max_memory_allocated(device) - base

    free, _ = torch.cuda.mem_get_info(device)
    largest_fitting_batch(probe, batch_size, free, str(device))
    _FITTED.add(key)
