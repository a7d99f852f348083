"""A partly bad InstructionDataset through the real `adaptinf stage extract`: good records join
the pool, every bad one is listed with its reason in `ingest/report.json`, the counts are in the
ingest marker (what the operator copies into the dataset's status), and nothing already in the
pool is touched. A dataset with no usable record exits 2; a store outage exits 1 and commits
nothing (retried, never mistaken for a bad dataset)."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from adaptinf import layout
from adaptinf.cli import main as cli
from adaptinf.data.pool import load_pool, save_pool
from adaptinf.stages.registry import build_context
from adaptinf.stages.ingest import candidate_pool
from adaptinf.store import LocalStore, open_store

RUN = "faulty"


def conv(q: str, a: str) -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


# (line, expected rejection: (field prefix, words in the reason)); None = accepted.
BAD_LINES = [
    (json.dumps({"id": "img-ok", "image": "ok.png", "conversations": conv("<image>\nColour?", "red")}), None),
    (json.dumps({"id": "txt-ok", "conversations": conv("1+1?", "2")}), None),
    ('{"id": "broken", "conversations": [', ("(record)", "malformed JSON")),
    (json.dumps({"id": "no-img", "image": "missing.png", "conversations": conv("<image>\nx", "y")}),
     ("image", "unreadable")),
    (json.dumps({"id": "bad-img", "image": "corrupt.png", "conversations": conv("<image>\nx", "y")}),
     ("image", "corrupt image")),
    (json.dumps({"id": "empty", "conversations": conv("q", " ")}), ("conversations[1].value", "empty answer")),
    (json.dumps({"id": "huge", "conversations": conv("q", "x" * 9000)}), ("conversations[1].value", "longer than")),
    (json.dumps({"id": "too-long-for-the-model", "conversations": conv("y" * 200, "z")}),
     ("conversations", "maxLength")),
    (json.dumps({"id": "int-value", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]}),
     ("conversations[0].value", "must be a string")),
    (json.dumps({"id": ["a", "list"], "conversations": conv("q", "a")}), ("id", "non-empty string")),
    (json.dumps({"id": "conv-str", "conversations": "hello"}), ("conversations", "non-empty list")),
    (json.dumps({"id": "txt-ok", "conversations": conv("again", "x")}), ("id", "duplicate")),
    (json.dumps({"id": "escape", "image": "../../etc/passwd", "conversations": conv("<image>\nx", "y")}),
     ("image", "without '..'")),
    (json.dumps({"id": "abs", "image": "/etc/passwd", "conversations": conv("<image>\nx", "y")}), ("image", "relative")),
    (json.dumps({"id": "other-bucket", "image": "s3://elsewhere/x.png", "conversations": conv("<image>\nx", "y")}),
     ("image", "relative")),
    # These three passed ingest and then crashed extract for the whole dataset, with no record id.
    (json.dumps({"id": "no-token", "image": "ok.png", "conversations": conv("Colour?", "red")}),
     ("conversations", "exactly one <image>")),
    (json.dumps({"id": "two-tokens", "image": "ok.png", "conversations": conv("<image>\n<image>\nx", "y")}),
     ("conversations", "exactly one <image>")),
    (json.dumps({"id": "token-in-answer", "image": "ok.png", "conversations": conv("<image>\nx", "a <image>")}),
     ("conversations[1].value", "must not contain <image>")),
    ('{"id": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", ("(record)", "nested too deeply")),
    ('{"id": "bigint", "n": ' + "1" * 5000 + "}", ("(record)", "5000 digits")),
]
NON_UTF8 = b'{"id": "latin1", "conversations": [{"from": "human", "value": "caf\xe9"}]}'


@pytest.fixture
def env(s3_bucket, tiny_model_dir, tmp_path, monkeypatch):
    """The dataset and its images on S3; the run's store in a local directory."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s3 = open_store(f"s3://{s3_bucket}")
    s3.write_bytes("imgs/ok.png", png("red"))
    s3.write_bytes("imgs/corrupt.png", b"\x89PNG\r\n\x1a\n not an image")
    store = tmp_path / "store"
    run = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": RUN},
           "spec": {"model": {"base": str(tiny_model_dir)}, "strategy": "random", "trainBudget": 4,
                    "training": {"maxLength": 64}, "storage": {"uri": str(store)}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    return {"bucket": s3_bucket, "s3": s3, "store": store, "tmp": tmp_path}


def dataset_file(env, name: str, source: str, image_root: str | None = None) -> Path:
    spec = {"run": RUN, "source": source, **({"imageRoot": image_root} if image_root else {})}
    path = env["tmp"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "adaptinf.dev/v1alpha1", "kind": "InstructionDataset",
                                    "metadata": {"name": name}, "spec": spec}))
    return path


def extract(env, step: int, dataset: Path) -> int:
    return cli(["stage", "extract", "--run", RUN, "--step", str(step), "--no-progress", "--store", str(env["store"]),
                "-f", str(env["tmp"] / "run.yaml"), "-f", str(dataset)])


def snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def finish_step(env, step: int) -> None:
    """Stand in for the step's later stages: the pool manifest after the step (what prune saves)."""
    ctx = build_context(RUN, step, LocalStore(env["store"]))
    save_pool(ctx.store, candidate_pool(ctx))


def test_partly_bad_dataset_keeps_the_good_records_and_reports_every_bad_one(env):
    bucket, s3 = env["bucket"], env["s3"]
    s3.write_text("good.jsonl", "".join(json.dumps({"id": f"g{i}", "conversations": conv(f"{i}+0?", str(i))}) + "\n"
                                        for i in range(5)))
    assert extract(env, 0, dataset_file(env, "first", f"s3://{bucket}/good.jsonl")) == 0
    finish_step(env, 0)
    before = snapshot(env["store"])

    s3.write_bytes("bad.jsonl", "\n".join(line for line, _ in BAD_LINES).encode() + b"\n" + NON_UTF8 + b"\n")
    assert extract(env, 1, dataset_file(env, "mixed", f"s3://{bucket}/bad.jsonl", f"s3://{bucket}/imgs")) == 0

    store = LocalStore(env["store"])
    ingest = layout.stage_prefix(RUN, 1, "ingest")
    report = store.read_json(f"{ingest}/report.json")
    expected = [(n, want) for n, (_, want) in enumerate(BAD_LINES, start=1) if want is not None]
    expected.append((len(BAD_LINES) + 1, ("(record)", "UTF-8")))
    assert report["accepted"] == 2 and report["rejected_count"] == len(expected)
    by_line = {r["line"]: r for r in report["rejected"] if r["line"] is not None}
    by_id = {r["id"]: r for r in report["rejected"] if r["line"] is None}  # model-length checks come later
    for line, (fld, words) in expected:
        rec_id = json.loads(BAD_LINES[line - 1][0]).get("id") if line <= len(BAD_LINES) and fld != "(record)" \
            else None
        got = by_line.get(line) or by_id.get(rec_id)
        assert got is not None, f"line {line} ({words}) not reported: {report['rejected']}"
        assert got["field"].startswith(fld) and words in got["reason"], (line, got)
    # The counts the operator copies into the InstructionDataset's status.
    assert store.read_marker(ingest)["summary"] == {"accepted": 2, "rejected": len(expected)}

    # Step 0 (its records, its pool manifest) is byte for byte what it was; the new pool adds the good two.
    after = snapshot(env["store"])
    assert {k: v for k, v in after.items() if k in before} == before
    shard = layout.shard_prefix(RUN, 1, 0, 1)
    assert store.read_json(f"{shard}/uids.json") == load_pool(store, RUN, 0).members + ["mixed/img-ok", "mixed/txt-ok"]


def test_dataset_without_a_usable_record_exits_2_and_leaves_the_pool(env):
    bucket, s3 = env["bucket"], env["s3"]
    s3.write_text("good.jsonl", json.dumps({"id": "g", "conversations": conv("1?", "1")}) + "\n")
    assert extract(env, 0, dataset_file(env, "first", f"s3://{bucket}/good.jsonl")) == 0
    finish_step(env, 0)
    before = snapshot(env["store"])
    store = LocalStore(env["store"])

    # A source in a bucket that does not exist: one rejection naming it, exit 2.
    assert extract(env, 1, dataset_file(env, "gone", "s3://no-such-bucket-adaptinf/data.jsonl")) == 2
    report = store.read_json(f"{layout.stage_prefix(RUN, 1, 'ingest')}/report.json")
    assert report["accepted"] == 0 and report["rejected"][0]["field"] == "source"
    assert "s3://no-such-bucket-adaptinf/data.jsonl" in report["rejected"][0]["reason"]
    assert "NoSuchBucket" in report["rejected"][0]["reason"]
    assert store.read_marker(layout.stage_prefix(RUN, 1, "ingest"))["summary"] == {"accepted": 0, "rejected": 1}
    assert not store.is_committed(layout.shard_prefix(RUN, 1, 0, 1))

    # Every image on an S3 root that cannot be reached, and a missing local file: exit 2 as well.
    s3.write_text("imgs.jsonl", json.dumps({"id": "i", "image": "a.png", "conversations": conv("<image>\nx", "y")}))
    assert extract(env, 2, dataset_file(env, "no-images", f"s3://{bucket}/imgs.jsonl",
                                        "s3://no-such-bucket-adaptinf/imgs")) == 2
    rejected = store.read_json(f"{layout.stage_prefix(RUN, 2, 'ingest')}/report.json")["rejected"]
    assert [(r["id"], r["field"]) for r in rejected] == [("i", "image")] and "NoSuchBucket" in rejected[0]["reason"]
    assert extract(env, 3, dataset_file(env, "no-file", str(env["tmp"] / "absent.jsonl"))) == 2

    after = snapshot(env["store"])
    assert {k: v for k, v in after.items() if k in before} == before
    assert not any(k.startswith(f"{RUN}/pool/") for k in set(after) - set(before))


def test_store_outage_during_ingest_is_retried_not_a_bad_dataset(env, monkeypatch, port_finder):
    bucket = env["bucket"]
    env["s3"].write_text("good.jsonl", json.dumps({"id": "g", "conversations": conv("1?", "1")}) + "\n")
    ds = dataset_file(env, "first", f"s3://{bucket}/good.jsonl")
    endpoint = os.environ["AWS_ENDPOINT_URL_S3"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port_finder()}")  # S3 is down
    monkeypatch.setenv("ADAPTINF_S3_MAX_ATTEMPTS", "2")
    assert extract(env, 0, ds) == 1  # a crash: the Job's backoffLimit retries it
    store = LocalStore(env["store"])
    assert not store.is_committed(layout.stage_prefix(RUN, 0, "ingest"))  # nothing recorded as rejected
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    assert extract(env, 0, ds) == 0  # S3 is back: the retry ingests the dataset
    assert store.read_marker(layout.stage_prefix(RUN, 0, "ingest"))["summary"] == {"accepted": 1, "rejected": 0}


def test_a_record_too_long_for_extract_is_rejected_at_ingest_not_in_extract(env):
    """extract.maxLength below training's: a record that fits training but not extract used to
    pass ingest and then fail extract for the whole dataset."""
    run = yaml.safe_load((env["tmp"] / "run.yaml").read_text())
    run["spec"]["extract"] = {"maxLength": 32}
    (env["tmp"] / "run.yaml").write_text(yaml.safe_dump(run))
    lines = [json.dumps({"id": "short", "conversations": conv("1+1?", "2")}),
             json.dumps({"id": "fits-training-only", "conversations": conv("y" * 40, "z")})]
    env["s3"].write_text("mid.jsonl", "\n".join(lines) + "\n")
    assert extract(env, 0, dataset_file(env, "mid", f"s3://{env['bucket']}/mid.jsonl")) == 0
    store = LocalStore(env["store"])
    report = store.read_json(f"{layout.stage_prefix(RUN, 0, 'ingest')}/report.json")
    assert report["accepted"] == 1
    (rejected,) = report["rejected"]
    assert rejected["id"] == "fits-training-only" and rejected["field"] == "conversations"
    assert "maxLength=32" in rejected["reason"] and "extract.maxLength" in rejected["reason"], rejected
