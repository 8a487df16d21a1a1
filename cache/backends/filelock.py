"""Whole-file locks with ``flock``: exclusive for a writer, shared for readers, never waiting.

The kernel drops a lock when its holder dies, so a killed writer never leaves a stale one.
Opens of one file in one process share one lock (``FileLock.acquire`` keys it by device and
inode), and a file replaced while it is being locked is locked again under its new inode.
On a file system without ``flock`` (Lustre without ``-o flock``, some FUSE mounts) a warning
says so and the file opens unlocked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import warnings
from pathlib import Path

from cache.backends import StoreBusyError

_NO_LOCKS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}
_unlocked_warned: set[str] = set()


def _warn_unlocked(url: str, err: OSError) -> None:
    """A file system without ``flock`` (Lustre without ``-o flock``, some FUSE mounts)."""
    if url not in _unlocked_warned:
        _unlocked_warned.add(url)
        warnings.warn(
            f"{url}: this file system has no file locks ({err.strerror}); HDF5 writers "
            "are not kept apart here, so run one at a time",
            RuntimeWarning,
            stacklevel=4,
        )


def _busy(url: str) -> StoreBusyError:
    return StoreBusyError(
        f"{url} is open for writing by another process; wait for it to finish "
        "(one writer per HDF5 file)"
    )


class FileLock:
    """An ``flock`` on one file, shared by every open of it in this process.

    Exclusive for a writer, shared for readers, never waiting. Opens in one process share
    one lock (as libhdf5 shares one open file between them), so a process may read a store
    it is writing; ``release`` drops it when the last of them closes.
    """

    _held: dict[tuple[int, int], FileLock] = {}
    _guard = threading.Lock()

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        self.fd, self.key, self.users, self.exclusive = fd, key, 0, False

    @classmethod
    def acquire(cls, path: Path, exclusive: bool, url: str) -> FileLock:
        """Lock the file ``path`` names now (retrying if it is replaced while we lock it)."""
        while True:
            fd = os.open(path, os.O_RDONLY)
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            with cls._guard:
                lock = cls._held.get(key)
                if lock is not None:
                    os.close(fd)
                else:
                    lock = cls(fd, key)
                try:
                    lock._take(exclusive, url)
                except BaseException:
                    if not lock.users:
                        os.close(fd)
                    raise
                cls._held[key] = lock
            if lock._names(path):
                return lock
            lock.release()

    def _take(self, exclusive: bool, url: str) -> None:
        if not self.users or exclusive and not self.exclusive:
            kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(self.fd, kind | fcntl.LOCK_NB)
            except BlockingIOError as err:
                if self.users:  # a failed upgrade may drop the shared lock: take it back
                    fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                raise _busy(url) from err
            except OSError as err:
                if err.errno not in _NO_LOCKS:
                    raise
                _warn_unlocked(url, err)
            self.exclusive = self.exclusive or exclusive
        self.users += 1

    def _names(self, path: Path) -> bool:
        """True while ``path`` still names the locked file (not replaced meanwhile)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self.key

    def release(self) -> None:
        with self._guard:
            self.users -= 1
            if self.users == 0:
                del self._held[self.key]
                os.close(self.fd)  # closing the descriptor drops the lock
