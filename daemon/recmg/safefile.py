"""Atomic file output that is safe for root in a directory other users can write.

recmgd runs as root and writes files where an operator asks (``recmgctl record -o``),
which may be a directory like /tmp.  A plain ``open(tmp, "wb")`` there follows a
symlink another user planted under the temporary name, and overwrites its target.
``atomic_output`` instead:

- resolves the directory once (the operator's own symlinks are fine), then opens it
  component by component with O_NOFOLLOW (openat(2)), so a component swapped for a
  symlink after that fails instead of being followed;
- creates the temporary file in that directory with O_CREAT | O_EXCL | O_NOFOLLOW
  under an unpredictable name (open(2): O_EXCL fails on any existing name, symlinks
  included);
- fsyncs it and renames it over the destination relative to the same directory
  descriptor; rename(2) replaces a symlink at the destination, never its target.

A failure removes the temporary file and raises OSError (or ValueError for a path
without a file name), naming the path.

``read_regular`` is the other direction: what recmgd reads from a path someone else
may control (configs, profiles, models, cards) is a bounded regular file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from typing import BinaryIO


def _open_dir(directory: str) -> int:
    """An O_DIRECTORY descriptor of an absolute, already resolved directory, every
    component opened without following symlinks."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in directory.split("/") if p]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends without an error."""
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    if not name or name in (".", ".."):
        raise ValueError(f"{path}: not a file name")
    directory = os.path.realpath(directory)
    try:
        dfd = _open_dir(directory)
    except OSError as e:
        raise OSError(e.errno, f"{directory}: {e.strerror} (the directory of {path}; a "
                      "component that is a symlink is refused)") from None
    tmp = f".{name[:200]}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)


def read_regular(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The contents of a regular file of at most ``max_bytes``.  Opened non-blocking
    and checked with fstat before anything is read, so a FIFO (whose open would
    block until a writer comes), a device such as /dev/zero (endless) or a directory
    is refused at once with an OSError that says what it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise OSError(e.errno, f"{path}: cannot open the {what}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path}: the {what} is not a regular file "
                          f"({_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"{path}: the {what} has {st.st_size} bytes, more "
                          f"than the {max_bytes} allowed")
        chunks, total = [], 0
        while True:  # bounded even if the file grows while it is read
            b = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > max_bytes:
                raise OSError(errno.EFBIG, f"{path}: the {what} grew past {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"
