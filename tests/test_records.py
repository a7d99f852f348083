"""Bad records are rejected with a reason naming the record and field; good ones go on."""
from __future__ import annotations

import io
import json

from PIL import Image

from adaptinf.data.records import read_records


def _conv(q: str, a: str) -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def _write_dataset(root):
    (root / "img").mkdir()
    Image.new("RGB", (8, 8), "red").save(root / "img" / "ok.png")
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG not really")
    good_img = {"id": "a", "image": "img/ok.png", "conversations": _conv("<image>\nColour?", "red")}
    good_txt = {"id": "b", "conversations": _conv("1+1?", "2")}
    lines = [json.dumps(good_img), json.dumps(good_txt),
             '{"id": "c", "conversations": [',                                           # malformed
             json.dumps({"id": "d", "image": "img/missing.png", "conversations": _conv("<image>\nx", "y")}),
             json.dumps({"id": "e", "image": "img/corrupt.png", "conversations": _conv("<image>\nx", "y")}),
             json.dumps({"id": "f", "conversations": _conv("q", "  ")}),                  # empty answer
             json.dumps({"id": "g", "conversations": [{"from": "human", "value": 3},
                                                      {"from": "gpt", "value": "x"}]}),   # wrong type
             json.dumps({"id": "a", "conversations": _conv("dup", "x")}),                  # duplicate id
             json.dumps({"id": "h", "image": "../../etc/passwd", "conversations": _conv("<image>\nx", "y")}),
             json.dumps({"id": "i", "image": "/etc/passwd", "conversations": _conv("<image>\nx", "y")}),
             json.dumps({"id": "j", "conversations": _conv("q", "x" * 50000)}),            # over-long answer
             ]
    data = ("\n".join(lines) + "\n").encode() + b'{"id": "k", "conversations": "\xff\xfe"}\n'
    (root / "data.jsonl").write_bytes(data)
    return root / "data.jsonl"


def test_bad_records_are_reported_and_good_ones_kept(tmp_path):
    records, report = read_records(str(_write_dataset(tmp_path)), dataset="ds")
    assert [r.id for r in records] == ["a", "b"]
    assert records[0].image.endswith("img/ok.png") and records[1].image is None
    assert records[0].uid == "ds/a"
    by_line = {r.line: r for r in report.rejected}
    assert report.accepted == 2 and len(report.rejected) == 10
    assert "malformed JSON" in by_line[3].reason
    assert by_line[4].id == "d" and by_line[4].field == "image" and "unreadable" in by_line[4].reason
    assert by_line[5].field == "image" and "corrupt" in by_line[5].reason
    assert by_line[6].field == "conversations[1].value" and "empty answer" in by_line[6].reason
    assert by_line[7].field == "conversations[0].value"
    assert by_line[8].id == "a" and "duplicate" in by_line[8].reason
    assert by_line[9].field == "image" and ".." in by_line[9].reason
    assert by_line[10].field == "image"
    assert by_line[11].field == "conversations[1].value" and "longer" in by_line[11].reason
    assert "UTF-8" in by_line[12].reason
    assert json.loads(json.dumps(report.to_json()))["accepted"] == 2


def test_missing_file_is_one_rejection(tmp_path):
    records, report = read_records(str(tmp_path / "nope.jsonl"), dataset="ds")
    assert records == [] and len(report.rejected) == 1
    assert report.rejected[0].field == "source" and "nope.jsonl" in report.rejected[0].reason


def test_json_list_format_and_s3_source(s3_bucket, tmp_path):
    import boto3
    from adaptinf.store import open_store
    recs = [{"id": str(i), "conversations": _conv(f"{i}+0?", str(i))} for i in range(3)]
    open_store(f"s3://{s3_bucket}/d").write_text("data.json", json.dumps(recs))
    records, report = read_records(f"s3://{s3_bucket}/d/data.json", dataset="s3ds")
    assert [r.id for r in records] == ["0", "1", "2"] and not report.rejected
    records, report = read_records(f"s3://{s3_bucket}/d/absent.json", dataset="s3ds")
    assert not records and report.rejected[0].field == "source"
    assert boto3  # the S3 client used above is the real one against the local server


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height (what a decompression bomb looks like to the
    header reader); built by patching a real 1×1 PNG's IHDR and its CRC."""
    import struct
    import zlib
    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_hostile_and_inconsistent_records_are_rejected_one_by_one(tmp_path):
    """Each of these used to escape read_records (RecursionError, DecompressionBombError, the int
    conversion limit), be followed (a symlink out of the root) or pass ingest and crash extract for
    the whole dataset (image/placeholder mismatches)."""
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(root / "img" / "ok.png")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), "blue").save(outside)
    (root / "img" / "link.png").symlink_to(outside)
    (root / "img" / "inner.png").symlink_to(root / "img" / "ok.png")  # a link inside the root is fine
    (root / "img" / "bomb.png").write_bytes(_bomb_png(14000, 14000))
    (root / "img" / "large.png").write_bytes(_bomb_png(9000, 9000))  # under Pillow's error, over ours
    lines = [
        json.dumps({"id": "ok", "image": "img/ok.png", "conversations": _conv("<image>\nColour?", "red")}),
        json.dumps({"id": "no-token", "image": "img/ok.png", "conversations": _conv("Colour?", "red")}),
        json.dumps({"id": "two-tokens", "image": "img/ok.png", "conversations": _conv("<image><image>\nx", "y")}),
        json.dumps({"id": "in-answer", "image": "img/ok.png",
                    "conversations": _conv("<image>\nx", "see <image>")}),
        '{"id": "deep", "x": ' + "[" * 200_000 + "]" * 200_000 + ', "conversations": []}',
        json.dumps({"id": "bomb", "image": "img/bomb.png", "conversations": _conv("<image>\nx", "y")}),
        json.dumps({"id": "large", "image": "img/large.png", "conversations": _conv("<image>\nx", "y")}),
        '{"id": "bigint", "n": ' + "9" * 5000 + ', "conversations": []}',
        json.dumps({"id": "symlink", "image": "img/link.png", "conversations": _conv("<image>\nx", "y")}),
        json.dumps({"id": "inner", "image": "img/inner.png", "conversations": _conv("<image>\nx", "y")}),
    ]
    (root / "data.jsonl").write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    records, report = read_records(str(root / "data.jsonl"), dataset="ds")
    assert [r.id for r in records] == ["ok", "inner"]  # the BOM no longer costs the first record
    got = {r.id: (r.field, r.reason) for r in report.rejected}
    assert set(got) == {"no-token", "two-tokens", "in-answer", "deep", "bomb", "large", "bigint",
                        "symlink"}
    assert got["no-token"][0] == "conversations" and "found 0" in got["no-token"][1]
    assert "found 2" in got["two-tokens"][1]
    assert got["in-answer"][0] == "conversations[1].value" and "<image>" in got["in-answer"][1]
    assert "nested too deeply" in got["deep"][1]
    assert got["bomb"][0] == "image" and "decompression bomb" in got["bomb"][1]
    assert got["large"][0] == "image" and "9000×9000" in got["large"][1]
    assert "5000 digits" in got["bigint"][1]
    assert got["symlink"][0] == "image" and "outside the image root" in got["symlink"][1]
    assert all(r.line is not None for r in report.rejected)


def test_bom_on_a_json_list_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"id": "a", "conversations": _conv("q", "a")}]).encode())
    records, report = read_records(str(path), dataset="ds")
    assert [r.id for r in records] == ["a"] and report.rejected == []


def test_the_warning_names_the_first_rejection_readably(tmp_path, caplog):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"id": "x", "conversations": _conv("q", " ")}) + "\n")
    read_records(str(path), dataset="ds")
    assert "0 records accepted, 1 rejected (first: line 1, id 'x': conversations[1].value: empty answer" in caplog.text
    assert "Rejection(" not in caplog.text  # before: the dataclass's repr
