"""Writes that a reader never sees half done: a file or a folder is written under a unique temporary name
beside its target, flushed to disk, and renamed into place (atomic on one POSIX file system). Unique names
let concurrent writers (sweep workers, parallel trials) race harmlessly; the last rename wins for files, the
first for folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a unique temporary file, fsync'd before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name; opened like any new file, so it gets the usual permissions (mkstemp's are owner-only)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(temporary, "x") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; when the block ends without error, rename it to
    `target` unless another writer got there first (then this copy is dropped). Nothing is left behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield temporary
        for root, _, files in os.walk(temporary):  # flush every file before the rename publishes them
            for name in files:
                with open(os.path.join(root, name), "rb") as file:
                    os.fsync(file.fileno())
        try:
            temporary.rename(target)
        except OSError:  # another writer finished first: its folder stands
            if not target.exists():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
