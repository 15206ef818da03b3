"""Files that hold tenant data or secrets: 0600 files in 0700 directories, from their creation on.

Every store swarmray keeps on a local disk (journals, the facts' SQLite files, audit logs, the
key authority's files, memory logs and snapshots, key files) is made through here, so that no
other user of the machine can read it, whatever the process's umask. A directory or file an
older version left readable by others is narrowed when it is opened again.
"""

from __future__ import annotations

import contextlib
import os
import stat

from models._private.core.files import atomic_write

__all__ = ["open_private", "private_dir", "private_file", "restrict_tree", "write_private"]

_OTHERS = 0o077  # the group's and the others' bits


def private_dir(path: str) -> str:
    """Makes directory `path` and each missing parent with mode 0700, narrows an existing
    `path` of the caller's to 0700, and returns `path`. Existing parents are left as they are."""
    missing, head = [], os.path.abspath(path)
    while not os.path.isdir(head) and os.path.dirname(head) != head:
        missing.append(head)
        head = os.path.dirname(head)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            os.mkdir(folder, 0o700)
    _narrow(path)
    return path


def open_private(path: str, flags: int) -> int:
    """`os.open(path, flags | O_CREAT)`: a new file is made 0600, an existing one of the
    caller's is narrowed to its owner's bits. Returns the descriptor."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    try:
        st = os.fstat(fd)
        if st.st_mode & _OTHERS and st.st_uid == os.geteuid():
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~_OTHERS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: str) -> str:
    """Makes `path` an (empty) 0600 file unless it exists, narrowing it if it does, before a
    library that creates files its own way opens it: SQLite then gives its -wal and -shm files
    the database's mode. Returns `path`."""
    os.close(open_private(path, os.O_RDWR))
    return path


def write_private(path: str, data: bytes | str) -> None:
    """Replaces `path` with `data` atomically (`atomic_write`), as a 0600 file."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path + ".tmp")  # a leftover temp file would keep its mode
    atomic_write(path, data, mode=0o600)


def restrict_tree(root: str) -> None:
    """Narrows `root` and everything below it to their owner's bits: for a tree written by
    libraries that make files their own way (FAISS, numpy, tantivy, a download), before it is
    renamed into place."""
    _narrow(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            _narrow(os.path.join(folder, name))


def _narrow(path: str) -> None:
    st = os.lstat(path)
    if st.st_mode & _OTHERS and st.st_uid == os.geteuid() and not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~_OTHERS)
