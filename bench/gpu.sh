#!/usr/bin/env bash
# The GPU check of the extraction stage (bench/bench_gpu.py): prints one JSON object, and
# writes it to $OUT/gpu.json when OUT is set. Finishes in under 8 minutes: items still to
# run after --budget seconds (default 420) are skipped and say so; a hard timeout of 470 s
# stops anything that hangs. Random-init weights (speed does not depend on them).
#
#   bench/gpu.sh fetch           # here, with PyPI: wheels the GPU image lacks -> bench/wheels
#   bench/gpu.sh [ARGS...]       # on the GPU machine; ARGS go to bench_gpu.py (--compile, ...)
#
# On a machine without the project's dependencies, the wheels in bench/wheels (carry the
# folder along) are installed first, offline. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=bench/wheels
# What the GPU image (Python 3.12, torch, numpy, pillow, timm, h5py, scikit-image, ...) lacks.
NEEDED="segment-anything==1.0 zarr==3.1.6 numcodecs==0.16.6 donfig google-crc32c dask==2026.8.0
distributed==2026.8.0 partd locket tblib tornado zict diffusers==0.42.1"

if [[ "${1:-}" == "fetch" ]]; then
    # shellcheck disable=SC2086
    "$PY" -m pip download --quiet --dest "$WHEELS" --only-binary=:all: --no-deps \
        --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 $NEEDED
    ls "$WHEELS"
    exit 0
fi

export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1
if ! "$PY" -c "import segment_anything, zarr, dask.distributed, diffusers" 2>/dev/null; then
    if [[ ! -d "$WHEELS" ]]; then
        echo "gpu.sh: dependencies missing and no $WHEELS folder (run 'bench/gpu.sh fetch')" >&2
        exit 2
    fi
    "$PY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
fi
exec timeout 470 "$PY" bench/bench_gpu.py "$@"
