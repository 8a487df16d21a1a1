"""In-memory backend: numpy arrays in a per-process registry keyed by URL (tests, scratch).

Every open of one URL in one process shares the same arrays; forked children inherit a
copy, other processes see nothing, so its capabilities say it cannot be shared.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np

from cache.backends import STRING, Backend, Capabilities, RowSelection, StoreError

_MEMORY: dict[str, dict[str, Any]] = {}


class MemoryBackend(Backend):
    """numpy arrays in a registry keyed by URL, shared by every open of that URL."""

    name = "memory"
    capabilities = Capabilities(
        parallel_writers=False, locking="in-process", random_access=True, shared=False
    )

    def __init__(self, url: str, mode: str, storage_options: dict[str, Any] | None = None):
        super().__init__(url, mode)
        if url not in _MEMORY:
            if mode != "w":
                raise StoreError(f"no in-memory store at {url}")
            _MEMORY[url] = {"arrays": {}, "attrs": {}}
        self._data = _MEMORY[url]

    @classmethod
    def exists(cls, url: str, storage_options: dict[str, Any] | None = None) -> bool:
        return bool(_MEMORY.get(url, {}).get("attrs"))

    @classmethod
    def occupied(cls, url: str, storage_options: dict[str, Any] | None = None) -> bool:
        return bool(_MEMORY.get(url, {}).get("arrays"))

    @staticmethod
    def remove(url: str) -> None:
        _MEMORY.pop(url, None)

    def create_array(self, name, shape, dtype, *, chunks, shard_rows=None, fill_value=None,
                     codec="none", dims=None):
        np_dtype = object if dtype == STRING else np.dtype(dtype)
        fill = "" if dtype == STRING else (0 if fill_value is None else fill_value)
        self._data["arrays"][name] = np.full(shape, fill, dtype=np_dtype)
        return {"codec": "none (in memory)"}

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        arr = self._data["arrays"][name]
        arr[start : start + len(data)] = data

    def read(self, name: str, rows: RowSelection) -> np.ndarray:
        return self._data["arrays"][name][rows].copy()

    def read_attrs(self) -> dict[str, Any]:
        return copy.deepcopy(self._data["attrs"])

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        self._data["attrs"] = json.loads(json.dumps(attrs))

    def stored_bytes(self) -> int:
        return int(sum(a.nbytes for a in self._data["arrays"].values()))

    def file_count(self) -> int:
        return 0
