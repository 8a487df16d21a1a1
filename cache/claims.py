"""Writer claims: one live writer per shard (and per store creation), safe across crashes.

Zarr has no cross-process locks, and a shard is written whole by one writer. Writers that
share a store (two people extracting the same feature set into one cache root, dask
workers) therefore *claim* a shard before computing it: a small JSON file
``<store>/.iqa-claims/<name>.claim`` created exclusively (``O_EXCL`` on a local or NFS
path; on object stores a write-then-read-back check). It names its holder (host, pid,
process start time) and is touched while the holder works.

A claim is **stale** when its holder is gone: on the same host, the pid is not running (or
is another process, by start time); on another host, the file has not been touched for
``stale_after_s``. A stale claim is taken over. Claims are removed when their shard is
committed, and the claims folder when it is empty, so a finished store holds none.

Claims decide who computes a shard, not whether a store is correct: shard writes are
atomic, and two writers of one fingerprint write the same bytes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import psutil

from cache.backends import local_path

STALE_AFTER_S = 600.0
HEARTBEAT_S = 30.0
TMP_STALE_S = 60.0  # a claim's temporary file lives for one write


@dataclass(frozen=True)
class Holder:
    """Who holds a claim."""

    host: str
    pid: int
    started: float
    nonce: str = ""

    @staticmethod
    def me() -> Holder:
        return Holder(socket.gethostname(), os.getpid(), _start_time(os.getpid()) or 0.0)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


def _start_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def holder_alive(holder: Holder, touched: float, stale_after_s: float = STALE_AFTER_S) -> bool:
    """True while the claim's holder may still be working."""
    if holder.host == socket.gethostname():
        started = _start_time(holder.pid)
        return started is not None and abs(started - holder.started) < 1.0
    return time.time() - touched < stale_after_s


class ClaimFolder:
    """Exclusive claims named ``<name>.claim`` under one folder (local path or fsspec URL).

    Args:
        url: the claims folder.
        storage_options: fsspec options for a remote folder.
        stale_after_s: age after which another host's untouched claim is stale.
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.url = url.rstrip("/")
        self.me = Holder.me()
        self.stale_after_s = stale_after_s
        self._path = local_path(url)
        self._fs, self._root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    def _file(self, name: str) -> str:
        return f"{self._root}/{name}.claim"

    def _payload(self) -> bytes:
        body = {"host": self.me.host, "pid": self.me.pid, "started": self.me.started,
                "nonce": uuid.uuid4().hex}
        return json.dumps(body).encode()

    def _create(self, name: str) -> bool:
        """Create the claim file exclusively; False if it exists."""
        data = self._payload()
        if self._path is not None:
            # Written whole under a temporary name, then hard-linked into place: the link is
            # exclusive (it fails when the claim exists, NFS included) and a claim is never
            # seen empty (an O_EXCL file is, between its creation and its write, and a
            # reader would take that for a stale claim).
            self._path.mkdir(parents=True, exist_ok=True)
            tmp = f"{self._file(name)}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            try:
                os.link(tmp, self._file(name))
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        if self._fs.exists(self._file(name)):
            return False
        self._fs.pipe_file(self._file(name), data)
        time.sleep(0.05)  # object stores: the last writer wins; read back to see who did
        return self._fs.cat_file(self._file(name)) == data

    def read(self, name: str) -> tuple[Holder, float] | None:
        """The holder of claim ``name`` and when it was last touched, or None."""
        path = self._file(name)
        try:
            raw = json.loads(self._fs.cat_file(path))
            touched = self._mtime(path)
        except (FileNotFoundError, ValueError, KeyError, OSError):
            return None
        holder = Holder(str(raw["host"]), int(raw["pid"]), float(raw["started"]),
                        str(raw.get("nonce", "")))
        return holder, touched

    def _mtime(self, path: str) -> float:
        if self._path is not None:
            return os.stat(path).st_mtime
        info = self._fs.info(path)
        stamp = info.get("LastModified") or info.get("mtime") or time.time()
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)

    def holder(self, name: str) -> Holder | None:
        """The live holder of ``name`` (None when unclaimed or stale)."""
        found = self.read(name)
        if found is None:
            return None
        holder, touched = found
        return holder if holder_alive(holder, touched, self.stale_after_s) else None

    def try_claim(self, name: str) -> bool:
        """Claim ``name``; take it over when its holder is gone. False if someone live has it."""
        with self._lock:
            if name in self._held:
                return True
        if not self._create(name):
            if self.holder(name) is not None:
                return False
            self._drop(name)  # stale: its holder is gone
            if not self._create(name):
                return False
        with self._lock:
            self._held.add(name)
        self._start_heartbeat()
        return True

    def _drop(self, name: str) -> None:
        path = self._file(name)
        try:
            if self._path is not None:
                aside = f"{path}.{uuid.uuid4().hex}.stale"
                os.rename(path, aside)  # one of several racing takers wins the rename
                os.unlink(aside)
            else:
                self._fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass

    def release(self, name: str) -> None:
        """Give up a claim this process holds."""
        with self._lock:
            held = name in self._held
            self._held.discard(name)
        if held:
            self._drop(name)

    def release_all(self) -> None:
        with self._lock:
            names = list(self._held)
        for name in names:
            self.release(name)
        self._stop.set()

    def live_names(self) -> list[str]:
        """Claims held by live processes other than this one."""
        out = []
        for name in self.names():
            holder = self.holder(name)
            if holder is not None and (holder.host, holder.pid) != (self.me.host, self.me.pid):
                out.append(name)
        return out

    def names(self) -> list[str]:
        """Every claim file's name (live or stale)."""
        try:
            entries = self._fs.ls(self._root, detail=False)
        except (FileNotFoundError, OSError):
            return []
        return sorted(
            e.rstrip("/").rsplit("/", 1)[-1][: -len(".claim")]
            for e in entries if e.endswith(".claim")
        )

    def clean_stale(self) -> list[str]:
        """Remove stale claims (holders gone); then the folder itself when it is empty."""
        removed = []
        for name in self.names():
            if self.holder(name) is None and name not in self._held:
                self._drop(name)
                removed.append(name)
        if self._path is not None:  # a claim's temporary file left by a killed writer
            for tmp in self._path.glob("*.claim.*.tmp"):
                try:
                    if time.time() - tmp.stat().st_mtime > TMP_STALE_S:
                        tmp.unlink()
                except FileNotFoundError:
                    pass
        self.remove_if_empty()
        return removed

    def remove_if_empty(self) -> None:
        try:
            if self._path is not None:
                self._path.rmdir()  # only succeeds when empty
            elif not self._fs.ls(self._root, detail=False):
                self._fs.rm(self._root, recursive=True)
        except (FileNotFoundError, OSError):
            pass

    def _start_heartbeat(self) -> None:
        if self._beat is not None and self._beat.is_alive():
            return
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="claims")
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                names = list(self._held)
            for name in names:
                self._touch(self._file(name))

    def _touch(self, path: str) -> None:
        try:
            if self._path is not None:
                Path(path).touch(exist_ok=True)
            else:  # object stores have no touch: rewrite the same bytes
                self._fs.pipe_file(path, self._fs.cat_file(path))
        except (FileNotFoundError, OSError, NotImplementedError):
            pass
