"""Which LifelongRun object owns a store prefix: the run's uid in `<run>/owner.json`.

Markers are keyed by run name, so a run deleted and created again under the same name would
find the old run's commit markers and take them for its own steps (and finish with nothing
run). The first pass of a run claims its prefix; a prefix claimed by another uid, or one with
content but no claim that a run seen for the first time finds, is refused with a condition
that says how to proceed.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from adaptinf.layout import owner_key
from adaptinf.store import Store, StoreError


def refusal(store: Store, run: dict[str, Any], uri: str) -> str | None:
    """None when the prefix is this run object's (claimed now if new), else why not."""
    meta = run["metadata"]
    name, uid = meta["name"], meta.get("uid", "")
    key = owner_key(name)
    if store.exists(key):
        try:
            owner = store.read_json(key).get("uid")
        except (StoreError, ValueError, AttributeError):
            owner = None
        if owner == uid:
            return None
        other = f"another LifelongRun named {name!r} (uid {owner})"
    elif store.list(f"{name}/") and "stepsCompleted" not in (run.get("status") or {}):
        # Written before claims existed, and this run object never ran a pass: not its data.
        other = f"an earlier LifelongRun named {name!r}"
    else:
        store.write_json(key, {"uid": uid, "namespace": meta.get("namespace"), "name": name,
                               "claimed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        return None
    where = f"{uri.rstrip('/')}/{name}/"
    return (f"the store prefix {where} belongs to {other}, probably deleted and created again; its steps would "
            f"count as this run's. Re-create this run with another spec.storage.uri (the field is immutable), "
            f"or delete {where} to start over")
