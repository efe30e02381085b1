"""Local files' digests for the cache key: sha256 in chunks, remembered by stat data while the file is
unchanged."""

import hashlib
import os

from src.data import digest
from src.data.digest import DigestMemo, content_digest


def test_content_digest_is_the_sha256_of_the_bytes_read_in_chunks(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"x" * (3 << 20) + b"end")
    expected = hashlib.sha256(hashlib.sha256(path.read_bytes()).digest()).hexdigest()
    assert content_digest(path) == content_digest(path, DigestMemo(tmp_path / "memo")) == expected


def test_a_remembered_digest_is_served_until_the_file_changes(tmp_path, monkeypatch):
    reads, original = [], digest.file_sha256
    monkeypatch.setattr(digest, "file_sha256", lambda path: reads.append(path.name) or original(path))
    path = tmp_path / "train.jsonl"
    path.write_text("a" * 100)
    memo = DigestMemo(tmp_path / "memo")
    first = content_digest(path, memo)
    content_digest(path, memo)
    assert reads == ["train.jsonl"] * 2  # just written: within SETTLE_SECONDS, so not remembered
    monkeypatch.setattr(digest, "SETTLE_SECONDS", 0.0)
    content_digest(path, memo)
    memo.save()
    again = DigestMemo(tmp_path / "memo")  # as a later process reads it
    assert content_digest(path, again) == first and len(reads) == 3
    stat = path.stat()
    path.write_text("b" * 100)  # same size, and the old mtime put back: ctime still tells
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert content_digest(path, again) != first and len(reads) == 4
    assert content_digest(path, again) == content_digest(path) and len(reads) == 5  # remembered anew
