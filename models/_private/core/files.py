"""Durable file writes: a whole file replaced atomically, and the fsyncs that make it last."""

from __future__ import annotations

import os

__all__ = ["atomic_write", "fsync_dir", "fsync_tree"]


def fsync_dir(path: str) -> None:
    """Makes the entries of directory `path` (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes | str) -> None:
    """Replaces `path` with `data` so that a crash leaves the old file or the new, never a mix."""
    tmp = path + ".tmp"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def fsync_tree(root: str) -> None:
    """fsyncs every file below `root` (before the tree is renamed into place)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
