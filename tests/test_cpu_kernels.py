"""Portable CPU kernels: a head trained on an AVX-512 CPU and on an AVX2-only CPU comes out
the same, bit for bit (``cache.kernels``).

Another CPU kind is emulated on this one by capping the kernel libraries at AVX2 the way an
AVX2-only machine would run them (oneDNN's and MKL's instruction-set caps, ATen's dispatch
level, OpenBLAS's Haswell kernels). The same training run in a fresh process for each
"machine" must write identical checkpoints, metrics and curves with ``--cpu-kernels
portable`` (the default), and, as a check that the emulation shows the difference at all,
different ones with ``--cpu-kernels native``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny import write_labels

from cache.create import create_store
from cache.layout import StoreLayout
from cache.store import ArraySpec
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow

AVX2_MACHINE = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                "ATEN_CPU_CAPABILITY": "avx2", "OPENBLAS_CORETYPE": "Haswell"}
REFS = [f"refs/r{i}.png" for i in range(4)]
DIST = [f"dist/r{i}_{k}.png" for i in range(4) for k in range(8)]


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


avx512_only = pytest.mark.skipif(
    not _has_avx512(), reason="another CPU kind is emulated by capping AVX-512 at AVX2"
)


def test_commands_run_numpys_openblas_at_its_avx2_kernels() -> None:
    """OpenBLAS picks its kernels from the CPU when numpy loads it: a command (which calls
    ``prepare`` first) runs the Haswell ones on every x86-64 CPU, and a process that loaded
    numpy before ``prepare`` is told its kernels are not the portable ones."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = ("import warnings; from cache import kernels; kernels.prepare(); import numpy;"
            " print(kernels.blas_core())")
    core = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()
    if not core:
        pytest.skip("numpy's BLAS here is not an OpenBLAS that names its kernels")
    assert core == "Haswell"
    late = ("import numpy, warnings; from cache import kernels; kernels.prepare()\n"
            "with warnings.catch_warnings(record=True) as seen, kernels.cpu_kernels('portable')"
            " as used:\n    warnings.simplefilter('always')\n"
            "print(used['portable'], kernels.blas_core() == 'Haswell',"
            " any('OpenBLAS' in str(w.message) for w in seen))")
    done = subprocess.run([sys.executable, "-c", late], env=env, capture_output=True,
                          text=True, check=True).stdout.split()
    if not _has_avx512():
        pytest.skip("on an AVX2-only CPU OpenBLAS may pick the Haswell kernels itself")
    assert done == ["False", "False", "True"]


def test_the_test_process_runs_the_portable_blas_too() -> None:
    """conftest calls ``prepare`` before numpy loads (pytest plugins that import numpy, such
    as zarr's, are disabled in setup.cfg), so in-process commands run the portable BLAS."""
    from cache.kernels import blas_core

    assert blas_core() in ("", "Haswell")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kernels")
    rng = np.random.default_rng(0)
    quality = {d: float(rng.uniform(0, 1)) for d in DIST}
    rows = tuple(ManifestRow(image=d, score=1 + 4 * quality[d], group=d[5:7], ref=REFS[int(d[6])])
                 for d in DIST)
    train = tuple(d for d in DIST if d[6] in "01")
    val = tuple(d for d in DIST if d[6] == "2")
    test = tuple(d for d in DIST if d[6] == "3")
    write_labels(root, Manifest(DatasetInfo(name="toy", score_range=(1.0, 5.0)), rows),
                 (train, val, test), root / "split.json")
    ids = REFS + DIST
    layout = StoreLayout([ArraySpec("embed", (24, 8, 8))], ids, shard_size=8)
    store = create_store(str(root / "f.zarr"), layout, fingerprint_fields={"backbone": "toy"})
    for k in range(store.n_shards):
        part = list(store.shard_rows(k))
        embed = rng.normal(size=(len(part), 24, 8, 8))
        embed[:, :4] += np.array([quality.get(ids[r], 1.0) for r in part])[:, None, None, None]
        sizes = np.tile([8, 8], (len(part), 1))
        store.writer.write_shard(k, {"embed": embed}, sizes, sizes)
    store.close()
    return root


def _train(
    data: Path, out: Path, machine: dict[str, str], mode: str
) -> tuple[bytes, dict, bytes]:
    env = {k: v for k, v in os.environ.items() if k not in AVX2_MACHINE and k != "MKL_CBWR"}
    env |= machine
    args = ["--head", "sfem_fr", "--features", str(data / "f.zarr"), "--manifest",
            str(data / "manifest.csv"), "--split", str(data / "split.json"), "--epochs", "3",
            "--batch-size", "8", "--lr", "1e-3", "--threads", "1", "--set", "width=16",
            "--set", "scales=[1, 2]", "--set", "pool_size=4", "--cpu-kernels", mode,
            "--out", str(out)]
    code = "import sys; from heads.cli import main; sys.argv[0] = 'iqa-train-head'; main()"
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    run = out / "run_00"
    return (run / "model.pt").read_bytes(), metrics, (run / "curves.csv").read_bytes()


@avx512_only
def test_portable_kernels_train_the_same_bits_on_another_cpu_kind(data: Path) -> None:
    here, here_metrics, here_curves = _train(data, data / "here", {}, "portable")
    there, there_metrics, there_curves = _train(data, data / "there", AVX2_MACHINE, "portable")
    assert here_metrics["cpu_kernels"]["onednn"] is False
    assert here_metrics["cpu_kernels"]["aten_capability"] == "AVX2"
    assert here_metrics["cpu_kernels"]["mkl_cbwr"] == "COMPATIBLE"
    assert here_metrics["runs"] == there_metrics["runs"]
    assert here == there
    assert here_curves == there_curves


@avx512_only
def test_native_kernels_differ_there_so_the_emulation_is_real(data: Path) -> None:
    here, here_metrics, _ = _train(data, data / "native_here", {}, "native")
    there, _, _ = _train(data, data / "native_there", AVX2_MACHINE, "native")
    assert here_metrics["cpu_kernels"]["onednn"] is True
    assert here != there
