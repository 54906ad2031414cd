"""Object storage for blobs, on a local folder and on a real S3 server."""

from __future__ import annotations

import hashlib

import pytest

from catalog import StorageError, content_key, put_content_addressed, sha256_file


def test_put_get_list_delete(lakehouse, tmp_path):
    store = lakehouse.store
    uri = store.put_bytes("a/b/one.bin", b"hello")
    assert uri.endswith("objects/a/b/one.bin")
    assert store.get_bytes("a/b/one.bin") == b"hello"
    assert store.exists("a/b/one.bin") and not store.exists("a/b/two.bin")
    assert store.size("a/b/one.bin") == 5
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (3 << 20))
    store.put_file("a/c/big.bin", src)
    dest = store.get_file("a/c/big.bin", tmp_path / "out" / "big.bin")
    assert dest.read_bytes() == src.read_bytes()
    assert list(store.list("a/")) == ["a/b/one.bin", "a/c/big.bin"]
    store.delete("a/b/one.bin")
    store.delete("a/b/one.bin")  # deleting twice is fine
    assert not store.exists("a/b/one.bin")
    with pytest.raises(StorageError, match="No object"):
        store.get_bytes("a/b/one.bin")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_bad_keys_are_refused(lakehouse, key):
    with pytest.raises(StorageError, match="Invalid object key"):
        lakehouse.store.put_bytes(key, b"x")


def test_content_addressed_storage_dedupes(lakehouse, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "copy of a.txt"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    digest = hashlib.sha256(b"same bytes").hexdigest()
    assert sha256_file(a) == digest
    d1, uri1 = put_content_addressed(lakehouse.store, a)
    d2, uri2 = put_content_addressed(lakehouse.store, b)
    assert d1 == d2 == digest and uri1 == uri2
    assert list(lakehouse.store.list("raw/")) == [content_key(digest)]
    assert lakehouse.store.get_bytes(content_key(digest)) == b"same bytes"
