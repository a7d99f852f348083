"""Ingest: validate the step's dataset into the store and form the candidate pool.

Runs inside extract (every shard may do it; the result is deterministic and written
atomically, so a race is harmless). Good records join; bad ones are listed with reasons in
`ingest/report.json`. A dataset without a single usable record fails the step with a clear
message, and the pool of earlier steps is left untouched.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from adaptinf import layout
from adaptinf.data.pool import DatasetSource, PoolManifest, empty_pool, load_pool, save_pool
from adaptinf.data.records import Record, Rejection, dump_jsonl, load_jsonl, read_records
from adaptinf.model.checkpoints import base_source
from adaptinf.model.encoding import Encoder, EncodingError
from adaptinf.model.loading import load_base, materialise

from .context import StageContext, StageError

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"


def _length_checks(ctx: StageContext) -> list[tuple[str, Encoder]]:
    """The encoders a record must fit: training's on the base, and extract's (its own maxLength,
    and the proxy's tokenizer when one is set) when that differs. A record that fits training but
    not extract would pass ingest and then fail extract for the whole dataset."""
    base = load_base(base_source(ctx), weights=False)
    training, x = ctx.spec.training, ctx.spec.extract
    checks = [("training.maxLength", Encoder(base, training.max_length))]
    if x.proxy_model:
        checks.append(("extract.maxLength", Encoder(load_base(_proxy_tokenizer_source(x.proxy_model),
                                                              weights=False), x.max_length)))
    elif x.max_length < training.max_length:
        checks.append(("extract.maxLength", Encoder(base, x.max_length)))
    return checks


def _proxy_tokenizer_source(proxy: str) -> str:
    """A proxy folder holding a PEFT adapter encodes with the base its adapter names."""
    source = materialise(proxy)
    adapter = Path(source) / "adapter_config.json"
    return json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.exists() else source


def _check_lengths(ctx: StageContext, records: list[Record]) -> tuple[list[Record], list[Rejection]]:
    if not records:  # nothing to measure: do not load the model (it may be what is misconfigured)
        return [], []
    checks = _length_checks(ctx)
    good, bad = [], []
    for rec in records:
        try:
            for field, encoder in checks:
                failed = field
                encoder.encode(rec)
            good.append(rec)
        except EncodingError as err:
            bad.append(Rejection(None, rec.id, "conversations", f"{err} ({failed})"))
    return good, bad


def ingest(ctx: StageContext) -> list[Record]:
    prefix = ctx.prefix("ingest")
    if ctx.store.is_committed(prefix):
        records = load_jsonl(ctx.store.read_bytes(f"{prefix}/{RECORDS}"))
        if records:
            return records
        # An all-rejected dataset stays a skipped step: never an empty ingest that later stages
        # take as a step over the old pool. Read the source again: it may have been fixed since,
        # unless later steps were built without it (taking it now would slip this step in behind
        # them: their pools and adapters would not contain it while the summary looks in order).
        later = steps_built_after(ctx)
        if later:
            raise StageError(
                f"dataset {ctx.dataset!r} had no usable record when step {ctx.step} ran and step(s) "
                f"{', '.join(map(str, later))} have been built without it since, so step {ctx.step} stays "
                f"skipped; to take a fixed source, run again from step {ctx.step} (run-local --restart-from "
                f"{ctx.step}) or apply it as a new InstructionDataset; see {ctx.store.uri(prefix)}/report.json")
        log.info("step %d: dataset %r had no usable record: reading its source again", ctx.step, ctx.dataset)
    ds = ctx.dataset_spec
    records, report = read_records(ds.source, dataset=ctx.dataset, image_root=ds.image_root, fmt=ds.format)
    records, too_long = _check_lengths(ctx, records)
    report.rejected += too_long
    report.accepted = len(records)
    ctx.store.clear(prefix)
    ctx.store.write_json(f"{prefix}/report.json", report.to_json())
    ctx.store.write_bytes(f"{prefix}/{RECORDS}", dump_jsonl(records))
    ctx.store.commit(prefix, {"summary": {"accepted": len(records), "rejected": len(report.rejected)}})
    if not records:
        first = report.rejected[0] if report.rejected else None
        raise StageError(f"dataset {ctx.dataset!r} has no usable record ({len(report.rejected)} rejected"
                         + (f"; first: {first.field}: {first.reason}" if first else "") + f"); see {ctx.store.uri(prefix)}/report.json")
    return records


def steps_built_after(ctx: StageContext) -> list[int]:
    """Later steps that formed their pool already: their extract began, or (a joint run's
    ingest-only step) their pool manifest exists."""
    keys = [k.split("/") for k in ctx.store.list(f"{ctx.run}/steps/")]
    later = {int(parts[2]) for parts in keys if int(parts[2]) > ctx.step}
    return sorted(s for s in later if ctx.store.exists(layout.pool_key(ctx.run, s))
                  or any(int(parts[2]) == s and parts[3] == "extract" for parts in keys))


def candidate_pool(ctx: StageContext) -> PoolManifest:
    """The pool after the previous step plus this step's dataset (ingest must have run)."""
    prefix = ctx.prefix("ingest")
    if not ctx.store.is_committed(prefix):
        raise StageError(f"step {ctx.step} of {ctx.run!r} has no ingested dataset: run extract first")
    previous = previous_pool(ctx)
    records = load_jsonl(ctx.store.read_bytes(f"{prefix}/{RECORDS}"))
    if not records:  # a skipped step: no stage may turn it into a step over the old pool
        raise StageError(f"step {ctx.step} of {ctx.run!r}: dataset {ctx.dataset!r} has no usable record; "
                         f"see {ctx.store.uri(prefix)}/report.json")
    source = DatasetSource(ctx.dataset, ctx.step, f"{prefix}/{RECORDS}", len(records))
    return previous.extended(ctx.step, source, [r.uid for r in records])


def join_pool(ctx: StageContext) -> int:
    """An earlier step of a joint run (`Strategy.joint`, multitask): the dataset is ingested and
    joins the pool; nothing is selected, trained or evaluated. Returns the pool size."""
    ingest(ctx)
    pool = candidate_pool(ctx)
    if not ctx.store.exists(layout.pool_key(ctx.run, ctx.step)):
        save_pool(ctx.store, pool)
    return len(pool.members)


def previous_pool(ctx: StageContext) -> PoolManifest:
    """The latest pool manifest before this step (a step whose dataset failed leaves none)."""
    for step in range(ctx.step - 1, -1, -1):
        if ctx.store.exists(layout.pool_key(ctx.run, step)):
            return load_pool(ctx.store, ctx.run, step)
    return empty_pool(ctx.run)
