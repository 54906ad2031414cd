"""Object storage for everything outside Delta: original file bytes, shard files, reports.

One small interface, two implementations: a local folder and an S3 bucket (boto3). Keys are
relative, ``/``-separated paths under the lakehouse's ``objects/`` prefix. Local writes are
atomic (temp file + rename) so a killed process never leaves a half-written object.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from catalog.config import LakehouseConfig
from catalog.errors import StorageError

OBJECTS = "objects"
_CHUNK = 1 << 20


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(
            f"Invalid object key {key!r}: expected a relative path like 'raw/sha256/ab/abcd...', "
            "without empty, '.' or '..' parts."
        )
    return key


def content_key(sha256: str, namespace: str = "raw") -> str:
    """The content-addressed key of an object with this sha256: ``raw/sha256/ab/<sha>``."""
    return f"{namespace}/sha256/{sha256[:2]}/{sha256}"


def key_from_uri(uri: str) -> str:
    """The object key inside a URI this module made (``.../objects/<key>``)."""
    _, sep, key = uri.partition(f"/{OBJECTS}/")
    if not sep or not key:
        raise StorageError(f"{uri!r} is not an object URI of a lakehouse (no /{OBJECTS}/).")
    return _check_key(key)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hash a file in 1 MiB chunks (a file is never held in memory whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ObjectStore(Protocol):
    """Blob storage under the lakehouse root."""

    def uri(self, key: str) -> str:
        """Full URI of an object (path or s3://...)."""
        ...

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write an object atomically; returns its URI."""
        ...

    def put_file(self, key: str, path: str | os.PathLike[str]) -> str:
        """Copy a local file into the store; returns its URI."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read a whole object."""
        ...

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        """Download an object to a local path (atomically); returns the path."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object exists."""
        ...

    def size(self, key: str) -> int:
        """Size of an object in bytes."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under a prefix, sorted."""
        ...

    def modified(self, prefix: str = "") -> dict[str, float]:
        """Keys under a prefix with their modification times (seconds since the epoch)."""
        ...

    def delete(self, key: str) -> None:
        """Delete an object (no error if absent)."""
        ...


def put_content_addressed(store: ObjectStore, path: str | os.PathLike[str],
                          *, sha256: str | None = None, namespace: str = "raw") -> tuple[str, str]:
    """Store a file under its sha256 unless already present; returns ``(sha256, uri)``.

    Identical files are stored once, which is what lets a share be retired without losing
    a byte and without paying for its duplicates twice.
    """
    digest = sha256 or sha256_file(path)
    key = content_key(digest, namespace)
    if not store.exists(key):
        store.put_file(key, path)
    return digest, store.uri(key)


class LocalStore:
    """Objects as plain files under ``<root>/objects`` (or another folder ``base`` of the
    root, e.g. a table's, for data files written before their commit)."""

    def __init__(self, root: str | os.PathLike[str], base: str = OBJECTS):
        self.base = Path(root) / base
        self._base_str = str(self.base)

    def _path(self, key: str) -> Path:
        return self.base / _check_key(key)

    def uri(self, key: str) -> str:
        # plain string join: called once per file of a share, pathlib costs ~0.2 ms a call
        return f"{self._base_str}/{_check_key(key)}"

    def _atomic_write(self, key: str, write) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            # Atomic against a killed process (rename), not fsync'd against power loss: an
            # fsync per object tripled the time to store a share of small files, and every
            # object can be checked against the sha256 the catalog records for it.
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(target)

    def put_bytes(self, key: str, data: bytes) -> str:
        return self._atomic_write(key, lambda f: f.write(data))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> str:
        def copy(f: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, _CHUNK)

        return self._atomic_write(key, copy)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"No object {key!r} under {self.base}.") from None

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        src = self._path(key)
        if not src.exists():
            raise StorageError(f"No object {key!r} under {self.base}.")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise StorageError(f"No object {key!r} under {self.base}.") from None

    def list(self, prefix: str = "") -> Iterator[str]:
        start = self.base / prefix if prefix else self.base
        if not start.exists():
            return iter(())
        keys = (
            p.relative_to(self.base).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return iter(sorted(keys))

    def modified(self, prefix: str = "") -> dict[str, float]:
        return {k: self._path(k).stat().st_mtime for k in self.list(prefix)}

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """Objects in an S3 bucket under ``<prefix>/objects`` (or ``<prefix>/<base>``; boto3,
    standard retries)."""

    def __init__(self, config: LakehouseConfig, base: str = OBJECTS):
        import boto3
        from botocore.config import Config

        opts = config.storage_options
        self.bucket = config.bucket
        self.base = "/".join(p for p in (config.prefix, base) if p)
        self.client = boto3.client(
            "s3",
            endpoint_url=opts.get("AWS_ENDPOINT_URL"),
            region_name=opts.get("AWS_REGION"),
            aws_access_key_id=opts.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=opts.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=opts.get("AWS_SESSION_TOKEN"),
            # a bounded wait for an endpoint that does not answer (botocore's default is 60 s
            # per attempt)
            config=Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=5),
        )

    def _key(self, key: str) -> str:
        return f"{self.base}/{_check_key(key)}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _call(self, what: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise StorageError(f"No object at {what}.") from None
            raise StorageError(f"S3 error for {what}: {e}") from e
        except BotoCoreError as e:
            raise StorageError(
                f"Cannot reach S3 for {what}: {e}. Check AWS_ENDPOINT_URL and credentials."
            ) from e

    def put_bytes(self, key: str, data: bytes) -> str:
        uri = self.uri(key)
        self._call(uri, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)
        return uri

    def put_file(self, key: str, path: str | os.PathLike[str]) -> str:
        uri = self.uri(key)
        self._call(uri, self.client.upload_file, str(path), self.bucket, self._key(key))
        return uri

    def get_bytes(self, key: str) -> bytes:
        uri = self.uri(key)
        obj = self._call(uri, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return obj["Body"].read()

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
        self._call(self.uri(key), self.client.download_file, self.bucket, self._key(key), str(tmp))
        os.replace(tmp, dest)
        return dest

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except StorageError as e:
            if str(e).startswith("No object"):
                return False
            raise
        return True

    def size(self, key: str) -> int:
        head = self._call(
            self.uri(key), self.client.head_object, Bucket=self.bucket, Key=self._key(key)
        )
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        full = f"{self.base}/{prefix}" if prefix else f"{self.base}/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        )
        keys = [
            obj["Key"][len(self.base) + 1:]
            for page in self._call(f"s3://{self.bucket}/{full}", list, pages)
            for obj in page.get("Contents", [])
        ]
        return iter(sorted(keys))

    def modified(self, prefix: str = "") -> dict[str, float]:
        full = f"{self.base}/{prefix}" if prefix else f"{self.base}/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        )
        return {obj["Key"][len(self.base) + 1:]: obj["LastModified"].timestamp()
                for page in self._call(f"s3://{self.bucket}/{full}", list, pages)
                for obj in page.get("Contents", [])}

    def delete(self, key: str) -> None:
        self._call(
            self.uri(key), self.client.delete_object, Bucket=self.bucket, Key=self._key(key)
        )


def open_store(config: LakehouseConfig, base: str = OBJECTS) -> ObjectStore:
    """The object store of a lakehouse: S3 for ``s3://`` roots, a local folder otherwise;
    keys under ``base`` (``objects``; a table's folder for its uncommitted data files)."""
    return S3Store(config, base) if config.is_s3 else LocalStore(config.root, base)


@functools.lru_cache(maxsize=4)
def cached_store(config: LakehouseConfig) -> ObjectStore:
    """One store (one S3 client) per process and config, for per-item work in pools.

    A forked worker must not reuse its parent's S3 connections: start pools with
    ``initializer=cached_store.cache_clear``.
    """
    return open_store(config)
