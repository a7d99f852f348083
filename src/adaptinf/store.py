"""One artifact-store interface over a local directory and S3.

Every write is atomic: a local file is written beside its target and renamed over it; an S3
PUT becomes visible whole. A group of files (a stage's outputs, an adapter) becomes valid only
when its marker `_COMMITTED.json` is written last, listing the files and their sizes; readers
go through `is_committed`/`read_committed`, so no reader ever sees half an artifact.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .file_modes import FILE_MODE

log = logging.getLogger(__name__)

MARKER = "_COMMITTED.json"


class StoreError(RuntimeError):
    """A permanent artifact-store failure (missing object, access denied, bad bucket)."""


class StoreUnavailable(StoreError):
    """A transient failure (5xx, throttling, dropped or refused connections) that outlasted every
    retry: the data is fine, the store is not reachable now. Callers must not treat it as bad
    input (a stage exits 1 so that its Job retries later)."""


class Store:
    """Keys are '/'-separated paths below the store's root."""

    root_uri: str

    # -- primitives each backend implements ------------------------------------------------
    def read_bytes(self, key: str) -> bytes: raise NotImplementedError
    def write_bytes(self, key: str, data: bytes) -> None: raise NotImplementedError
    def exists(self, key: str) -> bool: raise NotImplementedError
    def list(self, prefix: str) -> list[str]: raise NotImplementedError
    def delete(self, key: str) -> None: raise NotImplementedError
    def size(self, key: str) -> int: raise NotImplementedError

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for the key where the backend has one (local stores)."""
        return None

    # -- conveniences ---------------------------------------------------------------------
    def uri(self, key: str) -> str:
        return f"{self.root_uri.rstrip('/')}/{key}"

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key).decode("utf-8"))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=1, sort_keys=False).encode("utf-8"))

    def read_npy(self, key: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(key)), allow_pickle=False)

    def write_npy(self, key: str, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        self.write_bytes(key, buf.getvalue())

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    # -- committed groups -------------------------------------------------------------------
    def commit(self, prefix: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Seal every file below `prefix` by writing the marker last."""
        files = {}
        for key in self.list(prefix):
            rel = key[len(prefix.rstrip("/")) + 1:]
            if rel != MARKER:
                files[rel] = self.size(key)
        marker = {"files": files, "committed_at": time.time(), **(meta or {})}
        self.write_json(f"{prefix.rstrip('/')}/{MARKER}", marker)
        return marker

    def is_committed(self, prefix: str) -> bool:
        return self.exists(f"{prefix.rstrip('/')}/{MARKER}")

    def read_marker(self, prefix: str) -> dict[str, Any]:
        key = f"{prefix.rstrip('/')}/{MARKER}"
        if not self.exists(key):
            raise StoreError(f"{self.uri(prefix)} is not committed (no {MARKER}): its writer has not finished")
        return self.read_json(key)

    def clear(self, prefix: str) -> None:
        """Remove a group, marker first so no reader trusts what is left."""
        marker = f"{prefix.rstrip('/')}/{MARKER}"
        if self.exists(marker):
            self.delete(marker)
        for key in self.list(prefix):
            self.delete(key)
        self._clear_leftovers(prefix)

    def _clear_leftovers(self, prefix: str) -> None:
        """Backend debris of writes that were killed midway (local temp files); none on S3."""

    def upload_dir(self, local_dir: str | Path, prefix: str, meta: dict[str, Any] | None = None) -> None:
        """Copy a local directory under `prefix` and commit it."""
        local_dir = Path(local_dir)
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            self.write_bytes(f"{prefix.rstrip('/')}/{path.relative_to(local_dir).as_posix()}", path.read_bytes())
        self.commit(prefix, meta)

    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        """Copy a committed group to a local directory (only the files its marker lists)."""
        marker = self.read_marker(prefix)
        local_dir = Path(local_dir)
        for rel in marker["files"]:
            dest = local_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_bytes(f"{prefix.rstrip('/')}/{rel}"))
        return local_dir


class LocalStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise StoreError(f"key {key!r} escapes the store root")
        return path

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.uri(key)} does not exist") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would hide a shared store from its other readers
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.endswith(".tmp"))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def _clear_leftovers(self, prefix: str) -> None:
        # A writer killed between mkstemp and rename leaves `.name.XXXX.tmp`; list() hides it.
        base = self._path(prefix)
        if base.is_dir():
            for tmp in base.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)


# Error codes S3 (and MinIO, Ceph) send for a store that is busy or briefly broken.
TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
                             "ThrottlingException", "RequestLimitExceeded", "503", "500", "502", "504"})


def transient(err: Exception) -> bool:
    """True for failures a later attempt may not see: 5xx/429, throttling, network errors."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or err.response.get("Error", {}).get("Code") in TRANSIENT_CODES
    return isinstance(err, (ConnectionError, HTTPClientError, IncompleteReadError))


class S3Store(Store):
    """boto3 with botocore's standard retries: transient 5xx, throttling and dropped or refused
    connections are retried with exponential backoff and jitter (`ADAPTINF_S3_MAX_ATTEMPTS`,
    default 8). A GET whose body breaks off midway is retried here too (botocore returns the
    response before the body is read, so it cannot). What still fails is a StoreError naming the
    object: StoreUnavailable when it was transient, plain StoreError when permanent."""

    def __init__(self, uri: str, max_attempts: int | None = None):
        import boto3
        from botocore.config import Config

        rest = uri[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise StoreError(f"{uri!r} names no bucket")
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.attempts = max(1, max_attempts or int(os.environ.get("ADAPTINF_S3_MAX_ATTEMPTS", "8")))
        cfg = Config(retries={"total_max_attempts": self.attempts, "mode": "standard"},
                     connect_timeout=10, read_timeout=120)
        self.client = boto3.client("s3", config=cfg, endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, op: str, key: str, err: Exception) -> StoreError:
        if transient(err):
            return StoreUnavailable(f"S3 {op} of {self.uri(key)} failed after {self.attempts} attempts "
                                    f"(transient: the store is unreachable or overloaded): {err}")
        return StoreError(f"S3 {op} of {self.uri(key)} failed: {err}")

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except (ClientError, BotoCoreError) as err:  # botocore has retried already
                raise self._fail("read", key, err) from None
            try:
                return response["Body"].read()
            except BotoCoreError as err:  # the body broke off: fetch the object again
                if not transient(err) or attempt == self.attempts:
                    raise self._fail("read", key, err) from None
                delay = min(20.0, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning("S3 read of %s broke off (%s); attempt %d/%d in %.2fs", self.uri(key), err,
                            attempt + 1, self.attempts, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as err:
            raise self._fail("write", key, err) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("stat", key, err) from None
        except BotoCoreError as err:
            raise self._fail("stat", key, err) from None

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError
        full = self._key(prefix.rstrip("/")) + "/"
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(o["Key"] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as err:
            raise self._fail("list", prefix, err) from None
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[strip:] for k in keys)

    def size(self, key: str) -> int:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except (ClientError, BotoCoreError) as err:
            raise self._fail("stat", key, err) from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as err:
            raise self._fail("delete", key, err) from None


def open_store(uri: str | Path) -> Store:
    """`s3://bucket/prefix` → S3Store, anything else → LocalStore (a directory)."""
    uri = str(uri)
    if uri.startswith("s3://"):
        return S3Store(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return LocalStore(uri)


@functools.lru_cache(maxsize=16)
def _bucket_store(bucket: str, _env: tuple[str, ...]) -> S3Store:
    """One client per bucket and S3 environment: creating a boto3 client per image is slow."""
    return S3Store(f"s3://{bucket}")


def read_uri(uri: str) -> bytes:
    """Bytes of a single file named by a local path or an s3:// URI (dataset sources, images)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        if not bucket or not key:
            raise StoreError(f"{uri!r} names no bucket and key")
        env = tuple(os.environ.get(k, "") for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
                                                      "ADAPTINF_S3_MAX_ATTEMPTS"))
        return _bucket_store(bucket, env).read_bytes(key)
    try:
        return Path(uri).read_bytes()
    except OSError as err:
        raise StoreError(f"cannot read {uri}: {err.strerror or err}") from None
