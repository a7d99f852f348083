"""`adaptinf compare`: strategies × seeds over one stream, with the same budget T.

The stream is the user's (`compare PATHS...`: a LifelongRun YAML and its InstructionDatasets,
or folders of them, as `run-local` takes them; its model and data) or, without paths, the
synthetic demo stream. Sizes (T, D, steps, eval samples) override the spec for every strategy
alike (`streams.py`).

Layout of `--out DIR`:

    DIR/compare.json                what the comparison runs on (inputs, sizes); a rerun with
                                    other inputs is refused instead of mixing runs
    DIR/stream/                     the demo stream and tiny model (written once, reused; demo
                                    only); stream/proxy-model/ when a `STRATEGY@proxy` run needs it
    DIR/base/seed-N/                step 0 of seed N: initial instruction tuning on the first
                                    dataset, which is the same for every strategy, so it runs
                                    once per seed and is copied into each run's workdir
    DIR/runs/<strategy>/seed-N/     one local run (resumable, like `run-local`)
    DIR/table.json, table.md        the comparison (see `report.py` for the definitions)
    DIR/skills_over_time.png        per-skill score after each step, one panel per strategy
    DIR/mlflow.db                   unless MLFLOW_TRACKING_URI is set

Runs execute in parallel worker processes, one torch thread each (on a small machine two
threads per process would only fight over the cores).

A strategy may carry a variant, `STRATEGY@VARIANT` (`variants.py`): `lite-adapt-inf@zero-order`
and `lite-adapt-inf@proxy` run Lite-Adapt-∞ with forward-only gradient estimates or with a
smaller proxy model's gradients, next to the plain (backprop) run; variants combine with `+`
(`lite-adapt-inf@refresh-every-2+last-layer`).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adaptinf.runner import report, skill_report, streams, variants
from adaptinf.runner.local import default_tracking, ensure_experiment
from adaptinf.runner.streams import StreamSource
from adaptinf.spec import SpecError, error_line

log = logging.getLogger(__name__)

DEFAULT_STRATEGIES = ("sequential", "multitask", "replay", "random", "el2n", "entropy", "perplexity",
                      "image-grounding", "semdedup", "density", "coincide", "adapt-inf", "lite-adapt-inf")
# Cheap → expensive is roughly this order; longest first packs the worker pool better.
_COST_ORDER = ("multitask", "sequential", "replay", "lite-adapt-inf", "adapt-inf")
INITIAL_STRATEGY = "sequential"   # step 0 trains on the whole first dataset whatever the strategy


@dataclass
class CompareConfig:
    out: Path
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    seeds: tuple[int, ...] = (0, 1, 2)
    quick: bool = False
    modality: str = "multimodal"
    jobs: int = field(default_factory=lambda: CompareConfig.jobs_default())
    tracking: str | None | bool = True   # False: no MLflow; str: a tracking URI
    notes: list[str] = field(default_factory=list)   # strategies left out, and why
    steps: int | None = None   # only the first N datasets (smoke runs, tests); None: all
    inputs: tuple[str, ...] = ()          # the user's YAML files/folders; empty: the demo stream
    train_budget: int | None = None       # overrides of the run's spec (None: as written)
    pool_budget: int | None = None
    eval_samples: int | None = None       # demo: eval records written per skill; all: eval.maxSamples

    @staticmethod
    def jobs_default() -> int:
        from adaptinf.threads import default_threads
        return default_threads()  # the CPUs this process may really use (quota, affinity)

    def __post_init__(self) -> None:
        from adaptinf.selection import available
        unknown = sorted({n for n in self.strategies if variants.split(n)[0] not in available()})
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; available: {', '.join(available())}")
        if self.modality == "text" and not self.inputs:
            # Single-score selection on image grounding has nothing to rank without images.
            _drop_image_grounding(self, "on the text stream (no images to ground)")
        if report.REFERENCE not in self.strategies:
            # The relative gain is defined against sequential training of the same seed.
            self.strategies = (report.REFERENCE, *self.strategies)
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        self.out = Path(self.out).resolve()
        self.inputs = tuple(str(Path(p).resolve()) for p in self.inputs)
        if self.inputs and variants.needs_proxy(self.strategies):
            raise ValueError("the @proxy variant builds a proxy of the demo stream's tiny model; on your own stream "
                             "set spec.extract.proxyModel in the LifelongRun instead")

    def source(self, stream: Path | None = None) -> StreamSource:
        """The stream with this comparison's size overrides."""
        return StreamSource(inputs=self.inputs or (str(stream),), train_budget=self.train_budget,
                            pool_budget=self.pool_budget, steps=self.steps, eval_samples=self.eval_samples)

    def describe(self) -> str:
        if self.inputs:
            return f"stream of {', '.join(self.inputs)}"
        return f"{'quick' if self.quick else 'default'} {self.modality} demo stream"


def prepare_stream(cfg: CompareConfig) -> Path:
    """Write the demo stream once; a finished one (its marker exists) is reused."""
    from adaptinf.data.demo import write_demo_stream
    from adaptinf.model.tiny import build_tiny_model
    stream = cfg.out / "stream"
    marker = stream / ".complete"
    wanted = {"size": "quick" if cfg.quick else "default", "modality": cfg.modality,
              **({"eval_samples": cfg.eval_samples} if cfg.eval_samples else {})}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return stream
    shutil.rmtree(stream, ignore_errors=True)
    write_demo_stream(stream, seed=0, size=wanted["size"], modality=cfg.modality, eval_samples=cfg.eval_samples)
    build_tiny_model(stream / "model", multimodal=cfg.modality == "multimodal", seed=0)
    marker.write_text(json.dumps(wanted))
    return stream


def _claim_out(cfg: CompareConfig) -> None:
    """Record what DIR is a comparison of; refuse to resume one of something else."""
    wanted = {"inputs": list(cfg.inputs), "demo": None if cfg.inputs else {"quick": cfg.quick, "modality": cfg.modality},
              "train_budget": cfg.train_budget, "pool_budget": cfg.pool_budget, "steps": cfg.steps,
              "eval_samples": cfg.eval_samples}
    path = cfg.out / "compare.json"
    if path.exists():
        have = json.loads(path.read_text())
        if have != wanted:
            changed = sorted(k for k in wanted if have.get(k) != wanted[k])
            raise SpecError(f"{cfg.out} holds a comparison of other inputs or sizes ({', '.join(changed)} differ): "
                            "use another --out, or delete it")
        return
    if (cfg.out / "runs").exists() or (cfg.out / "base").exists():
        raise SpecError(f"{cfg.out} holds runs but no compare.json (made by an older version?): use another --out")
    cfg.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1))


def resolve_stream(cfg: CompareConfig) -> StreamSource:
    """Validate the inputs and sizes (SpecError on any problem, before a worker starts), write the
    demo stream if that is the one, and drop strategies the model cannot run (with a note)."""
    if cfg.inputs:
        src = cfg.source()
        run, _ = streams.load_stream(src)
        _check_variants(cfg, run, src.inputs[0])
        _claim_out(cfg)
        if streams.model_is_multimodal(run) is False:
            _drop_image_grounding(cfg, "(the model has no vision tower)")
        return src
    _claim_out(cfg)
    src = cfg.source(prepare_stream(cfg))
    run, _ = streams.load_stream(src)
    _check_variants(cfg, run, str(cfg.out / "stream"))
    return src


def _check_variants(cfg: CompareConfig, run: Any, stream: str) -> None:
    """Every variant's spec validated here, before a worker starts: e.g. a refresh variant on a
    stream whose spec sets extract.proxyModel is refused with the field named."""
    for name in cfg.strategies:
        if variants.split(name)[1] is None:
            continue
        try:
            variants.validated(run, name, stream)
        except ValidationError as err:
            raise SpecError(f"--strategies {name}: " + "; ".join(error_line(e) for e in err.errors())) from None


def _drop_image_grounding(cfg: CompareConfig, why: str) -> None:
    dropped = [n for n in cfg.strategies if variants.split(n)[0] == "image-grounding"]
    if dropped:
        cfg.strategies = tuple(n for n in cfg.strategies if n not in dropped)
        cfg.notes.append(f"left out {why}: {', '.join(dropped)}")


def _prepare_proxy(stream: str, multimodal: bool) -> str:
    """The stream's proxy model (in a worker process: one thread); a finished one is reused."""
    from adaptinf.runner.proxy import build_proxy
    out = Path(stream) / variants.PROXY_DIR
    if not (out / "config.json").exists():
        build_proxy(stream, out, multimodal=multimodal)
    return str(out)


def _seeded(run: Any, seed: int) -> Any:
    """The run with every seed of the spec set from one number (clustering.seed is an offset
    on spec.seed, so the spec's own offset stays)."""
    run = run.model_copy(deep=True)
    spec = run.spec
    spec.seed = spec.training.seed = spec.extract.seed = seed
    return run


def _die_with(parent: int) -> None:
    """Linux: the worker gets SIGTERM when compare dies, even by SIGKILL. Without it a killed
    compare leaves its workers finishing their runs alone (minutes of CPU each), racing a
    restarted compare for the same workdirs."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:   # compare died before prctl took effect
        os._exit(1)


def _worker_init(parent: int) -> None:
    _die_with(parent)
    import torch

    from adaptinf.quiet import quiet_libraries
    from adaptinf.threads import ENV
    quiet_libraries()
    os.environ[ENV] = "1"  # one thread per worker: the stages would otherwise size up to the quota
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _run_steps(src: StreamSource, proxy_root: str, workdir: str, strategy: str, seed: int,
               limit: int | None) -> dict[str, Any]:
    """One local run (in a worker process); `limit` cuts it to the first datasets (step 0: 1)."""
    from adaptinf.runner import run_local
    run, datasets = streams.configured(src)
    run, strategy = variants.apply(_seeded(run, seed), strategy, proxy_root)
    # Step 0 of every run is the shared initial tuning (strategy `sequential`), copied in: the
    # workdir's recorded step 0 differs from this strategy's spec on purpose.
    return run_local(run, datasets[:limit], workdir, strategy=strategy, tracking=False, progress=False,
                     continue_anyway=True)


def _initial_state(pool: ProcessPoolExecutor, cfg: CompareConfig, src: StreamSource) -> dict[Future, tuple[int, Path]]:
    """Step 0 of every seed, submitted in parallel (finished ones are reused): future → (seed, dir)."""
    dirs = {seed: cfg.out / "base" / f"seed-{seed}" for seed in cfg.seeds}
    return {pool.submit(_run_steps, src, str(cfg.out / "stream"), str(d), INITIAL_STRATEGY, seed, 1): (seed, d)
            for seed, d in dirs.items()}


def _ordered(cfg: CompareConfig) -> list[str]:
    rank = {s: i for i, s in enumerate(_COST_ORDER)}
    return sorted(cfg.strategies, key=lambda s: rank.get(variants.split(s)[0], len(rank)))


def run_all(cfg: CompareConfig, progress: bool = True) -> dict[str, dict[int, dict[str, Any]]]:
    """Every (strategy, seed) run; returns summaries[strategy][seed]."""
    from tqdm.auto import tqdm
    src = resolve_stream(cfg)
    stream = cfg.out / "stream"
    ctx = multiprocessing.get_context("spawn")   # torch and fork do not mix
    summaries: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in cfg.strategies}
    with ProcessPoolExecutor(max_workers=max(1, cfg.jobs), mp_context=ctx, initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        proxy = pool.submit(_prepare_proxy, str(stream), cfg.modality == "multimodal") \
            if variants.needs_proxy(cfg.strategies) else None
        bases = _initial_state(pool, cfg, src)
        if proxy is not None:
            proxy.result()
        futures = {}
        # A seed's runs are queued as soon as its step 0 is ready, so no worker waits for the
        # slowest seed's step 0 while others could already run.
        for done in as_completed(bases):
            done.result()
            seed, base = bases[done]
            log.info("seed %d: step 0 (initial tuning) ready", seed)
            for strategy in _ordered(cfg):
                workdir = cfg.out / "runs" / strategy / f"seed-{seed}"
                if not workdir.exists():
                    shutil.copytree(base, workdir.with_name(workdir.name + ".tmp"), dirs_exist_ok=True)
                    workdir.with_name(workdir.name + ".tmp").rename(workdir)
                futures[pool.submit(_run_steps, src, str(stream), str(workdir), strategy, seed, None)] = (strategy, seed)
        bar = tqdm(total=len(futures), desc="compare runs", disable=not progress)
        for fut in as_completed(futures):
            strategy, seed = futures[fut]
            summaries[strategy][seed] = fut.result()
            bar.update(1)
        bar.close()
    return {s: dict(sorted(by_seed.items())) for s, by_seed in summaries.items()}


def _tracking_uri(cfg: CompareConfig) -> str | None:
    if cfg.tracking is False:
        return None
    if isinstance(cfg.tracking, str):
        return cfg.tracking
    return default_tracking(cfg.out, None)


def metric_prefix(strategy: str) -> str:
    """A strategy's name as MLflow metric names allow it (no '@' or '+'): each variant becomes
    a path segment, "x@a+b" → "x/a/b"."""
    return strategy.replace(variants.SEPARATOR, "/").replace(variants.JOIN, "/")


def log_to_mlflow(cfg: CompareConfig, uri: str, meta: dict[str, Any], rows: list[dict[str, Any]],
                  summaries: dict[str, dict[int, dict[str, Any]]]) -> str:
    """A parent run for the comparison; a child per (strategy, seed) with its per-step metrics."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    exp_id = ensure_experiment(uri, "adapt-inf-compare", cfg.out)
    parent = client.create_run(exp_id, run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}").info.run_id
    client.log_param(parent, "strategies", ",".join(cfg.strategies))
    client.log_param(parent, "seeds", ",".join(map(str, cfg.seeds)))
    client.log_param(parent, "stream", meta["stream"])
    for r in rows:
        name = metric_prefix(r["strategy"])
        for key in report.FIGURES:
            if r[key] is not None:   # multitask has no forgetting rate
                client.log_metric(parent, f"{name}.{key}", r[key])
        for key in report.PAIRED:
            diff, ci = r.get(f"{key}_vs_{report.BASELINE}"), r.get(f"{key}_vs_{report.BASELINE}_ci")
            if diff is not None:
                client.log_metric(parent, f"{name}.{key}_vs_{report.BASELINE}", diff)
                client.log_metric(parent, f"{name}.{key}_vs_{report.BASELINE}_ci_low", ci[0])
                client.log_metric(parent, f"{name}.{key}_vs_{report.BASELINE}_ci_high", ci[1])
    for fname in ("table.md", "table.json", "skills_over_time.png"):
        client.log_artifact(parent, str(cfg.out / fname))
    for strategy, by_seed in summaries.items():
        for seed, summary in by_seed.items():
            child = client.create_run(exp_id, run_name=f"{strategy}-seed{seed}",
                                      tags={"mlflow.parentRunId": parent, "strategy": strategy, "seed": str(seed)}).info.run_id
            for step in summary["steps"]:
                metrics = {f"skill.{k}": v for k, v in (step.get("skills") or {}).items()}
                if step.get("avg_acc") is not None:
                    metrics.update(avg_acc=step["avg_acc"], forgetting_rate=step["forgetting_rate"])
                    if step.get("forgetting_rate_taught") is not None:
                        metrics["forgetting_rate_taught"] = step["forgetting_rate_taught"]
                for k, v in metrics.items():
                    client.log_metric(child, k, v, step=step["step"])
            client.set_terminated(child)
    client.set_terminated(parent)
    return parent


def _first_step0_file(workdirs: dict[str, list[Path]], key: str) -> Path | None:
    """The first run's step-0 file at `key` (inside its workdir) that exists; every strategy and
    seed shares step 0's spec and eval set, so any one will do."""
    for dirs in workdirs.values():
        for workdir in dirs:
            if (workdir / key).is_file():
                return workdir / key
    return None


def _eval_metrics(workdirs: dict[str, list[Path]], run_name: str) -> dict[str, str]:
    """Skill → metric, from the spec a finished run recorded (the stream's files may have moved
    since the runs began; the plot must not re-read them)."""
    from adaptinf import layout
    inputs = _first_step0_file(workdirs, layout.inputs_key(run_name, 0))
    if inputs is None:
        return {}
    suite = json.loads(inputs.read_text())["run_spec"].get("eval", {}).get("suite", [])
    return {t["skill"]: t.get("metric", "exact_match") for t in suite}


def _eval_counts(workdirs: dict[str, list[Path]], run_name: str) -> dict[str, int]:
    """Eval records per skill, from step 0's eval metrics; empty when no run has one."""
    from adaptinf import layout
    metrics = _first_step0_file(workdirs, f"{layout.stage_prefix(run_name, 0, 'eval')}/metrics.json")
    counts: dict[str, int] = {}
    for task in (json.loads(metrics.read_text()).get("tasks", {}).values() if metrics else ()):
        counts[task["skill"]] = counts.get(task["skill"], 0) + int(task["n"])
    return counts


def compare(cfg: CompareConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run the comparison and write table.json, table.md and the plot; return the rows."""
    from adaptinf.evaluation.plots import close
    started = time.monotonic()
    # Runs begun by an earlier invocation (resumed here): this invocation's time is not theirs.
    runs = [cfg.out / "runs" / s / f"seed-{seed}" for s in _ordered(cfg) for seed in cfg.seeds]
    resumed = sum(w.exists() for w in runs)
    summaries = run_all(cfg, progress=progress)
    run_name = next(iter(next(iter(summaries.values())).values()))["run"]
    workdirs = {s: [cfg.out / "runs" / s / f"seed-{seed}" for seed in cfg.seeds] for s in cfg.strategies}
    rows = report.build_table(summaries, _eval_counts(workdirs, run_name))
    quality = skill_report.mean_quality(workdirs, run_name)
    mix = skill_report.selection_mix(workdirs, run_name)
    if not skill_report.has_skill_labels(mix):   # the user's records carry no `skill` label
        quality, mix = {}, {}
    meta = {"stream": cfg.describe(), "sizes": cfg.source(cfg.out / "stream").to_json(),
            "strategies": list(cfg.strategies), "seeds": list(cfg.seeds), "jobs": cfg.jobs,
            "seconds": round(time.monotonic() - started, 1), "resumed_runs": resumed, "runs": len(runs),
            "cluster_quality": quality, "skill_mix": mix,
            **({"notes": cfg.notes} if cfg.notes else {})}
    (cfg.out / "table.json").write_text(json.dumps(rows, indent=1))
    (cfg.out / "meta.json").write_text(json.dumps(meta, indent=1))
    preamble = (f"Comparison on the {meta['stream']}, seeds {meta['seeds']}, mean ± std over seeds; "
                f"relative gain against the best per-skill score of sequential training (same seed); "
                f"{meta['seconds']:.0f} s with {cfg.jobs} worker process(es)"
                + (f" in this invocation, which resumed {resumed} of {len(runs)} runs begun by an earlier one "
                   f"(the stage times in the table are every run's own)" if resumed else "") + "."
                + "".join(f" Note: {n}." for n in cfg.notes))
    (cfg.out / "table.md").write_text(report.table_markdown(rows, quality, preamble, mix))
    fig = report.plot_strategies(summaries, _eval_metrics(workdirs, run_name))
    fig.savefig(cfg.out / "skills_over_time.png", dpi=110)
    close(fig)
    uri = _tracking_uri(cfg)
    if uri:
        meta["mlflow_run_id"] = log_to_mlflow(cfg, uri, meta, rows, summaries)
        from adaptinf.tracking import redact_uri
        meta["mlflow_uri"] = redact_uri(uri)
        (cfg.out / "meta.json").write_text(json.dumps(meta, indent=1))
    return rows
