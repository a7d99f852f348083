"""The Dockerfiles in images/ are consistent with the repository, the chart and the contracts.

No Docker here: the files are parsed (dockerfile_parse.py) and every fact an image build or a
pod start would trip over is checked against the source tree instead.
"""
from __future__ import annotations

import glob
import re
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from chart_helpers import REPO, one
from dockerfile_parse import is_excluded, parse, read_dockerignore

OPERATOR = REPO / "images" / "operator" / "Dockerfile"
STAGE = REPO / "images" / "stage" / "Dockerfile"
STAGE_CPU = REPO / "images" / "stage" / "Dockerfile.cpu"
REQUIREMENTS = REPO / "images" / "operator" / "requirements.txt"
DOCKERFILES = {"operator": OPERATOR, "stage": STAGE, "stage-cpu": STAGE_CPU}
# tools/lock-images.py writes these; each Dockerfile installs exactly one of them.
LOCKS = {"operator": REPO / "images" / "operator" / "requirements.lock",
         "stage": REPO / "images" / "stage" / "requirements.lock"}
LOCK_OF = {"operator": "operator", "stage": "stage", "stage-cpu": "stage"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
OPERATOR_MODULE = "adaptinf.operator.main"
# Modules the operator image must never need (docs/install.md §2: the operator image has no torch).
HEAVY = ("torch", "transformers", "peft", "accelerate", "faiss", "matplotlib", "sklearn", "tokenizers",
         "safetensors", "PIL")


def module_file(module: str) -> Path | None:
    """Source file of an `adaptinf…` module, via pyproject's package-dir mapping."""
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        pkg = ".".join(parts[:n])
        if pkg in dirs:
            base = REPO / dirs[pkg] / Path(*parts[n:])
            for cand in (base.with_suffix(".py"), base / "__init__.py"):
                if cand.is_file():
                    return cand
            return None
    return None


def requirements() -> list[Requirement]:
    lines = [l.split("#", 1)[0].strip() for l in REQUIREMENTS.read_text().splitlines()]
    return [Requirement(l) for l in lines if l]


# --- files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("image", DOCKERFILES)
def test_copy_sources_exist_and_reach_the_build_context(image):
    df = parse(DOCKERFILES[image])
    rules = read_dockerignore(REPO / ".dockerignore")
    copies = [i for s in df.stages for i in s.instructions if i.keyword in ("COPY", "ADD")]
    assert copies, "no COPY at all?"
    for ins in copies:
        flags, words = ins.flags_and_args()
        if "from" in flags:
            continue  # from another build stage
        for src in words[:-1]:
            matches = glob.glob(str(REPO / src))
            assert matches, f"{image} Dockerfile line {ins.line}: COPY source {src!r} does not exist"
            rel = src.rstrip("/")
            assert not is_excluded(rules, rel), f"{src!r} is excluded by .dockerignore (line {ins.line})"


def test_dockerignore_keeps_secrets_and_caches_out():
    rules = read_dockerignore(REPO / ".dockerignore")
    for path in (".git/config", ".cache/bin/helm", ".venv/bin/python", "tests/chart/test_images.py",
                 "src/adaptinf/__pycache__/store.cpython-311.pyc", "mlruns/0/meta.yaml", "work/x"):
        assert is_excluded(rules, path), path
    for path in ("pyproject.toml", "src/adaptinf/store.py", "operator/main.py", "stages/cli.py",
                 "images/operator/requirements.txt"):
        assert not is_excluded(rules, path), path


def test_dockerignore_matcher_semantics(tmp_path):
    # The matcher itself, on Docker's documented examples.
    p = tmp_path / ".dockerignore"
    p.write_text("# comment\n*/temp*\n*/*/temp*\ntemp?\n*.md\n!README*.md\nREADME-secret.md\n")
    rules = read_dockerignore(p)
    assert is_excluded(rules, "somedir/temporary.txt") and is_excluded(rules, "a/b/temp.txt")
    assert is_excluded(rules, "tempa") and not is_excluded(rules, "tempab")
    assert is_excluded(rules, "CHANGES.md") and not is_excluded(rules, "README.md")
    assert is_excluded(rules, "README-secret.md")


# --- users ------------------------------------------------------------------------------------

@pytest.mark.parametrize("image", DOCKERFILES)
def test_final_user_is_numeric_and_not_root(image):
    user = parse(DOCKERFILES[image]).final.last("USER")
    assert user is not None, f"{image}: no USER: the container would run as root"
    uid, _, gid = user.value.partition(":")
    # Numeric, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, user.value
    assert not gid or (gid.isdigit() and int(gid) != 0), user.value


def test_operator_uid_matches_the_charts_default():
    import yaml
    values = yaml.safe_load((REPO / "charts" / "adaptinf" / "values.yaml").read_text())
    uid, _, gid = parse(OPERATOR).final.last("USER").value.partition(":")
    assert values["securityContext"] == {"runAsUser": int(uid), "runAsGroup": int(gid or uid)}


# --- entrypoints --------------------------------------------------------------------------------

def entrypoint(path: Path) -> list[str]:
    ins = parse(path).final.last("ENTRYPOINT")
    assert ins is not None, f"{path}: no ENTRYPOINT"
    argv = ins.exec_form()
    assert argv, f"{path}: ENTRYPOINT must use the exec (JSON) form so signals reach the process"
    return argv


def test_operator_entrypoint_runs_kopf_on_the_operator_module():
    argv = entrypoint(OPERATOR)
    assert argv[:4] == ["kopf", "run", "-m", OPERATOR_MODULE]
    # Peering is the chart's (its args); the image alone runs standalone, by its CMD.
    assert not any(a.startswith(("--standalone", "--peering", "--priority")) for a in argv), argv
    cmd = parse(OPERATOR).final.last("CMD")
    assert cmd is not None and cmd.exec_form() == ["--standalone", "--all-namespaces"]
    assert any(a.startswith("--liveness=http://0.0.0.0:") for a in argv)
    kopf_req = [r for r in PYPROJECT["project"]["optional-dependencies"]["operator"]
                if canonicalize_name(Requirement(r).name) == "kopf"]
    assert kopf_req, "kopf is not in the operator extra"
    path = module_file(OPERATOR_MODULE)
    assert path is not None, f"{OPERATOR_MODULE} has no source file (expected operator/main.py)"


def test_chart_runs_the_same_command_as_the_operator_image(render):
    c = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == entrypoint(OPERATOR)


@pytest.mark.parametrize("path", [STAGE, STAGE_CPU], ids=["cuda", "cpu"])
def test_stage_entrypoint_is_the_adaptinf_console_script(path):
    argv = entrypoint(path)
    assert argv == ["adaptinf", "stage"]
    target = PYPROJECT["project"]["scripts"][argv[0]]
    module, _, func = target.partition(":")
    assert module_file(module) is not None, f"console script {argv[0]} → {target}: no source file"
    # `adaptinf stage --help` works and lists exactly the contract's five stages.
    code = f"import sys; from {module} import {func} as m; sys.exit(m(['stage', '--help']))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert p.returncode == 0, p.stderr[-2000:]
    contract = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    m = re.search(r"^adaptinf stage <([a-z|-]+)>", contract, flags=re.M)
    assert m, "docs/contracts.md §1 no longer shows `adaptinf stage <a|b|…>`"
    for stage in m.group(1).split("|"):
        assert stage in p.stdout, f"`adaptinf stage --help` does not offer {stage}"


def test_stage_entrypoint_is_the_prefix_of_the_operators_job_command():
    """The Job the operator builds runs exactly the stage image's ENTRYPOINT, then its arguments."""
    contract = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    m = re.search(r"^(adaptinf stage) <", contract, flags=re.M)
    assert m and m.group(1).split() == entrypoint(STAGE)
    from adaptinf.operator.config import OperatorConfig
    from adaptinf.operator.jobs import build_job

    run = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun",
           "metadata": {"name": "r", "namespace": "ns", "uid": "u-1"},
           "spec": {"model": {"base": "tiny"}, "trainBudget": 8, "storage": {"uri": "s3://bkt/x"}}}
    dataset = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "InstructionDataset",
               "metadata": {"name": "d", "namespace": "ns"}, "spec": {"run": "r", "source": "s3://bkt/d.jsonl"}}
    for stage in ("extract", "cluster-select", "train", "eval", "prune"):
        job = build_job(run, 0, stage, dataset, OperatorConfig())
        (container,) = job["spec"]["template"]["spec"]["containers"]
        argv = container["command"] + container.get("args", [])
        assert argv[:2] == entrypoint(STAGE), argv
        assert argv[2] == stage
        # runAsNonRoot without runAsUser: the kubelet relies on the image's numeric USER.
        assert container["securityContext"].get("runAsNonRoot") is True


# --- operator image dependencies ------------------------------------------------------------------

def test_operator_requirements_pin_within_pyproject_ranges_and_exclude_torch():
    declared = {canonicalize_name(Requirement(r).name): Requirement(r)
                for r in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["operator"]}
    reqs = requirements()
    names = {canonicalize_name(r.name) for r in reqs}
    for heavy in ("torch", "transformers", "peft", "accelerate", "faiss-cpu", "matplotlib"):
        assert heavy not in names, f"{heavy} in the operator image"
    for extra in PYPROJECT["project"]["optional-dependencies"]["operator"]:
        assert canonicalize_name(Requirement(extra).name) in names, f"operator extra {extra} missing"
    for r in reqs:
        pins = [s for s in r.specifier if s.operator == "=="]
        assert pins, f"{r}: pin an exact version (reproducible image)"
        want = declared.get(canonicalize_name(r.name))
        if want is not None:
            assert want.specifier.contains(Version(pins[0].version), prereleases=True), \
                f"{r} is outside pyproject's {want}"


@pytest.mark.parametrize("path", [OPERATOR, STAGE_CPU], ids=["operator", "stage-cpu"])
def test_python_base_is_the_locks_python_and_satisfies_requires_python(path):
    from packaging.specifiers import SpecifierSet
    base = parse(path)
    assert base.stages[0].base == base.final.base == "${PYTHON_IMAGE}", "one base, set by a build arg"
    image = base.expand(base.stages[0].base)
    m = re.match(r"python:(\d+\.\d+)", image)
    assert m, image
    # The locks are resolved for one interpreter (tools/lock-images.py); bookworm's python3 is it too.
    assert m.group(1) == "3.11", f"{image}: the locks are for Python 3.11"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(m.group(1) + ".0")


def test_stage_base_torch_satisfies_pyproject():
    df = parse(STAGE)
    image = df.expand(df.final.base)
    m = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn\d+-runtime$", image)
    assert m, f"stage base {image!r} is not a CUDA PyTorch runtime image"
    torch_req = next(Requirement(r) for r in PYPROJECT["project"]["dependencies"]
                     if canonicalize_name(Requirement(r).name) == "torch")
    assert torch_req.specifier.contains(m.group(1)), f"{image}: torch {m.group(1)} outside {torch_req}"


def _requirement_closure() -> set[str]:
    """Distribution names in the operator image: requirements.txt and their dependencies."""
    from importlib import metadata
    todo = [r for r in requirements()]
    seen: set[str] = set()
    while todo:
        r = todo.pop()
        name = canonicalize_name(r.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(r.name)
        except metadata.PackageNotFoundError:
            continue
        for dep in dist.requires or ():
            d = Requirement(dep)
            if d.marker is None or d.marker.evaluate({"extra": ""}):
                todo.append(d)
    return seen


def _image_site(root: Path) -> Path:
    """A site-packages folder holding only what the operator image has: symlinks to the installed
    files of every distribution in the requirements' closure, plus the adaptinf package (laid out
    as pyproject's package-dir mapping installs it)."""
    from importlib import metadata
    site = root / "site-packages"
    site.mkdir()
    for name in sorted(_requirement_closure()):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        base = Path(dist.locate_file(""))
        for top in sorted({f.parts[0] for f in dist.files or () if f.parts and f.parts[0] != ".."}):
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    pkg = site / "adaptinf"
    pkg.mkdir()
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for entry in (REPO / dirs["adaptinf"]).iterdir():
        if entry.name not in ("operator", "stages", "__pycache__"):
            (pkg / entry.name).symlink_to(entry)
    for sub in ("operator", "stages"):
        (pkg / sub).symlink_to(REPO / dirs[f"adaptinf.{sub}"])
    return site


def test_operator_module_imports_only_what_the_operator_image_installs(tmp_path):
    if module_file(OPERATOR_MODULE) is None:
        pytest.fail(f"{OPERATOR_MODULE} missing: the operator image's ENTRYPOINT would fail")
    site = _image_site(tmp_path)
    # -S: no site-packages of this machine; only the stdlib and the image's packages are importable.
    code = f"import sys, {OPERATOR_MODULE}; print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path), env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin",
                                               "PYTHONDONTWRITEBYTECODE": "1"})
    assert p.returncode == 0, (f"`import {OPERATOR_MODULE}` fails with only the operator image's packages "
                               f"(images/operator/requirements.txt):\n{p.stderr[-3000:]}")
    assert "HEAVY []" in p.stdout, p.stdout


def test_image_site_really_hides_the_training_stack(tmp_path):
    """The isolation above works: torch is importable here but not there; kopf is."""
    site = _image_site(tmp_path)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    ok = subprocess.run([sys.executable, "-S", "-c", "import kopf, kubernetes, boto3, adaptinf.store, adaptinf.spec"],
                        capture_output=True, text=True, timeout=120, cwd=str(tmp_path), env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    bad = subprocess.run([sys.executable, "-S", "-c", "import torch"], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path), env=env)
    assert bad.returncode != 0 and "No module named 'torch'" in bad.stderr


# --- lock files (tools/lock-images.py) ------------------------------------------------------------

def lock(image: str) -> dict[str, Version]:
    """{distribution: version} of a lock file; every line must be an exact `name==version` pin."""
    pins: dict[str, Version] = {}
    for n, line in enumerate(LOCKS[image].read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        r = Requirement(line)
        (spec,) = r.specifier
        assert spec.operator == "==" and not r.marker and not r.extras, f"{LOCKS[image].name}:{n}: {line!r} is no pin"
        name = canonicalize_name(r.name)
        assert name not in pins, f"{LOCKS[image].name}:{n}: {name} pinned twice"
        pins[name] = Version(spec.version)
    return pins


def pyproject_ranges(*extras: str) -> dict[str, Requirement]:
    reqs = PYPROJECT["project"]["dependencies"] + [r for e in extras for r in PYPROJECT["project"]["optional-dependencies"][e]]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}


@pytest.mark.parametrize("image", LOCKS)
def test_lock_pins_lie_within_pyproject_ranges(image):
    pins = lock(image)
    ranges = pyproject_ranges("operator")
    ranges["setuptools"] = Requirement(next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")))
    checked = [n for n in pins if n in ranges]
    assert "setuptools" in checked, "the build backend is locked too (the images build with --no-build-isolation)"
    for name in checked:
        assert ranges[name].specifier.contains(pins[name], prereleases=True), \
            f"{LOCKS[image].name}: {name}=={pins[name]} outside pyproject's {ranges[name]}"


def test_stage_lock_holds_every_dependency_and_the_cpu_torch_without_cuda():
    pins = lock("stage")
    missing = sorted(set(pyproject_ranges()) - set(pins))
    assert not missing, f"pyproject dependencies missing from the stage lock: {missing}"
    assert pins["torch"] == Version("2.13.0")  # the CPU build's version (the local label is the index's business)
    cuda = sorted(n for n in pins if n.startswith(("nvidia-", "triton", "cuda-")))
    assert not cuda, f"CUDA wheels in the lock (resolved against PyPI's CUDA torch?): {cuda}"
    assert "adaptinf" not in pins  # installed from the build context, not from an index


def test_operator_lock_is_requirements_txt_closed_and_without_the_training_stack():
    pins = lock("operator")
    for r in requirements():
        (spec,) = r.specifier
        assert pins.get(canonicalize_name(r.name)) == Version(spec.version), f"{r} differs in requirements.lock"
    heavy = sorted(n for n in pins if n in ("torch", "transformers", "peft", "accelerate", "faiss-cpu", "matplotlib",
                                            "mlflow-skinny", "tokenizers", "safetensors"))
    assert not heavy, heavy


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_installs_only_its_lock(image):
    """Every `pip install` in the build uses --no-deps (nothing resolved outside the lock), the
    lock is copied in, and `pip check` proves the installed set consistent."""
    df = parse(DOCKERFILES[image])
    runs = [i.value for st in df.stages for i in st.all("RUN")]
    installs = [cmd for run in runs for cmd in re.split(r"&&|;", run) if re.search(r"\bpip install\b", cmd)]
    assert installs, f"{image}: no pip install?"
    for cmd in installs:
        assert "--no-deps" in cmd, f"{image}: {cmd.strip()!r} may resolve beyond the lock"
        assert "-r /tmp/" in cmd or "/src" in cmd, f"{image}: {cmd.strip()!r} installs neither the lock nor the project"
    lock_name = LOCKS[LOCK_OF[image]].relative_to(REPO).as_posix()
    copies = [i.flags_and_args()[1] for st in df.stages for i in st.all("COPY")]
    assert any(lock_name in words[:-1] for words in copies), f"{image}: {lock_name} is not copied in"
    assert any("pip check" in run for run in runs), f"{image}: no `pip check`"


def test_lock_generator_resolves_what_the_dockerfiles_pin():
    """tools/lock-images.py and the Dockerfiles agree on the torch the CPU image gets."""
    text = (REPO / "tools" / "lock-images.py").read_text(encoding="utf-8")
    m = re.search(r'^TORCH = "torch==([\d.]+)"', text, flags=re.M)
    assert m and Version(m.group(1)) == lock("stage")["torch"]
