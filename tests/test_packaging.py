"""The design card's folders map to namespaced imports, and nothing shadows the stdlib."""
from __future__ import annotations

import operator
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _packages_on_disk() -> set[str]:
    found = set()
    for base, name in ((ROOT / "src" / "adaptinf", "adaptinf"), (ROOT / "operator", "adaptinf.operator"),
                       (ROOT / "stages", "adaptinf.stages")):
        for module in base.rglob("*.py"):
            rel = module.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    return found


def test_top_level_folders_are_not_regular_packages():
    # A regular package (with __init__.py) at the repository root would shadow the stdlib.
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "stages" / "__init__.py").exists()


def test_fresh_venv_from_repo_root_sees_the_stdlib(tmp_path):
    """The README's first commands run `python -m pip` from the repository root in a new venv:
    with the root first on sys.path and nothing imported yet, nothing there may shadow the stdlib."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    for argv in (["-m", "pip", "--version"], ["-c", "import collections, operator; print(operator.__file__)"]):
        done = subprocess.run([str(python), *argv], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert not done.stdout.strip().startswith(str(ROOT / "operator")), done.stdout


def test_every_package_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(cfg["packages"]) == _packages_on_disk()
    assert cfg["package-dir"] == {"adaptinf": "src/adaptinf", "adaptinf.operator": "operator",
                                  "adaptinf.stages": "stages"}


def test_no_top_level_operator_or_stages_import():
    import adaptinf.operator
    import adaptinf.stages
    assert operator.__file__.startswith(sys.base_prefix)  # still the standard library
    assert [Path(p) for p in adaptinf.operator.__path__] == [ROOT / "operator"]
    assert [Path(p) for p in adaptinf.stages.__path__] == [ROOT / "stages"]
    # From the repository root, `import operator` must still be the standard library's.
    out = subprocess.run([sys.executable, "-c", "import operator, sys; print(operator.__file__)"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not out.strip().startswith(str(ROOT))


def test_console_script_has_the_contract_commands():
    from adaptinf.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"demo-data", "run-local", "stage", "compare"} <= set(sub.choices)


def test_version_and_strategy_help(capsys):
    import pytest

    from adaptinf import __version__
    from adaptinf.cli import main
    from adaptinf.spec import STRATEGIES
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"adaptinf {__version__}"
    with pytest.raises(SystemExit):
        main(["run-local", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text.replace("- ", "-") for name in STRATEGIES)


def test_ci_runs_the_readme_set_up_commands_in_a_fresh_venv():
    """The README's two commands (its set-up block), each run by .ci/run after it creates a
    virtual environment; before, `make quickstart` was never run by CI."""
    import re
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Set-up: the two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make quickstart", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    venv = ci.index("-m venv")
    for command in commands:
        assert re.search(rf"^{command}\b", ci[venv:], re.M), command
    make = (ROOT / "Makefile").read_text()
    assert "adaptinf demo-data --out $(DEMO) $(DEMO_ARGS)" in make
