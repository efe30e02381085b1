"""Content digests of local data files, for the cache key: sha256 read in chunks, and remembered per file by
its stat data, so that a cache hit on a large file does not read the file again.

Hashing reads the whole file: 0.63 s for 587 MB (200,000 chats) from the page cache on the 2-core machine of
docs/benchmarks.md, more from a cold disk, and every run, sweep trial and process of a multi-process run
asks for it. `DigestMemo` keeps each file's digest beside the tokenized caches (paths.cache_dir/data/
file_digests.json), keyed by the file's size, mtime_ns, ctime_ns and inode, and serves it while all four
are unchanged: git's index trusts the same stat data to skip re-reading unchanged files
(https://git-scm.com/docs/racy-git). The trade-off: a file rewritten with the same size, timestamps and
inode would be served its old digest. Setting mtime back (`touch -d`) changes ctime, which no program can
set, and a rewrite through a new file (editors, rsync, `cp` to a new name) changes the inode; what remains
is a file changed within the file system's timestamp resolution of its hashing, so a file modified less
than SETTLE_SECONDS before it was hashed is not remembered (it is hashed again next time)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from src.atomic import write_text_atomic

MEMO_FILE = "file_digests.json"
SETTLE_SECONDS = 2.0  # well above file timestamps' resolution: a few ms on ext4 and xfs, 2 s on FAT


def file_sha256(path: Path) -> bytes:
    """sha256 of one file's bytes, read in chunks (none of it held in memory)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def _signature(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class DigestMemo:
    """File digests remembered by stat data in `folder`/file_digests.json (see the module docstring); a memo
    that cannot be read starts empty, one that cannot be written is only not kept."""

    def __init__(self, folder: Path):
        self.file = Path(folder) / MEMO_FILE
        try:
            self.entries: dict[str, list] = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def sha256(self, path: Path) -> bytes:
        """The file's sha256: remembered while its stat data is unchanged, else read in chunks."""
        key, before = str(path.resolve()), path.stat()
        entry = self.entries.get(key)
        if entry and entry[0] == _signature(before):
            return bytes.fromhex(entry[1])
        started = time.time_ns()
        digest = file_sha256(path)
        settled = started - max(before.st_mtime_ns, before.st_ctime_ns) > SETTLE_SECONDS * 1e9
        if settled and _signature(path.stat()) == _signature(before):  # and it did not change meanwhile
            self.entries[key] = [_signature(before), digest.hex()]
            self.changed = True
        return digest

    def save(self) -> None:
        """Write the memo if it learnt a digest; concurrent writers race harmlessly (the last one wins)."""
        if self.changed:
            with contextlib.suppress(OSError):  # a read-only cache folder: digests are computed each time
                write_text_atomic(self.file, json.dumps(self.entries))
            self.changed = False


def content_digest(path: Path, memo: DigestMemo | None = None) -> str:
    """sha256 (hex) over a file's sha256, or over every file's name and sha256 in a save_to_disk folder;
    each file's digest from `memo` when given."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        digest.update(memo.sha256(file) if memo else file_sha256(file))
    return digest.hexdigest()
