"""CPU kernels that give the same bits on every x86-64 machine, or the fastest this one has.

PyTorch picks its CPU kernels at run time from the instruction set of the machine, and
training magnifies the last-bit differences between them: the demo's ``sfem_fr`` heads,
trained on the same store with the same seed, reached a median test SRCC of 0.902 with the
AVX-512 kernels and 0.886 with oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, what an
AVX2-only machine runs). So a fresh clone's ``dvc repro`` gave other numbers, checkpoints and
plots on another CPU. Measured on this project's machine (AMD EPYC, AVX-512), one split of
the demo's ``sfem_fr``:

* the store (and the demo set) came out byte-identical with every cap below;
* ATen's own kernels at AVX2 (``ATEN_CPU_CAPABILITY=avx2``) and MKL capped at AVX2
  (``MKL_ENABLE_INSTRUCTIONS=AVX2``) left the checkpoint byte-identical;
* oneDNN capped at AVX2 changed it (the convolutions): that was the whole difference.

``portable`` (the default of every command) therefore runs

* without oneDNN (``torch.backends.mkldnn``): its convolutions are bitwise repeatable only on
  one platform, since it picks kernels and blocking from the instruction set and the cache
  sizes; PyTorch's own convolutions (NNPACK forward, im2col + BLAS backward) run instead;
* MKL in conditional-numerical-reproducibility mode ``MKL_CBWR=COMPATIBLE``: MKL gives the
  same results on Intel and AMD CPUs only on this branch (its ``AVX2`` branch promises that
  for Intel CPUs alone);
* ATen's vectorised kernels at AVX2 (``ATEN_CPU_CAPABILITY=avx2``), which every x86-64 CPU
  sold since 2013-2015 has (Intel Haswell, AMD Excavator and Zen);
* OpenBLAS, numpy's and scipy's BLAS, at its ``Haswell`` kernels (``OPENBLAS_CORETYPE``),
  what it runs on AVX2-only CPUs. It picks its kernels from the CPU too: between an AVX-512
  machine (``SkylakeX`` kernels) and an AVX2-only one, the demo's ``sfem_fr`` wrote the same
  checkpoints and predictions but metrics (``metrics.json``, the per-epoch ``curves.csv``
  and ``last.pt`` that holds them) differing in their last bits; with the cap, the
  AVX-512 machine wrote what the AVX2-only one had written, byte for byte (its DVC hash);
* a fixed number of threads (the commands' ``--threads``).

The environment variables take effect only if they are set before torch starts (OpenBLAS's:
before numpy starts), so the commands set them first (:func:`prepare`, called by
``cache.console.Command``); a variable the user set is left alone. Cost, measured on one
thread of the machine above: a training step of the demo's ``sfem_fr`` (batch 32) 29-35 ms
native, 60 ms portable (oneDNN off: 47-48 ms; MKL's compatible branch: the rest); a whole
demo split ~1.5x; the OpenBLAS cap nothing measurable (the demo's ``sfem_fr`` stage 101.5
CPU-seconds with it, 103.0 without). ``native`` keeps the machine's fastest kernels
(results then depend on the CPU). CUDA devices are not affected either way.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MODES = ("portable", "native")
PORTABLE_ENV = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}  # read as torch starts
PORTABLE_BLAS = {"OPENBLAS_CORETYPE": "Haswell"}  # read as numpy loads its OpenBLAS
PORTABLE_CAPABILITY = "AVX2"


class PortabilityWarning(UserWarning):
    """Portable CPU kernels were asked for but could not be set in this process."""


def prepare(mode: str = "portable") -> None:
    """Set the portable environment before torch starts (unset variables only).

    Call it first in a process (the commands do); after ``import torch`` it is too late for
    torch's variables, after ``import numpy`` for OpenBLAS's, and :func:`cpu_kernels` says
    so in its record and a warning.
    """
    if mode != "portable":
        return
    if "torch" not in sys.modules:
        for key, value in PORTABLE_ENV.items():
            os.environ.setdefault(key, value)
    if "numpy" not in sys.modules:
        for key, value in PORTABLE_BLAS.items():
            os.environ.setdefault(key, value)


@functools.cache
def blas_core() -> str:
    """The kernel family numpy's OpenBLAS runs (``"Haswell"``, ``"SkylakeX"``, ...), fixed
    when numpy loads it.

    "" when numpy's BLAS is not an OpenBLAS that says (another BLAS, or a build without
    the query).
    """
    import ctypes

    import numpy  # noqa: F401 - loads its BLAS

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return ""
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            query = getattr(lib, name, None)
            if query is not None:
                query.restype = ctypes.c_char_p
                return str(query().decode())
    return ""


def describe(mode: str, device: str) -> dict[str, Any]:
    """What this process runs on ``device``: the mode and the kernel settings in force."""
    import torch

    if not device.startswith("cpu"):
        return {"mode": mode, "device": device}
    return {
        "mode": mode,
        "device": device,
        "onednn": bool(torch.backends.mkldnn.enabled),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "threads": torch.get_num_threads(),
    }


def _problems(record: dict[str, Any]) -> list[str]:
    found = []
    if record["aten_capability"] != PORTABLE_CAPABILITY:
        found.append(f"ATen kernels are {record['aten_capability']}, not {PORTABLE_CAPABILITY}")
    if record["mkl_cbwr"] != PORTABLE_ENV["MKL_CBWR"]:
        found.append(f"MKL_CBWR is {record['mkl_cbwr'] or 'unset'}, not COMPATIBLE")
    core, want = blas_core(), PORTABLE_BLAS["OPENBLAS_CORETYPE"]
    if core and core.lower() != want.lower():
        found.append(f"numpy's OpenBLAS runs its {core} kernels, not {want}")
    return found


@contextmanager
def cpu_kernels(mode: str, device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Run the block with ``mode``'s CPU kernels; yields the record of what ran.

    ``portable`` turns oneDNN off for the block (and restores it after). If the process
    could not get the portable environment (torch started before :func:`prepare`, or a CPU
    without AVX2), the record has ``"portable": False`` and a warning names what differs.
    """
    if mode not in MODES:
        raise ValueError(f"cpu kernels must be one of {MODES}, got {mode!r}")
    import torch

    on_cpu = device.startswith("cpu")
    before = bool(torch.backends.mkldnn.enabled)
    torch.backends.mkldnn.enabled = not (on_cpu and mode == "portable")  # type: ignore[assignment]
    try:
        record = describe(mode, device)
        if on_cpu and mode == "portable":
            problems = _problems(record)
            record["portable"] = not problems
            if problems:
                warnings.warn(
                    "portable CPU kernels could not be set in this process ("
                    + "; ".join(problems)
                    + "): results may differ on other CPUs; set the variables before torch "
                    "and numpy are imported (cache.kernels.prepare)",
                    PortabilityWarning,
                    stacklevel=3,
                )
        yield record
    finally:
        torch.backends.mkldnn.enabled = before  # type: ignore[assignment]
