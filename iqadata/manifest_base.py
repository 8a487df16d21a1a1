"""What the manifest and split-file modules share: their error, text decoding, file hashes.

``atomic_write_text`` (temporary file, then rename) is ``cache.outputs``'s, re-exported.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cache.outputs import atomic_write_text

__all__ = ["ManifestError", "atomic_write_text", "decode_text", "file_sha256"]


class ManifestError(ValueError):
    """A manifest or split file is malformed or inconsistent."""


def decode_text(path: Path) -> str:
    """A file's text (UTF-8, optional BOM); undecodable bytes fail naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ManifestError(
            f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason})"
        ) from None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: list[Path], workers: int = 4) -> list[str]:
    """sha256 of each file, read by a few threads (hashing releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(file_sha256, paths))
