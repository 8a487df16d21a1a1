"""Safe weight loading and weight hashing for every backbone.

One loader for all checkpoints: ``.safetensors`` through safetensors, ``.pt``/``.pth``/
``.tar``/``.bin`` through ``torch.load(map_location="cpu", weights_only=True)`` (no
arbitrary pickles: a shared cache is a trust boundary). Loading is strict by default
and the error lists missing, unexpected and mis-shaped keys. Hashes of weight files are
cached per (path, mtime, size) so a 2.5 GB checkpoint is hashed once per process.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from iqadata.manifest import file_sha256

TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt")
_LIST_LIMIT = 12
_HASH_CACHE: dict[tuple[str, int, int], str] = {}

KeyMap = Callable[[str], "str | None"]


class WeightsError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


def _check_file(path: Path) -> None:
    if not path.exists():
        raise WeightsError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise WeightsError(f"checkpoint is not a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"checkpoint is empty (0 bytes): {path}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file (truncated?): {err}") from err


def _read_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(path):
            raise _unreadable(path, err) from err
        raise WeightsError(
            f"{path}: refused: the file holds objects other than tensors and plain "
            f"containers (loaded with weights_only=True): {_first_line(err)}"
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise _unreadable(path, err) from err


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _unreadable(path: Path, err: BaseException) -> WeightsError:
    return WeightsError(
        f"{path}: not a readable PyTorch checkpoint (truncated or not a checkpoint): "
        f"{_first_line(err)}"
    )


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict: the object itself, or its ``state_dict``/``model`` entry."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: no state dict found (got {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: the state dict holds no tensors")
    return tensors


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict on the CPU.

    Raises:
        WeightsError: the file is missing, empty, truncated, not a checkpoint, or of an
            unknown type; the message names the path.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in TORCH_SUFFIXES:
        return _unwrap(_read_torch(path), path)
    raise WeightsError(
        f"{path}: unknown checkpoint type {path.suffix!r}; "
        f"expected .safetensors or one of {TORCH_SUFFIXES}"
    )


def _apply_key_map(state: Mapping[str, torch.Tensor], key_map: KeyMap) -> dict[str, torch.Tensor]:
    """Rename keys with ``key_map``; a key mapped to None is dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key_map(key)
        if new is not None:
            out[new] = value
    return out


def _short(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LIST_LIMIT else "")


def _mismatch_report(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    lines = []
    if missing:
        lines.append(f"missing keys: {_short(missing)}")
    if unexpected:
        lines.append(f"unexpected keys: {_short(unexpected)}")
    if shapes:
        lines.append(f"shape mismatch: {_short(shapes)}")
    return lines


def load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True, where: str = ""
) -> None:
    """Load an in-memory state dict with the same checks as :func:`load_weights`."""
    problems = _mismatch_report(model, state)
    fatal = problems if strict else [p for p in problems if p.startswith("shape")]
    if fatal:
        raise WeightsError(f"{where or 'state dict'} does not fit the model: " + "; ".join(fatal))
    model.load_state_dict(dict(state), strict=strict)


def load_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    strict: bool = True,
    key_map: KeyMap | None = None,
) -> nn.Module:
    """Load a checkpoint file into ``model`` on the CPU, safely and (by default) strictly.

    Args:
        model: the module to fill.
        path: ``.safetensors`` or a ``torch.save`` file (``.pt``, ``.pth``, ``.tar``...);
            a dict holding the weights under ``state_dict`` or ``model`` is unwrapped.
        strict: every model key must be present and no extra key may remain.
        key_map: renames checkpoint keys to model keys; return None to drop a key.

    Returns:
        The same model.

    Raises:
        WeightsError: naming the file and listing missing/unexpected/mis-shaped keys.
    """
    state = read_state_dict(path)
    if key_map is not None:
        state = _apply_key_map(state, key_map)
    load_state(model, state, strict=strict, where=str(path))
    return model


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a weight file, or of a directory's files (names and contents), cached.

    The cache key is (resolved path, mtime in ns, size), so an unchanged file is hashed
    once per process and a replaced file is hashed again.
    """
    path = Path(path).resolve()
    if path.is_dir():
        return _tree_sha256(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = file_sha256(path)
    return _HASH_CACHE[key]


def _tree_sha256(root: Path) -> str:
    """Hash of every file under ``root``: relative name and content hash, sorted by name."""
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(weights_sha256(file).encode() + b"\n")
    return digest.hexdigest()
