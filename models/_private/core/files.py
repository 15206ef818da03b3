"""Durable file writes: a whole file replaced atomically, and the fsyncs that make it last."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

__all__ = ["atomic_write", "build_once", "fsync_dir", "fsync_tree"]


def fsync_dir(path: str) -> None:
    """Makes the entries of directory `path` (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes | str, mode: int = 0o666) -> None:
    """Replaces `path` with `data` so that a crash leaves the old file or the new, never a mix.

    `mode` (less the umask) is the new file's from its creation on: 0o600 keeps a secret
    unreadable by others at every moment.
    """
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
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


def build_once(final: str, build: Callable[[str], None], marker: str) -> str:
    """The directory `final`, built on first use by `build(tmp)` into a temporary sibling that
    is then renamed into place; `build` writes the file `marker` last, whose presence means
    done. Processes that race to build it are safe: one rename wins, the others' work is dropped.
    """
    if os.path.exists(os.path.join(final, marker)):
        return final
    base = os.path.dirname(final)
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=base, prefix=".build-")
    try:
        build(tmp)
        try:
            os.rename(tmp, final)  # atomic; fails harmlessly when another builder won
        except OSError:
            if not os.path.exists(os.path.join(final, marker)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
