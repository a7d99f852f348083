"""`adaptinf pool`: the pool after any step, the permanently pruned samples, and restoring them
into the next step's candidate pool (through the real ingest code)."""
from __future__ import annotations

import json

import pytest

from adaptinf import layout
from adaptinf.cli import main as cli
from adaptinf.data.pool import DatasetSource, PoolManifest, PrunedSample, load_pool, save_pool
from adaptinf.data.records import Record, dump_jsonl
from adaptinf.stages.registry import build_context
from adaptinf.stages.ingest import RECORDS, candidate_pool
from adaptinf.store import LocalStore

RUN = "lite"


def records(dataset: str, n: int) -> list[Record]:
    return [Record(id=str(i), dataset=dataset, conversations=(("human", f"{i}?"), ("gpt", str(i)))) for i in range(n)]


def ingest(store: LocalStore, step: int, dataset: str, n: int) -> DatasetSource:
    prefix = layout.stage_prefix(RUN, step, "ingest")
    store.write_bytes(f"{prefix}/{RECORDS}", dump_jsonl(records(dataset, n)))
    store.commit(prefix, {"summary": {"accepted": n, "rejected": 0}})
    return DatasetSource(dataset, step, f"{prefix}/{RECORDS}", n)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Two finished steps of a Lite run with D = 4: step 0 pruned a/1, step 1 pruned a/2 and b/0."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = LocalStore(tmp_path)
    a, b = ingest(s, 0, "a", 5), ingest(s, 1, "b", 2)
    p0 = [PrunedSample("a/1", 0, "redundant (hidden-state cosine)", 0, 0.99, "a/0")]
    save_pool(s, PoolManifest(RUN, 0, ["a/0", "a/2", "a/3", "a/4"], [a], p0))
    p1 = p0 + [PrunedSample("a/2", 1, "redundant (hidden-state cosine)", 1, 0.97, "a/3"),
               PrunedSample("b/0", 1, "redundant (hidden-state cosine)", 0, 0.95, "a/0")]
    save_pool(s, PoolManifest(RUN, 1, ["a/0", "a/3", "a/4", "b/1"], [a, b], p1))
    for step in (0, 1):  # both steps finished: their prune committed after writing the manifest
        s.commit(layout.stage_prefix(RUN, step, "prune"), {"summary": {}})
    return s


def pool_cli(store: LocalStore, *args: str) -> int:
    return cli(["pool", *args, "--store", str(store.root), "--run", RUN])


def test_show_and_list_pruned_after_any_step(store, capsys):
    assert pool_cli(store, "show", "--step", "0", "--json") == 0
    assert json.loads(capsys.readouterr().out)["members"] == ["a/0", "a/2", "a/3", "a/4"]
    assert pool_cli(store, "list-pruned", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["uid"], p["step"], p["nearest"]) for p in listed] == [("a/1", 0, "a/0"), ("a/2", 1, "a/3"),
                                                                      ("b/0", 1, "a/0")]
    assert pool_cli(store, "list-pruned", "--step", "0") == 0
    out = capsys.readouterr().out
    assert "a/1" in out and "a/2" not in out and "1 pruned sample(s)" in out


def test_restore_puts_samples_into_the_next_candidate_pool(store, capsys):
    original = store.read_bytes(layout.pool_key(RUN, 1))
    assert pool_cli(store, "restore", "a/2", "b/0", "--note", "needed for the OCR skill") == 0
    assert "restored 2 sample(s) into the pool after step 1 (4 -> 6)" in capsys.readouterr().out
    pool = load_pool(store, RUN, 1)
    assert pool.members[-2:] == ["a/2", "b/0"] and [p.uid for p in pool.pruned] == ["a/1"]
    assert [(r["uid"], r["note"]) for r in pool.restored] == [("a/2", "needed for the OCR skill"),
                                                             ("b/0", "needed for the OCR skill")]
    # The manifest prune wrote is kept, and step 0's is untouched.
    assert store.read_bytes(f"{RUN}/pool/step-0001.before-restore-1.json") == original
    assert load_pool(store, RUN, 0).members == ["a/0", "a/2", "a/3", "a/4"]

    # The next step starts from the restored pool (the real ingest code builds its candidate pool).
    ingest(store, 2, "c", 1)
    ctx = build_context(RUN, 2, store, {"model": {"base": "m"}, "trainBudget": 1, "storage": {"uri": str(store.root)}},
                        "c", {"run": RUN, "source": "c.jsonl"})
    assert candidate_pool(ctx).members == ["a/0", "a/3", "a/4", "b/1", "a/2", "b/0", "c/0"]


def test_restore_is_refused_while_a_step_is_running_and_for_unknown_samples(store, capsys):
    store.write_json(layout.inputs_key(RUN, 2), {"step": 2})  # step 2 has started
    assert pool_cli(store, "restore", "--all") == 2
    assert "step 2 of run 'lite' is in progress" in capsys.readouterr().err
    assert load_pool(store, RUN, 1).restored == []
    # A step that ended without data (no usable record) leaves the pool as it was: restoring is fine.
    store.commit(layout.stage_prefix(RUN, 2, "ingest"), {"summary": {"accepted": 0, "rejected": 3}})
    assert pool_cli(store, "restore", "never-pruned/1") == 2
    assert "not pruned" in capsys.readouterr().err
    assert pool_cli(store, "restore", "--all") == 0
    assert load_pool(store, RUN, 1).pruned == []


def test_the_documented_form_with_options_first(store, capsys):
    """docs/failure-modes.md: `restore --store S --run R <uid>` (before: "unrecognized arguments")."""
    assert cli(["pool", "restore", "--store", str(store.root), "--run", RUN, "a/2"]) == 0
    assert load_pool(store, RUN, 1).members[-1] == "a/2"


def test_restore_is_idempotent(store, capsys):
    """Before, `restore U U` put U into the pool twice (the next prune then listed it as pruned,
    nearest = itself, while still a member)."""
    assert pool_cli(store, "restore", "a/2", "a/2") == 0
    pool = load_pool(store, RUN, 1)
    assert pool.members.count("a/2") == 1 and [r["uid"] for r in pool.restored] == ["a/2"]
    manifest = store.read_bytes(layout.pool_key(RUN, 1))
    capsys.readouterr()
    assert pool_cli(store, "restore", "a/2") == 0  # again: nothing changes, no new backup
    assert "already in the pool" in capsys.readouterr().out
    assert store.read_bytes(layout.pool_key(RUN, 1)) == manifest
    assert not store.exists(f"{RUN}/pool/step-0001.before-restore-2.json")


def test_restore_is_refused_while_a_prune_is_uncommitted(store, capsys):
    """A step whose prune wrote its manifest but did not commit: its resume rewrites the manifest,
    so a restore accepted now would silently vanish."""
    store.clear(layout.stage_prefix(RUN, 1, "prune"))
    manifest = store.read_bytes(layout.pool_key(RUN, 1))
    assert pool_cli(store, "restore", "a/2") == 2
    assert "step 1 of run 'lite' is in progress (its prune has not committed)" in capsys.readouterr().err
    assert store.read_bytes(layout.pool_key(RUN, 1)) == manifest


def test_restore_is_refused_while_run_local_holds_the_workdir(store, capsys):
    import os

    from adaptinf.runner.lock import workdir_lock
    with workdir_lock(store.root):
        assert pool_cli(store, "restore", "a/2") == 2
    assert f"pid {os.getpid()}" in capsys.readouterr().err
    assert "a/2" not in load_pool(store, RUN, 1).members


def test_user_mistakes_are_one_line_errors(store, tmp_path, capsys):
    assert pool_cli(store, "show", "--step", "7") == 2
    assert "no pool after step 7 (pool manifests: steps 0..1)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        pool_cli(store, "show", "--step", "-3")
    assert exit_.value.code == 2 and "numbered 0, 1, 2" in capsys.readouterr().err
    typo = tmp_path / "typo"
    assert cli(["pool", "show", "--store", str(typo), "--run", RUN]) == 2
    assert f"store {typo} does not exist" in capsys.readouterr().err
    assert not typo.exists()  # before: silently created
    assert cli(["pool", "show", "--store", str(store.root), "--run", RUN, "-v"]) == 0  # -v after the subcommand


def test_a_store_that_cannot_be_read_is_a_one_line_error(store, s3_bucket, capsys):
    """A bucket that does not exist (or no credentials): before, a StoreError traceback."""
    assert cli(["pool", "show", "--store", "s3://no-such-bucket-adaptinf/x", "--run", RUN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: S3 list of s3://no-such-bucket-adaptinf/x/lite/pool failed") and "Traceback" not in err
    assert pool_cli(store, "show", "--step", "0") == 0
    capsys.readouterr()
    pool_file = store.root / RUN / "pool" / "step-0000.json"
    assert cli(["pool", "show", "--store", str(pool_file), "--run", RUN]) == 2
    assert f"store {pool_file} is not a directory" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_output_without_a_traceback(tmp_path):
    """`adaptinf pool show … | head -1`: before, a BrokenPipeError traceback. The pool's listing
    (about 300 kB) is larger than a pipe's buffer, so the writer is still writing when head exits."""
    import subprocess
    import sys
    big = LocalStore(tmp_path / "big")
    save_pool(big, PoolManifest(RUN, 0, [f"a/{i:06d}" for i in range(30000)], [], []))
    big.commit(layout.stage_prefix(RUN, 0, "prune"), {"summary": {}})
    shown = subprocess.run(f"{sys.executable} -m adaptinf.cli pool show --store {big.root} --run {RUN} | head -1",
                           shell=True, capture_output=True, text=True, check=True)
    assert shown.stdout == "a/000000\n" and "Traceback" not in shown.stderr and "BrokenPipe" not in shown.stderr
