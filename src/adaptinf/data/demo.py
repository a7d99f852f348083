"""The synthetic multi-skill instruction stream used by the demo, the benchmarks and the tests.

`write_demo_stream(out)` writes a complete lifelong run a tiny model can learn in minutes:

    out/lifelongrun.yaml              LifelongRun `demo` (or `demo-text`)
    out/datasets/NN-<name>.yaml       one InstructionDataset per step (NN = step order)
    out/datasets/NN-<name>.jsonl      LLaVA-style records with a hidden `skill` label
    out/images/NN/<id>.png            32×32 RGB images (images/eval/<skill>/... for eval)
    out/eval/<skill>.jsonl            held-out eval set per skill (fresh random draws)
    out/README.md                     what the stream is and the skill mix per dataset

The stream is built to exercise what Adapt-∞ is about: skewed skill mixes per dataset, a rare
skill present in one dataset only, skills that stop appearing (so forgetting is measurable),
redundancy inside each dataset and near-duplicates of earlier datasets in the last one.
Every answer is a short deterministic function of the image or the question. The model
directory `out/model` is written elsewhere; the run only names it.
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import yaml

from adaptinf.data import shapes
from adaptinf.spec import FULL_API_VERSION

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
SIZES = ("default", "quick")
MODALITIES = ("multimodal", "text")
EVAL_SAMPLES = {"default": 48, "quick": 16}
REDUNDANCY = 0.08  # share of each dataset that re-states its own records
NEAR_DUP_NOISE = 3  # ± pixel values when a near-duplicate's image is redrawn


@dataclass(frozen=True)
class Sample:
    """One instruction: question, answer, and the scene its image shows (None: text-only)."""
    skill: str
    question: str
    answer: str
    scene: shapes.Scene | None = None
    near_dup: bool = False  # a re-statement of another sample: redraw its image with noise


@dataclass(frozen=True)
class Skill:
    name: str
    metric: str  # exact_match | iou | bleu
    make: Callable[[np.random.Generator], tuple[str, str, shapes.Scene | None]]


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    sizes: dict[str, int]  # records per stream size
    mix: dict[str, float]  # skill → share of the fresh records
    carry_over: float = 0.0  # share that near-duplicates earlier datasets' records
    carry_skills: tuple[str, ...] = ()  # skills those near-duplicates may have


# ---- multimodal skills -------------------------------------------------------------------

def _pick(rng: np.random.Generator, options: Any) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _colour(rng: np.random.Generator) -> tuple[str, str, shapes.Scene]:
    scene = shapes.single_shape(rng)
    return "What colour is the shape?", scene[0].colour, scene


def _colour_fr(rng: np.random.Generator) -> tuple[str, str, shapes.Scene]:
    scene = shapes.single_shape(rng)
    return "De quelle couleur est la forme ?", shapes.FRENCH_COLOURS[scene[0].colour], scene


def _count(rng: np.random.Generator) -> tuple[str, str, shapes.Scene]:
    n = int(rng.integers(1, 5))
    scene = shapes.place_shapes(rng, [shapes.CELL] * n)
    return "How many shapes are there?", str(n), scene


def _grounding(rng: np.random.Generator) -> tuple[str, str, shapes.Scene]:
    # Distinct colours so "the <colour> shape" names exactly one shape.
    n = int(rng.integers(1, 4))
    colours = [str(c) for c in rng.permutation(list(shapes.COLOURS))[:n]]
    sizes = [shapes.CELL * int(rng.integers(1, 3)) for _ in range(n)]
    scene = shapes.place_shapes(rng, sizes, colours=colours)
    target = scene[int(rng.integers(n))]
    box = ", ".join(str(v) for v in target.box)
    return f"Where is the {target.colour} shape? Answer with a box.", f"[{box}]", scene


def _shape(rng: np.random.Generator) -> tuple[str, str, shapes.Scene]:
    # Large shapes: a circle and a square differ by few pixels at 8×8.
    scene = shapes.single_shape(rng, size=2 * shapes.CELL)
    return "What shape is it?", scene[0].kind, scene


def _caption(rng: np.random.Generator) -> tuple[str, str, shapes.Scene]:
    scene = shapes.single_shape(rng, size=2 * shapes.CELL)
    s = scene[0]
    where = shapes.position_name(s)
    where = "in the centre" if where == "centre" else f"at the {where}"
    return "Describe the image.", f"a {s.colour} {s.kind} {where}", scene


def _arithmetic(rng: np.random.Generator) -> tuple[str, str, None]:
    a, b = (int(v) for v in rng.integers(0, 10, size=2))
    return f"What is {a} + {b}?", str(a + b), None


MULTIMODAL_SKILLS: dict[str, Skill] = {s.name: s for s in (
    Skill("colour", "exact_match", _colour),
    Skill("count", "exact_match", _count),
    Skill("caption", "bleu", _caption),
    Skill("grounding", "iou", _grounding),
    Skill("colour-fr", "exact_match", _colour_fr),
    Skill("arithmetic", "exact_match", _arithmetic),
    Skill("shape", "exact_match", _shape),
)}

MULTIMODAL_PLAN: tuple[DatasetPlan, ...] = (
    DatasetPlan("basics", {"default": 1000, "quick": 100},
                {"colour": 0.35, "count": 0.30, "caption": 0.35}),
    DatasetPlan("spatial", {"default": 800, "quick": 80},
                {"grounding": 0.65, "count": 0.20, "caption": 0.15}),
    DatasetPlan("french", {"default": 900, "quick": 90},
                {"colour-fr": 0.70, "arithmetic": 0.30}),
    DatasetPlan("shapes", {"default": 700, "quick": 70},
                {"grounding": 0.45, "arithmetic": 0.48, "shape": 0.07}),
    # Near-duplicates only of skills this dataset has anyway, so colour and caption really
    # vanish after the first datasets and the rare shape skill stays in one dataset.
    DatasetPlan("mixed", {"default": 1000, "quick": 100},
                {"count": 0.34, "grounding": 0.33, "arithmetic": 0.33},
                carry_over=0.18, carry_skills=("count", "grounding", "arithmetic")),
)

# ---- text-only skills --------------------------------------------------------------------

SHORT_WORDS = ("cat", "dog", "sun", "tree", "bird", "fish", "moon", "star", "lamp", "rock",
               "book", "milk", "frog", "rain", "leaf", "door", "ship", "bell", "kite", "wolf")
LONG_WORDS = SHORT_WORDS + ("apple", "river", "garden", "window", "planet", "yellow",
                            "tiger", "cloud", "bridge", "pencil")
# Invented, so the answers come only from the training data.
FAKE_CAPITALS = {
    "Zorvia": "Quelm", "Brandor": "Ostik", "Melvane": "Tarnis", "Quor": "Lippa",
    "Estrin": "Valdo", "Kaloss": "Mirren", "Tuvala": "Sorn", "Dremmar": "Ickle",
    "Fennick": "Borla", "Ylsa": "Gant", "Pardon": "Wexa", "Oriel": "Nusk",
}
FRENCH_NUMBERS = ("un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix")
OPPOSITES = {"hot": "cold", "up": "down", "big": "small", "day": "night",
             "fast": "slow", "wet": "dry", "light": "dark", "old": "new"}
OPPOSITES |= {v: k for k, v in OPPOSITES.items()}


def _reverse(rng: np.random.Generator) -> tuple[str, str, None]:
    word = _pick(rng, SHORT_WORDS)
    return f"Reverse the word {word}.", word[::-1], None


def _capital(rng: np.random.Generator) -> tuple[str, str, None]:
    country = _pick(rng, FAKE_CAPITALS)
    return f"What is the capital of {country}?", FAKE_CAPITALS[country], None


def _french_number(rng: np.random.Generator) -> tuple[str, str, None]:
    n = int(rng.integers(1, 11))
    return f"Say {n} in French.", FRENCH_NUMBERS[n - 1], None


def _letter_count(rng: np.random.Generator) -> tuple[str, str, None]:
    word = _pick(rng, LONG_WORDS)
    return f"How many letters are in the word {word}?", str(len(word)), None


def _spell(rng: np.random.Generator) -> tuple[str, str, None]:
    word = _pick(rng, LONG_WORDS)
    return f"Spell the word {word}.", " ".join(word), None


def _opposite(rng: np.random.Generator) -> tuple[str, str, None]:
    word = _pick(rng, OPPOSITES)
    return f"What is the opposite of {word}?", OPPOSITES[word], None


TEXT_SKILLS: dict[str, Skill] = {s.name: s for s in (
    Skill("arithmetic", "exact_match", _arithmetic),
    Skill("capital", "exact_match", _capital),
    Skill("spell", "bleu", _spell),
    Skill("reverse", "exact_match", _reverse),
    Skill("letter-count", "exact_match", _letter_count),
    Skill("french-number", "exact_match", _french_number),
    Skill("opposite", "exact_match", _opposite),
)}

# Same shape of stream as the multimodal one: capital only at step 0, spell gone after
# step 1, french-number only in 02, the rare opposite skill only in 03.
TEXT_PLAN: tuple[DatasetPlan, ...] = (
    DatasetPlan("basics", {"default": 1000, "quick": 100},
                {"arithmetic": 0.40, "capital": 0.35, "spell": 0.25}),
    DatasetPlan("words", {"default": 800, "quick": 80},
                {"reverse": 0.50, "letter-count": 0.30, "spell": 0.20}),
    DatasetPlan("french", {"default": 900, "quick": 90},
                {"french-number": 0.70, "arithmetic": 0.30}),
    DatasetPlan("rare", {"default": 700, "quick": 70},
                {"reverse": 0.45, "arithmetic": 0.48, "opposite": 0.07}),
    DatasetPlan("mixed", {"default": 1000, "quick": 100},
                {"letter-count": 0.34, "reverse": 0.33, "arithmetic": 0.33},
                carry_over=0.18, carry_skills=("letter-count", "reverse", "arithmetic")),
)

STREAMS: dict[str, tuple[dict[str, Skill], tuple[DatasetPlan, ...], str]] = {
    "multimodal": (MULTIMODAL_SKILLS, MULTIMODAL_PLAN, "demo"),
    "text": (TEXT_SKILLS, TEXT_PLAN, "demo-text"),
}

# ---- generation (pure) -------------------------------------------------------------------


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose): datasets and eval sets never share draws."""
    return np.random.default_rng([seed, *stream])


def allocate(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Split n into integer counts by shares (largest remainder), at least 1 per key."""
    total = sum(shares.values())
    raw = {k: n * v / total for k, v in shares.items()}
    counts = {k: max(1, int(v)) for k, v in raw.items()}
    by_remainder = sorted(shares, key=lambda k: (raw[k] - int(raw[k]), raw[k]), reverse=True)
    i = 0
    while sum(counts.values()) < n:
        counts[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(counts.values()) > n:  # only when the minimum of 1 overshot
        counts[max(counts, key=counts.__getitem__)] -= 1
    return counts


def make_sample(skill: Skill, rng: np.random.Generator) -> Sample:
    question, answer, scene = skill.make(rng)
    return Sample(skill.name, question, answer, scene)


def dataset_samples(plan: DatasetPlan, n: int, skills: dict[str, Skill], rng: np.random.Generator,
                    earlier: list[Sample]) -> list[Sample]:
    """One dataset's samples in shuffled order: fresh draws, self-redundancy, carry-over."""
    n_carry = round(n * plan.carry_over)
    n_redundant = round(n * REDUNDANCY)
    n_fresh = n - n_carry - n_redundant
    fresh = [make_sample(skills[name], rng)
             for name, count in allocate(n_fresh, plan.mix).items() for _ in range(count)]
    redundant = [replace(fresh[int(i)], near_dup=True)
                 for i in rng.integers(len(fresh), size=n_redundant)]
    sources = [s for s in earlier if s.skill in plan.carry_skills]
    if n_carry and not sources:
        raise ValueError(f"dataset {plan.name!r} carries over {plan.carry_skills} but no earlier "
                         "dataset has them")
    carried = [replace(sources[int(i)], near_dup=True)
               for i in rng.integers(len(sources), size=n_carry)] if n_carry else []
    samples = fresh + redundant + carried
    return [samples[int(i)] for i in rng.permutation(len(samples))]


# ---- writing -----------------------------------------------------------------------------


def _record(rid: str, sample: Sample, image: str | None) -> dict[str, Any]:
    human = f"{IMAGE_TOKEN}\n{sample.question}" if image else sample.question
    record: dict[str, Any] = {"id": rid}
    if image:
        record["image"] = image
    record["conversations"] = [{"from": "human", "value": human},
                               {"from": "gpt", "value": sample.answer}]
    record["skill"] = sample.skill
    return record


def _write_records(jsonl: Path, samples: list[Sample], id_prefix: str, image_dir: Path,
                   noise_rng: np.random.Generator) -> None:
    """Records as JSONL; each sample's image as a PNG named after the record's number."""
    lines = []
    for i, sample in enumerate(samples):
        image = None
        if sample.scene is not None:
            png = image_dir / f"{i:06d}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            noise = NEAR_DUP_NOISE if sample.near_dup else 0
            shapes.render(sample.scene, noise_rng, noise).save(png, format="PNG")
            # Relative to the stream root (the YAMLs set `imageRoot` to it): no "..".
            image = png.relative_to(jsonl.parent.parent).as_posix()
        lines.append(json.dumps(_record(f"{id_prefix}{i:06d}", sample, image), ensure_ascii=False))
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_yaml(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")


def _clear_previous(out: Path) -> None:
    """Remove files an earlier call wrote, so a re-run never leaves stale datasets behind."""
    stale = [*out.glob("datasets/[0-9][0-9]-*.yaml"), *out.glob("datasets/[0-9][0-9]-*.jsonl"),
             *out.glob("eval/*.jsonl"), *out.glob("images/**/*.png")]
    for path in stale:
        path.unlink()
    if stale:
        log.info("removed %d files of a previous demo stream under %s", len(stale), out)


def run_manifest(name: str, sizes: list[int], suite: list[dict[str, str]], size: str) -> dict[str, Any]:
    """The LifelongRun: T ≈ a third of a dataset, D ≈ 2.5 datasets, so pruning starts ~step 2."""
    mean = sum(sizes) / len(sizes)
    clustering = {"kMin": 5, "kMax": 30} if size == "default" else {"kMin": 2, "kMax": 8}
    return {
        "apiVersion": FULL_API_VERSION,
        "kind": "LifelongRun",
        "metadata": {"name": name},
        "spec": {
            "model": {"base": "model", "initialTuning": "full"},
            "strategy": "lite-adapt-inf",
            "trainBudget": round(mean / 3),
            "poolBudget": round(mean * 2.5),
            "extract": {"projectionDim": 2048},
            "clustering": clustering,
            # LoRA on a 0.7M-parameter model needs a high rate to pick up a new skill from ~300
            # samples: at 2e-4 nothing new was learned; at 5e-3 × 5 epochs new skills are learned
            # and sequential training forgets visibly (README "Quick start" numbers).
            "training": {"epochs": 5, "learningRate": 5e-3},
            # Longest answer (a caption) is 36 characters: above the default of 32 tokens.
            "eval": {"suite": suite, "maxNewTokens": 48},
            "storage": {"uri": "artifacts"},
            "mlflow": {"experiment": "adapt-inf-demo"},
        },
    }


def dataset_manifest(run: str, step: int, stem: str) -> dict[str, Any]:
    return {
        "apiVersion": FULL_API_VERSION,
        "kind": "InstructionDataset",
        "metadata": {"name": f"{run}-{stem}"},
        "spec": {"run": run, "source": f"{stem}.jsonl", "imageRoot": "..", "order": step},
    }


def _readme(run: str, modality: str, skills: dict[str, Skill], datasets: list[dict[str, Any]]) -> str:
    names = list(skills)
    header = "| dataset | records | " + " | ".join(names) + " | near-dup of earlier |"
    rule = "|" + "---|" * (len(names) + 3)
    rows = [f"| {d['name']} | {d['records']} | "
            + " | ".join(str(d["skills"].get(s, "")) for s in names)
            + f" | {d['carried_over']} |" for d in datasets]
    return "\n".join([
        f"# Synthetic {modality} instruction stream `{run}`",
        "",
        "Written by `adaptinf.data.demo.write_demo_stream` (`adaptinf demo-data`). Each dataset "
        "in `datasets/` is one step of the lifelong run in `lifelongrun.yaml`; `eval/` holds a "
        "held-out set per skill. Records are LLaVA-style; the `skill` field is a hidden label for "
        "evaluation and reports only. Skill mixes are skewed on purpose: some skills appear in one "
        "dataset only, some stop appearing (forgetting), each dataset repeats ~8% of itself, and "
        "the last one near-duplicates earlier datasets.",
        "",
        "Skills (metric): " + ", ".join(f"`{s.name}` ({s.metric})" for s in skills.values()) + ".",
        "",
        header, rule, *rows, "",
    ])


def write_demo_stream(out: Path | str, seed: int = 0, size: str = "default",
                      modality: str = "multimodal", eval_samples: int | None = None) -> dict:
    """Write the stream; return a small dict describing it (datasets, counts per skill, paths).

    `eval_samples`: held-out records per skill (default `EVAL_SAMPLES[size]`); ≥ 200 lets a
    comparison tell strategies apart (`adaptinf compare --eval-samples`)."""
    if eval_samples is not None and eval_samples < 1:
        raise ValueError(f"eval_samples must be at least 1, got {eval_samples}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    skills, plan, run = STREAMS[modality]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)

    datasets: list[dict[str, Any]] = []
    earlier: list[Sample] = []
    for step, dplan in enumerate(plan):
        rng = _rng(seed, 0, step)
        samples = dataset_samples(dplan, dplan.sizes[size], skills, rng, earlier)
        stem = f"{step:02d}-{dplan.name}"
        jsonl = out / "datasets" / f"{stem}.jsonl"
        _write_records(jsonl, samples, f"s{step:02d}-", out / "images" / f"{step:02d}", rng)
        _write_yaml(out / "datasets" / f"{stem}.yaml", dataset_manifest(run, step, stem))
        earlier += [s for s in samples if not s.near_dup]
        counts = {name: sum(s.skill == name for s in samples) for name in skills}
        datasets.append({
            "name": stem, "path": str(jsonl), "records": len(samples),
            "skills": {k: v for k, v in counts.items() if v},
            "carried_over": round(len(samples) * dplan.carry_over),
        })

    suite, evals = [], {}
    n_eval = eval_samples or EVAL_SAMPLES[size]
    for name, skill in skills.items():
        rng = _rng(seed, 1, zlib.crc32(name.encode()))
        samples = [make_sample(skill, rng) for _ in range(n_eval)]
        jsonl = out / "eval" / f"{name}.jsonl"
        _write_records(jsonl, samples, f"eval-{name}-", out / "images" / "eval" / name, rng)
        suite.append({"skill": name, "path": f"eval/{name}.jsonl", "imageRoot": ".", "metric": skill.metric})
        evals[name] = {"path": str(jsonl), "samples": n_eval, "metric": skill.metric}

    manifest = run_manifest(run, [d["records"] for d in datasets], suite, size)
    _write_yaml(out / "lifelongrun.yaml", manifest)
    (out / "README.md").write_text(_readme(run, modality, skills, datasets), encoding="utf-8")
    log.info("wrote demo stream %r (%s, %s): %d datasets, %d train records to %s", run, modality,
             size, len(datasets), sum(d["records"] for d in datasets), out)
    return {
        "run": run, "modality": modality, "size": size, "seed": seed, "root": str(out),
        "run_file": str(out / "lifelongrun.yaml"),
        "train_budget": manifest["spec"]["trainBudget"], "pool_budget": manifest["spec"]["poolBudget"],
        "datasets": datasets, "eval": evals,
    }
