"""Features a fixed proxy model computed are reused at later steps: only the new dataset's
samples (and none of the old pool's) go through the proxy, and the selections are those of a
run that recomputes everything. A restored sample is reused; a changed proxy recomputes all."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaptinf import layout
from adaptinf.data.pool import load_pool
from adaptinf.pool_admin import restore_samples
from adaptinf.runner import collect, run_local
from adaptinf.store import LocalStore

pytestmark = pytest.mark.slow

STEPS = 3


def _shard(workdir: Path, run: str, step: int) -> Path:
    return workdir / layout.shard_prefix(run, step, 0, 1)


def _summary(workdir: Path, run: str, step: int) -> dict:
    return json.loads((_shard(workdir, run, step) / "_COMMITTED.json").read_text())["summary"]


def _selection(workdir: Path, run: str, step: int) -> dict:
    path = workdir / layout.stage_prefix(run, step, "cluster-select") / "selection.json"
    return json.loads(path.read_text())


def _proxied(demo_quick: Path, proxy: Path, reuse: bool):
    run, datasets = collect([demo_quick])
    run = run.model_copy(deep=True)
    run.spec.extract.proxy_model = str(proxy)
    run.spec.extract.reuse_features = reuse
    run.spec.pool_budget = 150                      # 100 + 80 at step 1: pruning starts there
    run.spec.training.epochs = 1                    # what is checked is extract and selection:
    run.spec.eval.suite = run.spec.eval.suite[:1]   # less training and eval keep the test short
    return run, datasets[:STEPS]


def _two_steps_restore_one_more(demo_quick: Path, proxy: Path, workdir: Path, reuse: bool) -> tuple[str, list[str]]:
    """Steps 0-1, three samples pruned at step 1 restored, then step 2; returns (run, restored)."""
    run, datasets = _proxied(demo_quick, proxy, reuse)
    run_local(run, datasets[:2], workdir, progress=False, tracking=False)
    store = LocalStore(workdir)
    pruned = [p.uid for p in load_pool(store, run.name, 1).pruned if p.step == 1][:3]
    assert pruned, "the quick stream prunes at step 1"
    restore_samples(store, run.name, pruned, note="test")
    run_local(run, datasets, workdir, progress=False, tracking=False)
    return run.name, pruned


@pytest.fixture(scope="module")
def runs(demo_quick, tmp_path_factory):
    proxy = tmp_path_factory.mktemp("proxy") / "model"
    shutil.copytree(demo_quick / "model", proxy)
    reused, fresh = tmp_path_factory.mktemp("reuse"), tmp_path_factory.mktemp("no-reuse")
    name, restored = _two_steps_restore_one_more(demo_quick, proxy, reused, reuse=True)
    _two_steps_restore_one_more(demo_quick, proxy, fresh, reuse=False)
    return name, restored, reused, fresh, proxy


def test_only_new_samples_are_computed_after_step_0(runs, demo_quick):
    name, restored, reused, _, _ = runs
    store = LocalStore(reused)
    first = _summary(reused, name, 0)
    assert first["features_computed"] == first["samples"] and first["features_reused"] == 0
    for step in range(1, STEPS):
        s = _summary(reused, name, step)
        uids = json.loads((_shard(reused, name, step) / "uids.json").read_text())
        dataset = load_pool(store, name, step).sources[-1].name
        new = sum(u.split("/", 1)[0] == dataset for u in uids)
        assert s["features_computed"] == new > 0 and s["features_reused"] == len(uids) - new > 0
        origin = np.load(_shard(reused, name, step) / "origin.npy")
        assert (origin[-new:] == step).all() and (origin[:-new] < step).all()
        report = _selection(reused, name, step)["report"]["features"]
        assert report["computed"] == new and report["reused"] == len(uids) - new
        assert sum(report["computed_at_step"].values()) == len(uids)
    # The restored samples (pruned after step 1's extract) come back with step 1's rows.
    uids = json.loads((_shard(reused, name, 2) / "uids.json").read_text())
    assert set(restored) <= set(uids)


def test_selections_equal_a_run_that_recomputes_everything(runs):
    name, _, reused, fresh, _ = runs
    for step in range(STEPS):
        assert _summary(fresh, name, step)["features_reused"] == 0
        assert _selection(reused, name, step)["selected"] == _selection(fresh, name, step)["selected"]
    for file in ("grads.npy", "hidden.npy"):
        a, b = np.load(_shard(reused, name, 2) / file), np.load(_shard(fresh, name, 2) / file)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=file)


def test_a_changed_proxy_recomputes_every_feature(runs, demo_quick, tmp_path):
    name, _, reused, _, proxy = runs
    workdir = tmp_path / "work"
    shutil.copytree(reused, workdir)
    with open(proxy / "config.json", "a") as f:
        f.write("\n")                                   # same weights, other bytes: another identity
    run, datasets = _proxied(demo_quick, proxy, reuse=True)
    run_local(run, datasets, workdir, progress=False, tracking=False, restart_from=2)
    s = _summary(workdir, name, 2)
    assert s["features_reused"] == 0 and s["features_computed"] == s["samples"]
    assert s["feature_key"] != _summary(reused, name, 2)["feature_key"]


# ---- the key alone (no model run) ------------------------------------------------------------

def _key(proxy: Path, **extract):
    from types import SimpleNamespace

    from adaptinf.spec import LifelongRunSpec
    from stages.feature_reuse import feature_key
    spec = LifelongRunSpec.model_validate({"model": {"base": "m"}, "trainBudget": 4, "storage": {"uri": "s"},
                                           "extract": {"proxyModel": str(proxy), **extract}})
    return feature_key(SimpleNamespace(spec=spec), grads=True, hidden=True, scorers=("el2n",))


def test_feature_key_follows_everything_that_shapes_the_features(tmp_path):
    proxy = tmp_path / "proxy"
    proxy.mkdir()
    (proxy / "weights.bin").write_bytes(b"\x00" * 16)
    base = _key(proxy)
    assert base == _key(proxy) and base is not None
    for change in ({"projectionDim": 512}, {"seed": 1}, {"layers": ["last"]}, {"maxLength": 64},
                   {"gradientSource": "zero-order"}):
        assert _key(proxy, **change) != base, change
    assert _key(proxy, batchSize=4) == base                # batching does not change a feature
    assert _key(proxy, reuseFeatures=False) is None
    (proxy / "weights.bin").write_bytes(b"\x00" * 15 + b"\x01")
    assert _key(proxy) != base                              # same size, other content
