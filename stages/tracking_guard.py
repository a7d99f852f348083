"""Keep MLflow truthful when a stage does not finish.

A stage that raises marks its step's child run FAILED; one stopped by SIGTERM (Kubernetes
sends it before killing a pod: a deleted Job, `activeDeadlineSeconds`, eviction, preemption)
marks it KILLED. A SIGKILL or an OOM kill leaves no chance to do either, so every stage first
marks children of *other* steps still RUNNING as FAILED: steps run one after the other, so such
a child belongs to a step that crashed and will not come back. The step's own child is reopened
by its retry (Tracker.step_id).
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from .context import StageContext

log = logging.getLogger(__name__)

SIGTERM_EXIT = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """SIGTERM arrived: unwind (closing files, marking MLflow) and exit 143 like a killed pod."""

    def __init__(self) -> None:
        super().__init__(SIGTERM_EXIT)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _mark(ctx: StageContext, status: str) -> None:
    try:  # never hide the stage's own error behind a tracking error
        if ctx.tracker.mark_step(ctx.step, status):
            log.warning("MLflow run of %s step %d marked %s", ctx.run, ctx.step, status)
    except Exception as err:
        log.warning("could not mark the MLflow run of step %d %s: %s", ctx.step, status, err)


@contextlib.contextmanager
def tracked_attempt(ctx: StageContext, stage: str) -> Iterator[None]:
    """Run one stage attempt; on the way out through an error, record it in MLflow. SIGTERM is
    handled with or without tracking: as a container's PID 1 a process without a handler ignores
    it, and the pod would wait out its grace period and end in SIGKILL (137) instead of 143."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        if not ctx.tracker.enabled:
            yield
        else:
            with _recorded(ctx, stage):
                yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _recorded(ctx: StageContext, stage: str) -> Iterator[None]:
    if stage != "extract":  # extract runs before the step's child exists (and in parallel shards)
        try:
            ctx.tracker.fail_open_runs(except_step=ctx.step)
        except Exception as err:
            log.warning("could not check MLflow for runs left open by a crash: %s", err)
    try:
        yield
    except (Terminated, KeyboardInterrupt):
        _mark(ctx, "KILLED")
        raise
    except BaseException:
        _mark(ctx, "FAILED")
        raise
