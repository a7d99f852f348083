"""LLaVA-style instruction records: reading, validation, and the per-record rejection report.

A record is `{"id", "image" (optional), "conversations": [{"from": "human"|"gpt", "value"}...],
"skill" (optional, evaluation only)}`. Reading never stops at a bad record: each one is
rejected with a reason naming the line and field, and the good ones go on.

A store that is down (StoreUnavailable: S3 outage, network cut) is not bad data: it propagates,
so the stage fails and is retried instead of dropping every record it could not read.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from collections.abc import Iterator

from ..store import StoreError, StoreUnavailable, read_uri

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
MAX_ANSWER_CHARS = 8192
MAX_INT_DIGITS = 64           # ids and counts are short; a 5000-digit number is an attack or a bug
MAX_IMAGE_PIXELS = 64_000_000  # 8000×8000: far above any vision tower's input, far below a bomb
HUMAN, GPT = "human", "gpt"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Record:
    id: str
    conversations: tuple[tuple[str, str], ...]  # (role, text), roles alternate human/gpt
    image: str | None = None                      # resolved URI: absolute path or s3://
    skill: str | None = None
    dataset: str = ""

    @property
    def uid(self) -> str:
        """Pool-wide identity: ids need only be unique within their dataset."""
        return f"{self.dataset}/{self.id}"

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "dataset": self.dataset,
               "conversations": [{"from": r, "value": v} for r, v in self.conversations]}
        if self.image is not None:
            out["image"] = self.image
        if self.skill is not None:
            out["skill"] = self.skill
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        """Inverse of to_json, for records already validated and stored."""
        return cls(id=obj["id"], dataset=obj.get("dataset", ""), image=obj.get("image"), skill=obj.get("skill"),
                   conversations=tuple((c["from"], c["value"]) for c in obj["conversations"]))


@dataclass
class Rejection:
    line: int | None     # 1-based line (JSONL) or item index (JSON); None for file-level errors
    id: str | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = ", ".join(p for p in (f"line {self.line}" if self.line is not None else "",
                                      f"id {self.id!r}" if self.id is not None else "") if p)
        return f"{where + ': ' if where else ''}{self.field}: {self.reason}"


@dataclass
class ReadReport:
    source: str
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "accepted": self.accepted, "rejected_count": len(self.rejected),
                "rejected": [asdict(r) for r in self.rejected]}


class RecordError(ValueError):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def _join(base: str | None, rel: str) -> str:
    """`rel` under the dataset's image root; a path that could leave the root is refused, so a
    record cannot make a pod read `/etc/passwd` or another tenant's bucket."""
    parts = rel.replace("\\", "/").split("/")
    if "://" in rel or rel.startswith("/") or ".." in parts or ":" in parts[0]:
        raise RecordError("image", f"path {rel!r} must be relative to the image root, without '..'")
    joined = f"{base.rstrip('/')}/{rel}" if base else rel
    if "://" not in (base or ""):
        _inside_root(base or ".", joined, rel)
    return joined


def _inside_root(base: str, joined: str, rel: str) -> None:
    """A local symlink under the root may point anywhere: follow it and refuse what lands outside
    (the lexical check above cannot see this)."""
    root = os.path.realpath(base)
    real = os.path.realpath(joined)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise RecordError("image", f"path {rel!r} is a symlink that leads outside the image root")


def _check_image(uri: str) -> None:
    from PIL import Image, UnidentifiedImageError
    try:
        data = read_uri(uri)
    except StoreUnavailable:
        raise
    except StoreError as err:
        raise RecordError("image", f"unreadable: {err}") from None
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only: the size is known
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise RecordError("image", f"{width}×{height} pixels is over the {MAX_IMAGE_PIXELS} limit "
                                           "(a decompression bomb, or an image far too large to train on)")
            img.verify()
    except RecordError:
        raise
    except Image.DecompressionBombError as err:
        raise RecordError("image", f"decompression bomb {uri}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RecordError("image", f"corrupt image {uri}: {err}") from None


def validate_record(obj: Any, dataset: str, image_root: str | None, check_images: bool = True,
                    max_answer_chars: int = MAX_ANSWER_CHARS) -> Record:
    """One raw JSON value → Record, or RecordError naming the field."""
    if not isinstance(obj, dict):
        raise RecordError("(record)", f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not rid.strip():
        raise RecordError("id", "missing or not a non-empty string")
    conv = obj.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RecordError("conversations", "missing or not a non-empty list")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise RecordError(f"conversations[{i}]", "not an object")
        role, value = turn.get("from"), turn.get("value")
        if role not in (HUMAN, GPT):
            raise RecordError(f"conversations[{i}].from", f"must be 'human' or 'gpt', got {role!r}")
        if not isinstance(value, str):
            raise RecordError(f"conversations[{i}].value", f"must be a string, got {type(value).__name__}")
        expected = HUMAN if i % 2 == 0 else GPT
        if role != expected:
            raise RecordError(f"conversations[{i}].from", "turns must alternate human/gpt starting with human")
        if role == GPT:
            if IMAGE_TOKEN in value:
                raise RecordError(f"conversations[{i}].value", f"an answer must not contain {IMAGE_TOKEN}")
            if not value.strip():
                raise RecordError(f"conversations[{i}].value", "empty answer")
            if len(value) > max_answer_chars:
                raise RecordError(f"conversations[{i}].value", f"answer longer than {max_answer_chars} characters")
        turns.append((role, value))
    if turns[-1][0] != GPT:
        raise RecordError("conversations", "must end with a gpt answer")
    image = obj.get("image")
    tokens = sum(v.count(IMAGE_TOKEN) for _, v in turns)
    if image is not None:
        if not isinstance(image, str) or not image.strip():
            raise RecordError("image", "must be a path string or absent")
        # The model merges one image's features into exactly one placeholder: any other count
        # crashes extract for the whole dataset ("image features and image tokens do not match").
        if tokens != 1:
            raise RecordError("conversations", f"a record with an image needs exactly one {IMAGE_TOKEN} "
                                               f"in its prompt, found {tokens}")
        image = _join(image_root, image)
        if check_images:
            _check_image(image)
    elif any(IMAGE_TOKEN in v for _, v in turns):
        raise RecordError("image", f"text contains {IMAGE_TOKEN} but the record has no image")
    skill = obj.get("skill")
    if skill is not None and not isinstance(skill, str):
        raise RecordError("skill", "must be a string")
    return Record(id=rid, conversations=tuple(turns), image=image, skill=skill, dataset=dataset)


_RAW_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')


def _raw_id(data: bytes | None) -> str | None:
    """The id of a record that does not parse, when its text shows one: the report can name it."""
    m = _RAW_ID.search(data[:4096]) if data else None
    return m.group(1).decode("utf-8", "replace") if m else None


class _HugeInt(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _HugeInt(f"an integer of {len(text.lstrip('-'))} digits (over {MAX_INT_DIGITS})")
    return int(text)


def _loads(text: str) -> Any:
    """json.loads, with the ways a hostile or broken file escapes it turned into JSONDecodeError-like
    ValueErrors: nesting deep enough to exhaust the C stack guard, integers too long to convert."""
    try:
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except _HugeInt as err:
        raise ValueError(str(err)) from None


def _raw_items(data: bytes, fmt: str) -> Iterator[tuple[int | None, Any, str | None, bytes | None]]:
    """(line or index, parsed value or None, error, raw line) for each item of the file."""
    if data.startswith(BOM):  # editors on Windows add one; it is not part of the first record
        data = data[len(BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if fmt == "json":
        if text is None:
            yield None, None, "file is not valid UTF-8", None
            return
        try:
            items = _loads(text)
        except ValueError as err:
            yield None, None, f"malformed JSON: {err}", None
            return
        if not isinstance(items, list):
            yield None, None, "a .json dataset must hold a list of records", None
            return
        for i, item in enumerate(items):
            yield i, item, None, None
        return
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield n, None, f"not valid UTF-8 ({err.reason} at byte {err.start})", raw
            continue
        try:
            item = _loads(line)
        except json.JSONDecodeError as err:
            yield n, None, f"malformed JSON: {err.msg} at column {err.colno}", raw
            continue
        except ValueError as err:
            yield n, None, f"malformed JSON: {err}", raw
            continue
        yield n, item, None, raw


def read_records(source: str, dataset: str, image_root: str | None = None, fmt: str = "auto",
                 check_images: bool = True) -> tuple[list[Record], ReadReport]:
    """Read a JSON/JSONL dataset from a local path or s3:// URI; bad records go to the report."""
    report = ReadReport(source=source)
    if fmt == "auto":
        fmt = "json" if source.endswith(".json") else "jsonl"
    if image_root is None:
        image_root = source.rsplit("/", 1)[0] if "/" in source else None
    try:
        data = read_uri(source)
    except StoreUnavailable:
        raise
    except StoreError as err:
        report.rejected.append(Rejection(None, None, "source", str(err)))
        return [], report
    records: list[Record] = []
    seen: set[str] = set()
    for where, item, error, raw in _raw_items(data, fmt):
        rid = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        if error is not None:
            rid = _raw_id(raw)
            report.rejected.append(Rejection(where, rid, "(record)" if where is not None else "source", error))
            continue
        try:
            rec = validate_record(item, dataset, image_root, check_images)
        except RecordError as err:
            report.rejected.append(Rejection(where, rid, err.field, err.reason))
            continue
        if rec.id in seen:
            report.rejected.append(Rejection(where, rec.id, "id", "duplicate id within the dataset"))
            continue
        seen.add(rec.id)
        records.append(rec)
    report.accepted = len(records)
    if report.rejected:
        log.warning("%s: %d records accepted, %d rejected (first: %s)", source, report.accepted,
                    len(report.rejected), report.rejected[0])
    return records, report


def dump_jsonl(records: list[Record]) -> bytes:
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def load_jsonl(data: bytes) -> list[Record]:
    return [Record.from_json(json.loads(line)) for line in data.decode("utf-8").splitlines() if line.strip()]
