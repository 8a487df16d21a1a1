"""Output paths that never delete: every command that writes checks its target here first.

The rule, for every command that writes (extract, export, import, train, eval, demo, data
import, split): an output is written only when it does not exist, is an empty folder, or
is an output of the same kind that this project wrote before. Anything else is refused
with a message naming the path, before anything is written.

* Folders of results (a training run, a report, the demo set, split files) carry a small
  marker file, ``.iqa-output.json`` = ``{"kind": ...}`` (no timestamps, so two runs give the
  same bytes); a folder with the marker of the same kind may be written again.
* Single files (a manifest) are recognised by a predicate (its first line).
* Feature stores are checked by the store itself (``cache.create.create_store``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cache.console import UsageProblem

MARKER = ".iqa-output.json"


class OutputPathError(UsageProblem):
    """An output path holds something this project did not write."""


def _marker_kind(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / MARKER).read_text(encoding="utf-8")).get("kind"))
    except (OSError, ValueError, AttributeError):
        return None


def check_output_dir(path: str | os.PathLike[str], kind: str) -> Path:
    """Fail unless ``path`` is missing, an empty folder, or a ``kind`` output folder.

    Raises:
        OutputPathError: naming the path and what it holds.
    """
    folder = Path(path)
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise OutputPathError(f"output {folder} exists and is not a folder; choose a new path")
    if not any(folder.iterdir()):
        return folder
    found = _marker_kind(folder)
    if found == kind:
        return folder
    what = f"a {found} output" if found else "files this command did not write"
    raise OutputPathError(
        f"output folder {folder} already holds {what}; nothing was written. Choose a new "
        f"or empty folder (it is never cleared)"
    )


def prepare_output_dir(path: str | os.PathLike[str], kind: str) -> Path:
    """Check ``path`` (see :func:`check_output_dir`), create it and mark it as ``kind``."""
    folder = check_output_dir(path, kind)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.exists():
        marker.write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")
    return folder


def check_output_file(
    path: str | os.PathLike[str], accept: Callable[[Path], bool], what: str
) -> Path:
    """Fail unless ``path`` is missing or a file ``accept`` recognises as a ``what``.

    Raises:
        OutputPathError: naming the path.
    """
    target = Path(path)
    if not target.exists():
        return target
    if target.is_dir():
        raise OutputPathError(f"output {target} is a folder; give a file path for the {what}")
    if not accept(target):
        raise OutputPathError(
            f"output file {target} exists and is not a {what}; nothing was written. "
            "Choose a new path (existing files are never overwritten)"
        )
    return target


def first_line_is(prefix: str) -> Callable[[Path], bool]:
    """A predicate: the file's first line starts with ``prefix``."""

    def accept(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.readline().startswith(prefix)
        except OSError:
            return False

    return accept


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block ends cleanly.

    Readers see the old file or the new one, never half of one; on an error the
    temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
