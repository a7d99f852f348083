"""`adaptinf pool …`: look at a run's pool after any step, list the samples Lite pruning removed
for good, and put some of them back.

The prune stage keeps one pool manifest per step (`<run>/pool/step-NNNN.json`), so the pool
after any step can be rebuilt (`show --step T`). `restore` puts pruned samples back into the
latest pool: the next step's candidate pool then includes them (they are selected and pruned
like any other sample). The manifest as prune wrote it is kept beside it
(`step-NNNN.before-restore-K.json`), and the new one lists what was restored, when, and why.
Restoring while a step is in progress is refused: that step has already read the pool.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

from . import layout
from .data.pool import PoolManifest, PrunedSample, load_pool, restore, save_pool
from .store import Store, StoreError, StoreUnavailable, open_store

POOL_FILE = re.compile(r"step-(\d{4})\.json$")
STEP_DIR = re.compile(r"/steps/(\d{4})/")


class PoolBusy(RuntimeError):
    """A step after the latest pool has started: restoring now would change its input midway."""


def pool_steps(store: Store, run: str) -> list[int]:
    """Steps that have a pool manifest, in order."""
    return sorted(int(m.group(1)) for key in store.list(f"{run}/pool") if (m := POOL_FILE.search(key)))


def latest_step(store: Store, run: str) -> int:
    steps = pool_steps(store, run)
    if not steps:
        raise KeyError(f"run {run!r} has no pool manifest in {store.uri(run)}: no step has finished")
    return steps[-1]


def _started_after(store: Store, run: str, step: int) -> list[int]:
    """Steps after `step` that started and did not end without data (a dataset with no usable
    record leaves no pool behind and changes nothing)."""
    started = {int(m.group(1)) for key in store.list(f"{run}/steps") if (m := STEP_DIR.search(key))}
    busy = []
    for s in sorted(t for t in started if t > step):
        ingest = layout.stage_prefix(run, s, "ingest")
        summary = store.read_marker(ingest).get("summary", {}) if store.is_committed(ingest) else None
        if summary is None or summary.get("accepted"):
            busy.append(s)
    return busy


def list_pruned(store: Store, run: str, step: int | None = None) -> list[PrunedSample]:
    """Every sample pruned up to `step` (default: the latest) and not restored since."""
    return load_pool(store, run, latest_step(store, run) if step is None else step).pruned


def _unfinished_prune(store: Store, run: str, step: int) -> bool:
    """The step's pool manifest is written but its prune has not committed: a resumed prune
    rewrites that manifest, and a restore made in between would silently vanish."""
    return not store.is_committed(layout.stage_prefix(run, step, "prune"))


def restore_samples(store: Store, run: str, uids: list[str], note: str = "") -> tuple[PoolManifest | None, str | None]:
    """Put pruned samples back into the latest pool; returns the new manifest and where the old
    one went, or (None, None) when every sample is already a member (restoring is idempotent)."""
    step = latest_step(store, run)
    if _unfinished_prune(store, run, step):
        raise PoolBusy(f"step {step} of run {run!r} is in progress (its prune has not committed); "
                       "wait until it finishes, or resume the run, then restore")
    if busy := _started_after(store, run, step):
        raise PoolBusy(f"step {busy[0]} of run {run!r} is in progress (it has read the pool after step {step}); "
                       "wait until it finishes, or suspend the run, then restore")
    old = load_pool(store, run, step)
    uids = [u for u in dict.fromkeys(uids) if u not in set(old.members)]  # `restore U U`, or U again
    if not uids:
        return None, None
    new = restore(old, uids)
    new.restored = old.restored + [{"uid": u, "restored_at": time.time(), "note": note} for u in uids]
    key = layout.pool_key(run, step)
    stem = key.removesuffix(".json")
    earlier = [k for k in store.list(f"{run}/pool") if k.startswith(f"{stem}.before-restore-")]
    kept = f"{stem}.before-restore-{len(earlier) + 1}.json"
    store.write_bytes(kept, store.read_bytes(key))  # the manifest as it was stays readable
    save_pool(store, new)  # one atomic write: readers see the old pool or the new one
    return new, kept


# -- the command -------------------------------------------------------------------------------

def _print_pruned(pruned: list[PrunedSample], as_json: bool) -> None:
    if as_json:
        print(json.dumps([p.__dict__ for p in pruned], indent=1))
        return
    print(f"{'sample':40} {'step':>4} {'cluster':>7} {'max_sim':>8}  nearest / reason")
    for p in pruned:
        sim = f"{p.max_sim:.4f}" if p.max_sim is not None else "-"
        print(f"{p.uid:40} {p.step:>4} {p.cluster if p.cluster is not None else '-':>7} {sim:>8}  "
              f"{p.nearest or '-'} / {p.reason}")
    print(f"{len(pruned)} pruned sample(s)")


class StoreMissing(KeyError):
    pass


def _open(uri: str) -> Store:
    """The run's store; a local one must exist (a typo must not create an empty directory)."""
    from pathlib import Path
    local = uri[len("file://"):] if uri.startswith("file://") else uri
    if "://" not in local and not Path(local).expanduser().is_dir():
        what = "is not a directory" if Path(local).expanduser().exists() else "does not exist"
        raise StoreMissing(f"store {uri} {what}: give the run's workdir (run-local) or its "
                           "storage.uri")
    return open_store(uri)


def _pool_at(store: Store, run: str, step: int | None) -> PoolManifest:
    steps = pool_steps(store, run)
    if step is None:
        return load_pool(store, run, latest_step(store, run))
    if step not in steps:
        have = f"steps {steps[0]}..{steps[-1]}" if steps else "no step yet"
        raise KeyError(f"run {run!r} has no pool after step {step} (pool manifests: {have})")
    return load_pool(store, run, step)


def _restore(store: Store, args: argparse.Namespace) -> int:
    pruned = {p.uid for p in list_pruned(store, args.run)}
    uids = sorted(pruned) if args.all else args.uids
    if not uids:
        print("nothing to restore: give sample ids or --all", file=sys.stderr)
        return 2
    before = len(load_pool(store, args.run, latest_step(store, args.run)).members)
    with _lock(store):
        pool, kept = restore_samples(store, args.run, uids, args.note or "")
    if pool is None:
        print(f"nothing to do: {', '.join(dict.fromkeys(uids))} already in the pool")
        return 0
    print(f"restored {len(pool.members) - before} sample(s) into the pool after step {pool.step} "
          f"({before} -> {len(pool.members)}); the next step's candidate pool includes them. "
          f"Previous manifest kept as {store.uri(kept)}")
    return 0


def _lock(store: Store):
    """A local store is a run-local workdir: hold its lock, so no run starts mid-restore and no
    restore lands while one runs (WorkdirLocked names the holder)."""
    import contextlib

    from .runner.lock import workdir_lock
    root = store.local_path("")
    return workdir_lock(root, "pool restore") if root is not None else contextlib.nullcontext()


def _main(args: argparse.Namespace) -> int:
    from .runner.lock import WorkdirLocked
    try:
        store = _open(args.store)
        if args.action == "show":
            pool = _pool_at(store, args.run, args.step)
            if args.json:
                print(json.dumps({"run": pool.run, "step": pool.step, "size": len(pool.members),
                                  "members": pool.members}))
            else:
                print("\n".join(pool.members + [f"{len(pool.members)} sample(s) in the pool after step {pool.step}"]))
        elif args.action == "list-pruned":
            _print_pruned(_pool_at(store, args.run, args.step).pruned, args.json)
        else:
            return _restore(store, args)
    except (KeyError, PoolBusy, WorkdirLocked) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except StoreError as err:  # no credentials, no such bucket, or S3 unreachable: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, StoreUnavailable) else 2
    return 0


def _step(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"steps are numbered 0, 1, 2, …; got {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pool", help="show a run's pool after any step; list and restore pruned samples")
    actions = p.add_subparsers(dest="action", required=True, metavar="{show,list-pruned,restore}")
    for name, text in (("show", "the pool after a step"), ("list-pruned", "samples pruned up to a step"),
                       ("restore", "put pruned samples back into the next step's candidate pool")):
        a = actions.add_parser(name, help=text)
        a.add_argument("--store", required=True, help="the run's artifact store: local dir or s3://bucket/prefix")
        a.add_argument("--run", required=True, help="LifelongRun name")
        a.add_argument("--json", action="store_true", help="machine-readable output")
        a.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        if name == "restore":
            a.add_argument("uids", nargs="*", help="the samples (dataset/id) to put back")
            a.add_argument("--all", action="store_true", help="every pruned sample")
            a.add_argument("--note", help="why (kept in the manifest)")
        else:
            a.add_argument("--step", type=_step, help="the pool after this step (default: latest)")
        a.set_defaults(func=_main)
