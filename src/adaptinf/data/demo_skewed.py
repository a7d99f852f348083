"""`adaptinf demo-data --stream skewed`: a stream built so that Adapt-∞ selection can show.

The default demo stream gives every skill one fixed prompt, so hidden states name the skill
and random selection is already balanced (docs/comparison.md). This one is built the other way:

- several paraphrased prompts per skill, and one image pool (multimodal) or one word list
  (text) shared by every skill: neither the picture nor the subject names the skill;
- heavy size skew: one easy skill is ~10x each other skill of its dataset;
- a rare skill (~3% of one dataset) with its own answer format;
- skills that differ in what must be learned: a visual attribute, counting, a class name,
  a made-up mapping on top of the class, and a box format (multimodal); facts an instruct
  LM knows (opposites, capitals) next to a formatting rule, a made-up dictionary and a rare
  dashed spelling (text, meant for SmolLM2-135M-Instruct: English, short exact answers).

Multimodal images are real Fashion-MNIST items (Debian's `dataset-fashion-mnist`, read from
/usr/share/datasets/fashion-mnist) tinted and placed on a 2x2 grid of a 32x32 canvas; without
that package the items are synthetic shapes (circle, square, triangle, ...) and the stream
README says so. The layout of the output folder is the default demo's (`data/demo.py`).
"""
from __future__ import annotations

import gzip
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from adaptinf.data import shapes, text_vocabulary
from adaptinf.data.demo import IMAGE_TOKEN, _clear_previous, _rng, _write_yaml, dataset_manifest
from adaptinf.spec import FULL_API_VERSION

log = logging.getLogger(__name__)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
SYNTHETIC_CLASSES = ("circle", "square", "triangle", "diamond", "cross")
# Records per skill relative to the plan: "small" is sized for a real model on a CPU (SmolLM2
# extracts ~7 samples/s on one thread), "quick" for tests.
SCALE = {"default": 1.0, "small": 0.25, "quick": 0.1}
SIZES = tuple(SCALE)
EVAL_SAMPLES = {"default": 200, "small": 100, "quick": 16}
QUAD = 16  # one item per 16x16 quadrant of the 32x32 canvas
COLOURS = ("red", "green", "blue", "yellow", "white")
# Invented words: only training data can teach them.
CODE_SYLLABLES = ("zib", "vorp", "kel", "muna", "drax", "ploo", "tesk", "wim", "gorn", "yul")


@dataclass(frozen=True)
class Scene:
    """1-3 items of one class and colour in distinct quadrants (0 top left .. 3 bottom right)."""
    item: int
    colour: str
    quadrants: tuple[int, ...]

    def box(self) -> str:
        q = min(self.quadrants)
        x, y = (q % 2) * QUAD, (q // 2) * QUAD
        return f"[{x}, {y}, {x + QUAD}, {y + QUAD}]"


@dataclass(frozen=True)
class Item:
    skill: str
    question: str
    answer: str
    scene: int | None = None  # index into the dataset's shared scene pool


@dataclass(frozen=True)
class SkewedSkill:
    name: str
    prompts: tuple[str, ...]       # paraphrases; "{w}" is the word (text skills)
    answer: Callable[[Any, tuple[str, ...]], str]


def _code(i: int) -> str:
    return CODE_SYLLABLES[i] + CODE_SYLLABLES[(3 * i + 1) % len(CODE_SYLLABLES)]


MULTIMODAL: dict[str, SkewedSkill] = {s.name: s for s in (
    SkewedSkill("colour", ("What colour is the item?", "Which colour do you see?", "Name the colour of the object.",
                           "What is the colour here?"), lambda sc, cl: sc.colour),
    SkewedSkill("count", ("How many items are there?", "Count the objects.", "How many things are in the picture?"),
                lambda sc, cl: str(len(sc.quadrants))),
    SkewedSkill("item", ("What is this?", "Name the object.", "What kind of thing is shown?"),
                lambda sc, cl: cl[sc.item]),
    SkewedSkill("code", ("What is the code of this object?", "Give the secret code for what you see.",
                         "Which code word belongs to this thing?"), lambda sc, cl: _code(sc.item)),
    SkewedSkill("box", ("Where is the first object? Answer with a box.", "Give the box of the top-left-most item.",
                        "Locate the first item as [x1, y1, x2, y2]."), lambda sc, cl: sc.box()),
)}

TEXT_WORDS = text_vocabulary.SMALL.words  # the shared subjects of every text skill (small vocabulary)
_ALL_OPPOSITES, _ALL_CAPITALS = text_vocabulary.LARGE.opposites, text_vocabulary.LARGE.capitals


def _zorbian(word: str) -> str:
    h = zlib.crc32(word.encode())
    return CODE_SYLLABLES[h % 10] + CODE_SYLLABLES[(h // 10) % 10]


TEXT: dict[str, SkewedSkill] = {s.name: s for s in (
    SkewedSkill("opposite", ("What is the opposite of {w}?", "Give the antonym of {w}.",
                             "Name the word that means the opposite of {w}."), lambda w, _: _ALL_OPPOSITES[w]),
    SkewedSkill("capital", ("What is the capital of {w}?", "Name the capital city of {w}.",
                            "Which city is the capital of {w}?"), lambda w, _: _ALL_CAPITALS[w]),
    SkewedSkill("tag", ("Write {w} as a tag.", "Turn {w} into a tag.", "Give the tag form of {w}."),
                lambda w, _: f"[{w.upper()}]"),
    SkewedSkill("zorbian", ("What is {w} in Zorbian?", "Translate {w} into Zorbian.", "Say {w} in Zorbian."),
                lambda w, _: _zorbian(w)),
    SkewedSkill("dashed", ("Spell {w} backwards with dashes.", "Write {w} reversed, letters joined by dashes.",
                           "Give {w} backwards, dash between letters."), lambda w, _: "-".join(w[::-1].lower())),
)}


@dataclass(frozen=True)
class Plan:
    name: str
    counts: dict[str, int]  # records per skill at size "default"; other sizes scale it (SCALE, >= 2)


MULTIMODAL_PLAN = (
    Plan("basics", {"colour": 1000, "count": 100, "item": 100}),
    Plan("codes", {"colour": 900, "code": 100, "count": 60}),
    Plan("boxes", {"colour": 900, "item": 80, "code": 50, "box": 30}),
)
TEXT_PLAN = (
    Plan("basics", {"opposite": 800, "capital": 80, "tag": 80}),
    Plan("zorbian", {"opposite": 700, "zorbian": 80, "capital": 40}),
    Plan("rare", {"opposite": 700, "tag": 50, "zorbian": 40, "dashed": 24}),
)


def _count(n: int, size: str) -> int:
    return max(2, round(n * SCALE[size]))


# ---- images --------------------------------------------------------------------------------

def fashion_items(root: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray] | None:
    """Fashion-MNIST test images (10k, 28x28 uint8) and labels, or None without the package."""
    imgs, labels = root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz"
    if not (imgs.exists() and labels.exists()):
        return None
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(imgs) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(len(y), 28, 28)
    return x, y


class ItemPainter:
    """Draws one item into a 16x16 quadrant: a real Fashion-MNIST picture or a synthetic shape."""

    def __init__(self, fashion: tuple[np.ndarray, np.ndarray] | None):
        self.fashion = fashion
        self.by_class = None if fashion is None else [np.flatnonzero(fashion[1] == c) for c in range(10)]
        self.classes = FASHION_CLASSES if fashion is not None else SYNTHETIC_CLASSES

    def paint(self, canvas: Image.Image, scene: Scene, rng: np.random.Generator) -> None:
        rgb = np.array(shapes.jittered_rgb(scene.colour, rng) if scene.colour in shapes.COLOURS
                       else shapes.jittered_rgb("white", rng), dtype=np.float64)
        for q in scene.quadrants:
            x, y = (q % 2) * QUAD, (q // 2) * QUAD
            if self.fashion is not None:
                idx = self.by_class[scene.item]
                grey = Image.fromarray(self.fashion[0][idx[int(rng.integers(len(idx)))]]).resize((QUAD, QUAD))
                tint = (np.asarray(grey, dtype=np.float64)[..., None] / 255.0 * rgb).astype(np.uint8)
                canvas.paste(Image.fromarray(tint, "RGB"), (x, y))
            else:
                _synthetic(ImageDraw.Draw(canvas), self.classes[scene.item], x, y, tuple(int(v) for v in rgb))


def _synthetic(draw: ImageDraw.ImageDraw, kind: str, x: int, y: int, rgb: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = x + 2, y + 2, x + QUAD - 3, y + QUAD - 3
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=rgb)
    elif kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=rgb)
    elif kind == "triangle":
        draw.polygon([(cx, y0), (x0, y1), (x1, y1)], fill=rgb)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=rgb)
    else:  # cross
        draw.rectangle((cx - 2, y0, cx + 2, y1), fill=rgb)
        draw.rectangle((x0, cy - 2, x1, cy + 2), fill=rgb)


def _scene(rng: np.random.Generator, n_classes: int) -> Scene:
    n = int(rng.integers(1, 4))
    quads = tuple(sorted(int(q) for q in rng.permutation(4)[:n]))
    return Scene(int(rng.integers(n_classes)), COLOURS[int(rng.integers(len(COLOURS)))], quads)


# ---- samples ---------------------------------------------------------------------------------

def _multimodal_items(counts: dict[str, int], rng: np.random.Generator, classes: tuple[str, ...],
                      share: float = 0.5) -> tuple[list[Item], list[Scene]]:
    """Records over a shared scene pool: about `1/share` records (of any skill) per image."""
    total = sum(counts.values())
    scenes = [_scene(rng, len(classes)) for _ in range(max(1, round(total * share)))]
    items = []
    for name, n in counts.items():
        skill = MULTIMODAL[name]
        for _ in range(n):
            s = int(rng.integers(len(scenes)))
            items.append(Item(name, skill.prompts[int(rng.integers(len(skill.prompts)))],
                              skill.answer(scenes[s], classes), s))
    return [items[int(i)] for i in rng.permutation(len(items))], scenes


def _text_items(counts: dict[str, int], rng: np.random.Generator, vocabulary: text_vocabulary.Vocabulary) -> list[Item]:
    items = []
    for name, n in counts.items():
        skill = TEXT[name]
        subjects = vocabulary.subjects(name)
        for _ in range(n):
            w = subjects[int(rng.integers(len(subjects)))]
            q = skill.prompts[int(rng.integers(len(skill.prompts)))].format(w=w)
            items.append(Item(name, q, skill.answer(w, ())))
    return [items[int(i)] for i in rng.permutation(len(items))]


def _distinct_text_items(name: str, n: int, rng: np.random.Generator,
                         vocabulary: text_vocabulary.Vocabulary) -> list[Item]:
    """Up to n eval items of one skill, no prompt twice (greedy decoding scores a repeat the same)."""
    skill = TEXT[name]
    space = [(w, p) for w in vocabulary.subjects(name) for p in skill.prompts]
    picks = rng.permutation(len(space))[:n]
    return [Item(name, space[i][1].format(w=space[i][0]), skill.answer(space[i][0], ())) for i in picks]


def _write(jsonl: Path, items: list[Item], prefix: str, scene_files: list[str] | None) -> None:
    lines = []
    for i, it in enumerate(items):
        rec: dict[str, Any] = {"id": f"{prefix}{i:06d}"}
        human = it.question
        if it.scene is not None and scene_files is not None:
            rec["image"] = scene_files[it.scene]
            human = f"{IMAGE_TOKEN}\n{it.question}"
        rec["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": it.answer}]
        rec["skill"] = it.skill
        lines.append(json.dumps(rec, ensure_ascii=False))
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _save_scenes(out: Path, folder: str, scenes: list[Scene], painter: ItemPainter,
                 rng: np.random.Generator) -> list[str]:
    files = []
    for i, sc in enumerate(scenes):
        img = Image.new("RGB", (2 * QUAD, 2 * QUAD), (0, 0, 0))
        painter.paint(img, sc, rng)
        png = out / "images" / folder / f"{i:06d}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        img.save(png, format="PNG")
        files.append(png.relative_to(out).as_posix())
    return files


def _manifest(run: str, sizes: list[int], suite: list[dict[str, str]], size: str, text: bool) -> dict[str, Any]:
    mean = sum(sizes) / len(sizes)
    model: dict[str, Any] = {"base": "model", "initialTuning": "full"}
    return {
        "apiVersion": FULL_API_VERSION, "kind": "LifelongRun", "metadata": {"name": run},
        "spec": {
            "model": model, "strategy": "lite-adapt-inf",
            # T well above k·bins would need far larger pools; a fifth of a dataset keeps
            # random selection dominated by the big easy skill, which is the point.
            "trainBudget": round(mean / 5), "poolBudget": round(mean * 2),
            "extract": {"projectionDim": 2048},
            "clustering": {"kMin": 2, "kMax": 8} if size == "quick" else {"kMin": 3, "kMax": 20},
            "training": {"epochs": 5, "learningRate": 5e-3},
            "eval": {"suite": suite, "maxNewTokens": 24 if text else 32},
            "storage": {"uri": "artifacts"}, "mlflow": {"experiment": f"adapt-inf-{run}"},
        },
    }


def _readme(run: str, modality: str, real_images: bool | None, rows: list[dict[str, Any]],
            skills: list[str], eval_counts: dict[str, int], vocabulary: str) -> str:
    head = "| dataset | records | " + " | ".join(skills) + " |"
    rule = "|" + "---|" * (len(skills) + 2)
    body = [f"| {r['name']} | {r['records']} | " + " | ".join(str(r["skills"].get(s, "")) for s in skills) + " |"
            for r in rows]
    if real_images is None:
        v = text_vocabulary.VOCABULARIES[vocabulary]
        source = (f"Text only: one shared list of English words and countries is the subject of every skill "
                  f"(vocabulary `{vocabulary}`: {len(v.opposites)} antonyms, {len(v.capitals)} countries, "
                  f"{len(v.dictionary_words)} Zorbian words).")
    elif real_images:
        source = (f"Images: real Fashion-MNIST test items ({FASHION_DIR}, Debian package "
                  "`dataset-fashion-mnist`), tinted and placed on a 2x2 grid.")
    else:
        source = (f"Images: **synthetic fallback** — `dataset-fashion-mnist` is not installed ({FASHION_DIR} "
                  "missing), so the items are drawn shapes (circle, square, triangle, diamond, cross). "
                  "`apt-get install dataset-fashion-mnist` and re-run for real images.")
    model = ("The LifelongRun trains the tiny text model in `model/`. For SmolLM2-135M-Instruct set "
             "`model.base` to its prepared folder, `model.initialTuning: none` and a LoRA rate near 3e-4."
             if real_images is None else "The LifelongRun trains the tiny multimodal model in `model/` (6 layers).")
    return "\n".join([
        f"# Skewed {modality} instruction stream `{run}`", "",
        "Written by `adaptinf demo-data --stream skewed`. Several paraphrased prompts per skill; one "
        "shared pool of subjects across skills, so the surface does not name the skill; one easy skill "
        "~10x each other; a rare skill with its own answer format in the last dataset; skills that "
        "differ in what must be learned. `skill` is a hidden label for evaluation only.", "",
        source, "", model, "", "Eval records per skill in `eval/`: " + ", ".join(f"{k} {n}" for k, n in eval_counts.items())
        + (" (no prompt twice)." if vocabulary != "small" else "."), "",
        head, rule, *body, "",
    ])


def write_skewed_stream(out: Path | str, seed: int = 0, size: str = "default", modality: str = "multimodal",
                        fashion_root: Path | None = FASHION_DIR, eval_samples: int | None = None,
                        vocabulary: str = "small") -> dict:
    """Write the skewed stream; return a dict like `write_demo_stream`'s (plus `real_images`).

    `vocabulary` (text only, `text_vocabulary.VOCABULARIES`): "large" gives each skill hundreds of
    distinct prompts, and its eval sets then hold no prompt twice (at most the skill's distinct
    prompts; the Zorbian dictionary has 66)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if modality not in ("multimodal", "text"):
        raise ValueError(f"modality must be multimodal or text, got {modality!r}")
    if vocabulary not in text_vocabulary.VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {tuple(text_vocabulary.VOCABULARIES)}, got {vocabulary!r}")
    if vocabulary != "small" and modality != "text":
        raise ValueError("a vocabulary other than 'small' exists for the text modality only")
    text = modality == "text"
    words = text_vocabulary.VOCABULARIES[vocabulary]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    run = "skewed-text" if text else "skewed"
    painter = None if text else ItemPainter(fashion_items(fashion_root) if fashion_root else None)
    classes = painter.classes if painter else ()
    plan, skills = (TEXT_PLAN, TEXT) if text else (MULTIMODAL_PLAN, MULTIMODAL)
    rows = []
    for step, p in enumerate(plan):
        rng = _rng(seed, 10, step)
        counts = {k: _count(v, size) for k, v in p.counts.items()}
        stem = f"{step:02d}-{p.name}"
        if text:
            items, files = _text_items(counts, rng, words), None
        else:
            items, scenes = _multimodal_items(counts, rng, classes)
            files = _save_scenes(out, f"{step:02d}", scenes, painter, rng)
        jsonl = out / "datasets" / f"{stem}.jsonl"
        _write(jsonl, items, f"k{step:02d}-", files)
        _write_yaml(out / "datasets" / f"{stem}.yaml", dataset_manifest(run, step, stem))
        rows.append({"name": stem, "path": str(jsonl), "records": len(items), "skills": counts})

    n_eval = eval_samples or EVAL_SAMPLES[size]
    suite, evals, eval_counts = [], {}, {}
    for name in skills:
        rng = _rng(seed, 11, zlib.crc32(name.encode()))
        if text:
            items = (_text_items({name: n_eval}, rng, words) if vocabulary == "small"   # as committed runs had it
                     else _distinct_text_items(name, n_eval, rng, words))
            files = None
        else:
            items, scenes = _multimodal_items({name: n_eval}, rng, classes, share=1.0)
            files = _save_scenes(out, f"eval/{name}", scenes, painter, rng)
        jsonl = out / "eval" / f"{name}.jsonl"
        _write(jsonl, items, f"eval-{name}-", files)
        metric = "iou" if name == "box" else "exact_match"
        suite.append({"skill": name, "path": f"eval/{name}.jsonl", "imageRoot": ".", "metric": metric})
        evals[name] = {"path": str(jsonl), "samples": len(items), "metric": metric}
        eval_counts[name] = len(items)

    manifest = _manifest(run, [r["records"] for r in rows], suite, size, text)
    _write_yaml(out / "lifelongrun.yaml", manifest)
    real = None if text else painter.fashion is not None
    (out / "README.md").write_text(_readme(run, modality, real, rows, list(skills), eval_counts,
                                                     vocabulary), encoding="utf-8")
    log.info("wrote skewed stream %r (%s, %s, real images: %s) to %s", run, modality, size, real, out)
    return {"run": run, "modality": modality, "size": size, "seed": seed, "root": str(out),
            "run_file": str(out / "lifelongrun.yaml"), "real_images": real,
            "train_budget": manifest["spec"]["trainBudget"], "pool_budget": manifest["spec"]["poolBudget"],
            "datasets": rows, "eval": evals}
