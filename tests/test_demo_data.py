"""The synthetic demo stream: layout contract, valid resources, well-formed records, the skill
structure the experiments rely on (skew, rare skill, forgetting, near-duplicates), determinism."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptinf.data import shapes
from adaptinf.data.demo import NEAR_DUP_NOISE, allocate, write_demo_stream
from adaptinf.spec import load_resources

DATASET_STEM = re.compile(r"^(\d\d)-[a-z][-a-z0-9]*$")
BOX = re.compile(r"^\[(\d+), (\d+), (\d+), (\d+)\]$")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def question(rec: dict) -> str:
    return rec["conversations"][0]["value"]


def answer(rec: dict) -> str:
    return rec["conversations"][1]["value"]


def pixels(jsonl: Path, rec: dict) -> np.ndarray:
    return np.asarray(Image.open(jsonl.parent.parent / rec["image"]).convert("RGB"), dtype=np.int16)


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, write_demo_stream(out, seed=0, size="quick")


@pytest.fixture(scope="module")
def datasets(stream) -> list[tuple[Path, list[dict]]]:
    out, _ = stream
    return [(p, read_jsonl(p)) for p in sorted((out / "datasets").glob("*.jsonl"))]


def test_layout(stream):
    out, info = stream
    assert (out / "lifelongrun.yaml").is_file()
    assert (out / "README.md").read_text().strip()
    yamls = sorted((out / "datasets").glob("*.yaml"))
    assert len(yamls) == 5 == len(info["datasets"])
    for i, y in enumerate(yamls):
        assert DATASET_STEM.match(y.stem) and int(y.stem[:2]) == i
        assert y.with_suffix(".jsonl").is_file()
    assert {p.stem for p in (out / "eval").glob("*.jsonl")} == set(info["eval"])
    assert any((out / "images" / "00").glob("*.png"))
    assert any((out / "images" / "eval").rglob("*.png"))


def test_resources_validate(stream):
    out, info = stream
    [run] = load_resources(out / "lifelongrun.yaml")
    assert run.kind == "LifelongRun" and run.name == "demo" == info["run"]
    spec = run.spec
    assert spec.model.base == "model" and spec.model.initial_tuning == "full"
    assert spec.strategy == "lite-adapt-inf" and spec.training.epochs == 5 and spec.training.learning_rate == 5e-3
    assert spec.extract.projection_dim == 2048 and spec.storage.uri == "artifacts"
    assert spec.mlflow.experiment == "adapt-inf-demo"
    sizes = [d["records"] for d in info["datasets"]]
    # T about a third of a dataset; D about 2.5 datasets: the pool outgrows D at step 2.
    assert spec.train_budget == round(np.mean(sizes) / 3)
    assert sum(sizes[:2]) <= spec.pool_budget < sum(sizes[:3])
    assert spec.clustering.k_max <= spec.train_budget

    for i, path in enumerate(sorted((out / "datasets").glob("*.yaml"))):
        [ds] = load_resources(path)
        assert ds.kind == "InstructionDataset"
        assert ds.spec.run == run.name and ds.spec.order == i
        assert Path(ds.resolve(ds.spec.source)) == path.with_suffix(".jsonl").resolve()


def test_eval_suite_matches_eval_files(stream, datasets):
    out, _ = stream
    [run] = load_resources(out / "lifelongrun.yaml")
    suite = {t.skill: t for t in run.spec.eval.suite}
    train_skills = {r["skill"] for _, recs in datasets for r in recs}
    assert set(suite) == train_skills
    assert suite["grounding"].metric == "iou" and suite["caption"].metric == "bleu"
    assert suite["colour"].metric == "exact_match"
    train_images = {hashlib.sha256((out / r["image"]).read_bytes()).digest()
                    for p, recs in datasets for r in recs if r.get("image")}
    for skill, task in suite.items():
        path = Path(run.resolve(task.path))
        recs = read_jsonl(path)
        assert len(recs) == 16
        assert {r["skill"] for r in recs} == {skill}
        assert len({r["id"] for r in recs}) == 16
        for r in recs:
            if r.get("image"):
                image = (out / r["image"]).resolve()
                assert image.is_relative_to((out / "images" / "eval").resolve())
                assert hashlib.sha256(image.read_bytes()).digest() not in train_images


def test_records_well_formed(stream, datasets):
    out, _ = stream
    for path, recs in datasets:
        step = path.stem[:2]
        ids = [r["id"] for r in recs]
        assert len(set(ids)) == len(ids)
        for r in recs:
            assert r["id"].startswith(f"s{step}-")
            assert [t["from"] for t in r["conversations"]] == ["human", "gpt"]
            assert answer(r).strip() and r["skill"]
            assert question(r).isascii() and answer(r).isascii()  # small character vocabulary
            if r.get("image"):
                assert question(r).startswith("<image>\n") and question(r).count("<image>") == 1
                assert r["image"].startswith(f"images/{step}/")
                with Image.open(out / r["image"]) as im:
                    assert im.size == (32, 32) and im.mode == "RGB"
            else:
                assert r["skill"] == "arithmetic" and "<image>" not in question(r)


def test_skill_mix_is_skewed(datasets):
    counts = [Counter(r["skill"] for r in recs) for _, recs in datasets]
    assert len({tuple(sorted(c.items())) for c in counts}) == len(counts)
    appears_in = defaultdict(list)
    for i, c in enumerate(counts):
        for skill in c:
            appears_in[skill].append(i)
    assert appears_in["shape"] == [3] and appears_in["colour-fr"] == [2]
    # The rare skill is a small minority of the only dataset that has it.
    assert 0.03 <= counts[3]["shape"] / sum(counts[3].values()) <= 0.10
    # Skills learnt early and never seen again: forgetting is measurable.
    assert appears_in["colour"] == [0]
    assert max(appears_in["caption"]) < 2
    # Each dataset is dominated by its own skills.
    for c in counts:
        assert max(c.values()) / sum(c.values()) >= 0.3


def test_within_dataset_redundancy(datasets):
    # Some records repeat another record's question and answer on a near-identical image.
    path, recs = datasets[0]
    by_qa = defaultdict(list)
    for r in recs:
        by_qa[(question(r), answer(r))].append(pixels(path, r))
    near = sum(1 for imgs in by_qa.values() for a in imgs for b in imgs
               if a is not b and 0 < np.abs(a - b).max() <= NEAR_DUP_NOISE)
    assert near >= 2


def test_last_dataset_near_duplicates_earlier_ones(datasets):
    earlier = defaultdict(list)
    for path, recs in datasets[:-1]:
        for r in recs:
            if r.get("image"):
                earlier[(question(r), answer(r))].append(pixels(path, r))
    path, recs = datasets[-1]
    near = 0
    for r in recs:
        if r.get("image"):
            img = pixels(path, r)
            diffs = [np.abs(img - e).max() for e in earlier[(question(r), answer(r))]]
            near += any(0 < d <= NEAR_DUP_NOISE for d in diffs)
    assert near >= 5  # 18% of 100 records carried over, two thirds of them with images


def test_grounding_answers_are_boxes_on_the_named_shape(stream, datasets):
    out, _ = stream
    recs = [(p, r) for p, rs in datasets for r in rs if r["skill"] == "grounding"]
    recs += [(out / "eval" / "grounding.jsonl", r) for r in read_jsonl(out / "eval" / "grounding.jsonl")]
    assert len(recs) > 50
    for path, r in recs:
        m = BOX.match(answer(r))
        assert m, answer(r)
        x1, y1, x2, y2 = map(int, m.groups())
        assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
        assert all(v % 8 == 0 for v in (x1, y1, x2, y2)) and x2 - x1 == y2 - y1 in (8, 16)
        colour = re.search(r"the (\w+) shape", question(r)).group(1)
        inside = pixels(path, r)[y1:y2, x1:x2].reshape(-1, 3)
        lit = inside[inside.max(axis=1) > 60]
        assert len(lit) > 0 and nearest_colour(lit.mean(axis=0)) == colour


def nearest_colour(rgb: np.ndarray) -> str:
    # Compare directions, not magnitudes: shapes are dimmed by up to 20%.
    unit = rgb / np.linalg.norm(rgb)
    return max(shapes.COLOURS, key=lambda c: unit @ (np.array(shapes.COLOURS[c]) / np.linalg.norm(shapes.COLOURS[c])))


def test_answers_follow_from_the_image(stream, datasets):
    recs = [(p, r) for p, rs in datasets for r in rs]
    french = {v: k for k, v in shapes.FRENCH_COLOURS.items()}
    checked = Counter()
    for path, r in recs:
        if r["skill"] in ("colour", "colour-fr"):
            img = pixels(path, r).reshape(-1, 3)
            lit = img[img.max(axis=1) > 60]
            expected = answer(r) if r["skill"] == "colour" else french[answer(r)]
            assert nearest_colour(lit.mean(axis=0)) == expected
        elif r["skill"] == "count":
            lit = pixels(path, r).max(axis=2) > 60
            # One shape per 8×8 cell: count the cells with lit pixels.
            cells = lit.reshape(4, 8, 4, 8).any(axis=(1, 3)).sum()
            assert str(cells) == answer(r)
        elif r["skill"] == "arithmetic":
            a, b = map(int, re.findall(r"\d+", question(r)))
            assert str(a + b) == answer(r)
        elif r["skill"] == "caption":
            assert re.match(r"^a (\w+) (circle|square|triangle) (at the|in the) [a-z ]+$", answer(r))
        elif r["skill"] == "shape":
            assert answer(r) in shapes.KINDS
        checked[r["skill"]] += 1
    assert {"colour", "colour-fr", "count", "arithmetic", "caption", "shape"} <= set(checked)


def test_deterministic_for_a_seed(stream, tmp_path):
    out, _ = stream
    again = write_demo_stream(tmp_path / "again", seed=0, size="quick")
    assert tree_digest(tmp_path / "again") == tree_digest(out)
    assert again["datasets"][0]["skills"]
    write_demo_stream(tmp_path / "other", seed=1, size="quick")
    other, first = tree_digest(tmp_path / "other"), tree_digest(out)
    # Layout is the same; contents (and which records have images) are not.
    assert {k for k in other if not k.endswith(".png")} == {k for k in first if not k.endswith(".png")}
    changed = [k for k, v in other.items() if v != first.get(k)]
    assert any(k.startswith("datasets/") and k.endswith(".jsonl") for k in changed)
    assert any(k.startswith("eval/") for k in changed)
    assert any(k.endswith(".png") for k in changed)


def test_text_modality_writes_no_images(tmp_path):
    info = write_demo_stream(tmp_path, seed=0, size="quick", modality="text")
    assert not list(tmp_path.rglob("*.png"))
    [run] = load_resources(tmp_path / "lifelongrun.yaml")
    assert run.name == "demo-text" == info["run"]
    appears_in = defaultdict(set)
    paths = sorted((tmp_path / "datasets").glob("*.yaml"))
    assert len(paths) == 5
    for i, path in enumerate(paths):
        [ds] = load_resources(path)
        assert ds.spec.run == "demo-text" and ds.spec.order == i
        recs = read_jsonl(path.with_suffix(".jsonl"))
        assert len({r["id"] for r in recs}) == len(recs)
        for r in recs:
            assert r.get("image") is None and "<image>" not in question(r)
            assert answer(r).strip()
            appears_in[r["skill"]].add(i)
    assert any(len(steps) == 1 for steps in appears_in.values())
    assert {t.skill for t in run.spec.eval.suite} == set(appears_in)
    for task in run.spec.eval.suite:
        recs = read_jsonl(Path(run.resolve(task.path)))
        assert len(recs) == 16 and all(r.get("image") is None for r in recs)


def test_rewrite_leaves_no_stale_files(tmp_path):
    write_demo_stream(tmp_path, seed=0, size="quick")
    write_demo_stream(tmp_path, seed=0, size="quick", modality="text")
    stems = sorted(p.stem for p in (tmp_path / "datasets").glob("*.yaml"))
    assert stems == sorted(p.stem for p in (tmp_path / "datasets").glob("*.jsonl"))
    assert len(stems) == 5 and "01-words" in stems
    assert not list(tmp_path.rglob("*.png"))
    assert not (tmp_path / "eval" / "colour.jsonl").exists()


def test_rejects_unknown_size_and_modality(tmp_path):
    with pytest.raises(ValueError, match="size"):
        write_demo_stream(tmp_path, size="huge")
    with pytest.raises(ValueError, match="modality"):
        write_demo_stream(tmp_path, modality="audio")


def test_allocate_hits_total_and_keeps_rare_keys():
    assert sum(allocate(97, {"a": 0.5, "b": 0.3, "c": 0.2}).values()) == 97
    assert allocate(10, {"a": 0.99, "b": 0.01}) == {"a": 9, "b": 1}
    assert allocate(100, {"a": 0.35, "b": 0.65}) == {"a": 35, "b": 65}


# ---- the skewed stream (`demo-data --stream skewed`) ---------------------------------------

from adaptinf.data import demo_skewed  # noqa: E402


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """The multimodal skewed stream with the synthetic fallback (tests never need the package)."""
    out = tmp_path_factory.mktemp("skewed")
    info = demo_skewed.write_skewed_stream(out, size="quick", fashion_root=out / "no-fashion-mnist")
    return out, info


def _records(out: Path) -> list[list[dict]]:
    return [read_jsonl(p) for p in sorted((out / "datasets").glob("*.jsonl"))]


def test_skewed_fallback_is_stated_and_resources_validate(skewed):
    out, info = skewed
    assert info["real_images"] is False
    assert "synthetic fallback" in (out / "README.md").read_text()
    runs = load_resources(out / "lifelongrun.yaml")
    assert runs[0].name == "skewed" and len(runs[0].spec.eval.suite) == len(demo_skewed.MULTIMODAL)
    assert [load_resources(p)[0].spec.order for p in sorted((out / "datasets").glob("*.yaml"))] == [0, 1, 2]


def test_skewed_has_one_dominant_skill_and_a_rare_one_with_its_own_format(skewed):
    out, _ = skewed
    per = [Counter(r["skill"] for r in recs) for recs in _records(out)]
    for counts in per:
        largest_other = max(n for s, n in counts.items() if s != "colour")
        assert counts["colour"] >= 9 * largest_other, counts            # ~10x the others
    assert [("box" in c) for c in per] == [False, False, True]         # rare, last dataset only
    answers = {r["skill"]: r["conversations"][1]["value"] for recs in _records(out) for r in recs}
    box_answers = [r["conversations"][1]["value"] for recs in _records(out) for r in recs if r["skill"] == "box"]
    assert box_answers and all(BOX.match(a) for a in box_answers)
    assert not any(BOX.match(a) for s, a in answers.items() if s != "box")  # the format is its own


def test_skewed_prompts_are_paraphrased_and_images_shared_across_skills(skewed):
    out, _ = skewed
    recs = [r for rs in _records(out) for r in rs]
    colour_prompts = {question(r) for r in recs if r["skill"] == "colour"}
    assert len(colour_prompts) == len(demo_skewed.MULTIMODAL["colour"].prompts) >= 3
    skills_per_image = defaultdict(set)
    for r in recs:
        skills_per_image[r["image"]].add(r["skill"])
    assert any(len(s) >= 2 for s in skills_per_image.values())       # one picture, several questions
    assert len(skills_per_image) < len(recs)


def test_skewed_answers_follow_from_the_scene():
    sc = demo_skewed.Scene(item=2, colour="red", quadrants=(1, 3))
    classes = demo_skewed.SYNTHETIC_CLASSES
    sk = demo_skewed.MULTIMODAL
    assert sk["count"].answer(sc, classes) == "2"
    assert sk["item"].answer(sc, classes) == "triangle"
    assert sk["box"].answer(sc, classes) == "[16, 0, 32, 16]"        # quadrant 1: top right
    assert sk["code"].answer(sc, classes) == demo_skewed._code(2) != demo_skewed._code(3)


def test_fashion_items_read_from_idx_files(tmp_path):
    import gzip
    imgs = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes(16) + imgs.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes(8) + bytes([7, 3]))
    x, y = demo_skewed.fashion_items(tmp_path)
    assert y.tolist() == [7, 3] and np.array_equal(x, imgs)
    assert demo_skewed.fashion_items(tmp_path / "absent") is None
    painter = demo_skewed.ItemPainter((x, y))
    assert painter.classes == demo_skewed.FASHION_CLASSES
    img = Image.new("RGB", (32, 32))
    painter.paint(img, demo_skewed.Scene(item=3, colour="white", quadrants=(0,)), np.random.default_rng(0))
    px = np.asarray(img)
    assert px[:16, :16].any() and not px[16:, :].any()                 # only quadrant 0 painted


def test_skewed_text_stream_for_a_real_lm(tmp_path):
    info = demo_skewed.write_skewed_stream(tmp_path, size="quick", modality="text")
    assert info["run"] == "skewed-text" and not list(tmp_path.glob("images/**/*.png"))
    recs = [r for rs in _records(tmp_path) for r in rs]
    assert all("image" not in r and r["conversations"][1]["value"].isascii() for r in recs)
    assert all(len(r["conversations"][1]["value"].split()) == 1 for r in recs)   # short, exact answers
    ans = {(question(r), r["conversations"][1]["value"]) for r in recs}
    about_hot = {a for q, a in ans if re.search(r"\bhot\b", q)}
    assert about_hot and about_hot <= {"cold", "[HOT]", demo_skewed._zorbian("hot"), "t-o-h"}
    # one subject, several skills: the word does not name the skill
    by_word = defaultdict(set)
    for r in recs:
        for w in demo_skewed.TEXT_WORDS:
            if f" {w}" in question(r):
                by_word[w].add(r["skill"])
    assert any(len(s) >= 2 for s in by_word.values())
    rare = [r["conversations"][1]["value"] for r in recs if r["skill"] == "dashed"]
    assert rare and all(re.fullmatch(r"[a-z](-[a-z])+", a) for a in rare)
    assert demo_skewed.TEXT["dashed"].answer("hot", ()) == "t-o-h"
    assert demo_skewed.TEXT["tag"].answer("France", ()) == "[FRANCE]"
    assert (tmp_path / "eval" / "capital.jsonl").exists()


def test_large_vocabulary_gives_distinct_eval_prompts_and_keeps_the_small_stream(tmp_path):
    from adaptinf.data import text_vocabulary as tv
    small = demo_skewed.write_skewed_stream(tmp_path / "s", size="small", modality="text", eval_samples=200)
    large = demo_skewed.write_skewed_stream(tmp_path / "l", size="small", modality="text", eval_samples=200,
                                            vocabulary="large")
    # the training plan is the same size; only the subjects widen
    assert [d["records"] for d in small["datasets"]] == [d["records"] for d in large["datasets"]]
    for name, ev in large["eval"].items():
        recs = [json.loads(line) for line in Path(ev["path"]).read_text().splitlines()]
        prompts = [question(r) for r in recs]
        assert len(set(prompts)) == len(prompts) == ev["samples"]          # no prompt twice
        assert all(len(r["conversations"][1]["value"].split()) == 1 for r in recs)
        small_prompts = {question(json.loads(line)) for line in Path(small["eval"][name]["path"]).read_text().splitlines()}
        if name == "zorbian":   # a dictionary only training teaches: it stays on the 22 small words
            assert ev["samples"] == 66 and small_prompts <= set(prompts)
        else:                   # the small vocabulary has at most 36-66 distinct prompts a skill
            assert ev["samples"] == 200 and len(small_prompts) <= 66
    capitals = [json.loads(line)["conversations"][1]["value"]
                for line in Path(large["eval"]["capital"]["path"]).read_text().splitlines()]
    assert len(set(capitals)) > len(tv.SMALL_CAPITALS)
    assert tv.LARGE.opposites["cold"] == "hot" and tv.LARGE.subjects("zorbian") == demo_skewed.TEXT_WORDS
    assert "vocabulary `large`" in (tmp_path / "l" / "README.md").read_text()
    with pytest.raises(ValueError, match="text modality only"):
        demo_skewed.write_skewed_stream(tmp_path / "m", size="quick", vocabulary="large")


def test_cli_refuses_a_large_vocabulary_outside_the_skewed_text_stream(tmp_path, capsys):
    from adaptinf.cli import main
    assert main(["demo-data", "--out", str(tmp_path), "--vocabulary", "large"]) == 2
    assert "--vocabulary large exists for --stream skewed --modality text only" in capsys.readouterr().err
    assert not (tmp_path / "datasets").exists()


def test_cli_writes_the_skewed_stream_and_a_model(tmp_path):
    from adaptinf.cli import main
    assert main(["demo-data", "--out", str(tmp_path), "--size", "quick", "--modality", "text",
                 "--stream", "skewed"]) == 0
    assert load_resources(tmp_path / "lifelongrun.yaml")[0].name == "skewed-text"
    assert (tmp_path / "model" / "config.json").exists()


def test_tiny_model_folder_is_readable_by_others(tmp_path):
    """safetensors writes its file 0600; a model folder shared over a volume must not be."""
    import os

    from adaptinf.file_modes import DIR_MODE, FILE_MODE
    from adaptinf.model.tiny import build_tiny_model
    out = build_tiny_model(tmp_path / "m", multimodal=False, hidden=32, layers=2)
    modes = {p.name: os.stat(p).st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert modes["model.safetensors"] == FILE_MODE, modes
    assert all(m == (DIR_MODE if (out / n).is_dir() or n == out.name else FILE_MODE) for n, m in modes.items()), modes
