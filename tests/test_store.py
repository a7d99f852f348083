"""The artifact store: local directory and S3 (moto server), atomic commits."""
from __future__ import annotations

import numpy as np
import pytest

from adaptinf.store import LocalStore, StoreError, open_store


def _roundtrip(store):
    store.write_json("r/a.json", {"x": 1})
    store.write_npy("r/g.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert store.read_json("r/a.json") == {"x": 1}
    np.testing.assert_array_equal(store.read_npy("r/g.npy"), np.arange(6).reshape(2, 3))
    assert store.list("r") == ["r/a.json", "r/g.npy"]
    assert not store.is_committed("r")
    marker = store.commit("r", {"summary": {"n": 2}})
    assert store.is_committed("r") and store.read_marker("r")["summary"] == {"n": 2}
    assert sorted(marker["files"]) == ["a.json", "g.npy"]
    store.clear("r")
    assert store.list("r") == [] and not store.is_committed("r")
    with pytest.raises(StoreError, match="r/missing"):
        store.read_bytes("r/missing")


def test_local_store_roundtrip(tmp_path):
    _roundtrip(LocalStore(tmp_path))


def test_s3_store_roundtrip(s3_bucket):
    store = open_store(f"s3://{s3_bucket}/prefix")
    _roundtrip(store)
    assert store.uri("k") == f"s3://{s3_bucket}/prefix/k"


def test_local_write_is_atomic(tmp_path, monkeypatch):
    """A crash mid-write leaves the old content and no visible partial file."""
    store = LocalStore(tmp_path)
    store.write_text("a.txt", "old")

    class Boom(RuntimeError):
        pass

    import os
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom):
        store.write_text("a.txt", "new content")
    monkeypatch.setattr(os, "replace", real)
    assert store.read_text("a.txt") == "old"
    assert store.list("") == ["a.txt"]


def test_local_store_refuses_escaping_keys(tmp_path):
    with pytest.raises(StoreError, match="escapes"):
        LocalStore(tmp_path / "root").write_text("../../etc/passwd", "x")


def test_s3_permanent_error_names_object(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(StoreError, match="s3://no-such-bucket/p/x.json"):
        open_store("s3://no-such-bucket/p").read_json("x.json")


def test_local_store_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    """A local store is read by other users and pods: its files follow the umask (mkstemp alone
    leaves every atomically written file owner-only)."""
    import os
    from adaptinf.file_modes import FILE_MODE
    store = LocalStore(tmp_path)
    store.write_bytes("run/step-000/summary.json", b"{}")
    mode = os.stat(tmp_path / "run/step-000/summary.json").st_mode & 0o777
    assert mode == FILE_MODE and mode & 0o044, oct(mode)
