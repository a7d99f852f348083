"""S3 faults injected by a proxy in front of the local S3: transient ones are retried with
backoff and the data arrives whole; permanent ones fail at once with a message naming the object."""
from __future__ import annotations

import time

import pytest

from adaptinf.store import S3Store, StoreError, StoreUnavailable, read_uri
from s3_fault_proxy import FaultProxy


@pytest.fixture
def proxy(s3_bucket, s3_endpoint, monkeypatch):
    p = FaultProxy(s3_endpoint).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.url)
    monkeypatch.setenv("ADAPTINF_S3_MAX_ATTEMPTS", "4")
    yield p
    p.stop()


def test_transient_errors_and_dropped_connections_are_retried(proxy, s3_bucket):
    store = S3Store(f"s3://{s3_bucket}/run")
    payload = bytes(range(256)) * 64
    proxy.inject("503", "drop", method="PUT")
    store.write_bytes("a/blob.bin", payload)
    assert proxy.outcomes("PUT") == ["503", "drop", "ok"]

    proxy.inject("500", "drop", method="GET")
    assert store.read_bytes("a/blob.bin") == payload
    assert proxy.outcomes("GET") == ["500", "drop", "ok"]

    proxy.inject("503", method="HEAD")
    proxy.inject("drop", method="GET", path="list-type")
    assert store.exists("a/blob.bin") and store.list("a") == ["a/blob.bin"]
    assert proxy.pending() == 0


def test_a_body_that_breaks_off_is_fetched_again(proxy, s3_bucket):
    store = S3Store(f"s3://{s3_bucket}/run")
    payload = b"x" * 100_000
    store.write_bytes("big.bin", payload)
    proxy.inject("truncate", "truncate", method="GET")
    assert store.read_bytes("big.bin") == payload  # whole, never the half that arrived
    assert proxy.outcomes("GET") == ["truncate", "truncate", "ok"]
    # Dataset sources and images go through the same retries.
    proxy.inject("truncate", "503", method="GET")
    assert read_uri(f"s3://{s3_bucket}/run/big.bin") == payload


def test_outage_longer_than_the_retries_is_reported_as_unavailable(proxy, s3_bucket):
    store = S3Store(f"s3://{s3_bucket}/run")
    proxy.inject(*["503"] * 4, method="GET")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=rf"s3://{s3_bucket}/run/k.json.*after 4 attempts"):
        store.read_json("k.json")
    assert proxy.outcomes("GET") == ["503"] * 4
    assert time.monotonic() - start > 0.1  # backed off between attempts


def test_permanent_errors_fail_at_once_and_name_the_object(proxy, s3_bucket):
    store = S3Store(f"s3://{s3_bucket}/run")
    proxy.inject("403", method="GET")
    with pytest.raises(StoreError, match=rf"read of s3://{s3_bucket}/run/secret.json failed.*AccessDenied") as err:
        store.read_bytes("secret.json")
    assert not isinstance(err.value, StoreUnavailable)
    assert proxy.outcomes("GET") == ["403"]  # no retry
    with pytest.raises(StoreError, match=rf"s3://{s3_bucket}/run/missing.json.*NoSuchKey"):
        store.read_bytes("missing.json")
    assert len(proxy.outcomes("GET")) == 2


def test_unreachable_endpoint_is_unavailable_not_missing(s3_bucket, monkeypatch, port_finder):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port_finder()}")  # nothing listens
    monkeypatch.setenv("ADAPTINF_S3_MAX_ATTEMPTS", "2")
    with pytest.raises(StoreUnavailable, match="Could not connect"):
        S3Store(f"s3://{s3_bucket}/run").exists("x")
