"""Runs one stage idempotently: a committed stage is not run again; a half-written one (a
crash mid-write) is cleared and started over; outputs are sealed by the commit marker."""
from __future__ import annotations

import logging
import time
from typing import Any
from collections.abc import Callable

from adaptinf import layout, threads
from adaptinf.training import distributed

from .context import StageContext

log = logging.getLogger(__name__)


def stage_prefix(ctx: StageContext, stage: str) -> str:
    if stage == "extract":
        return layout.shard_prefix(ctx.run, ctx.step, ctx.shard_index, ctx.shard_count)
    return ctx.prefix(stage)


def run_idempotent(stage: str, ctx: StageContext, body: Callable[[StageContext, str], dict[str, Any]]) -> dict[str, Any]:
    """`body(ctx, prefix)` writes below `prefix` and returns a small summary dict."""
    prefix = stage_prefix(ctx, stage)
    if ctx.store.is_committed(prefix):
        log.info("%s of %s step %d is already done: nothing to do", stage, ctx.run, ctx.step)
        return ctx.store.read_marker(prefix).get("summary", {})
    threads.apply(ctx.spec.resources.for_stage(stage).threads)  # the CPUs this process really has
    # Several training processes (one per GPU) run the same body; only the main one writes.
    main = distributed.is_main()
    if main:
        ctx.store.clear(prefix)
    distributed.barrier()
    start = time.perf_counter()
    summary = body(ctx, prefix)
    seconds = time.perf_counter() - start
    if main:
        ctx.store.commit(prefix, {"stage": stage, "step": ctx.step, "seconds": seconds, "summary": summary})
    distributed.barrier()
    log.info("%s of %s step %d done in %.1fs: %s", stage, ctx.run, ctx.step, seconds, summary)
    return summary
