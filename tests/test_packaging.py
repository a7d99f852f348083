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
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(cfg["packages"]) == _packages_on_disk()
    assert cfg["package-dir"] == {"adaptinf": "src/adaptinf", "adaptinf.operator": "operator",
                                  "adaptinf.stages": "stages"}


def test_no_top_level_operator_or_stages_import():
    import adaptinf.operator
    import adaptinf.stages
    assert operator.__file__.startswith(sys.base_prefix)  # still the standard library
    assert Path(adaptinf.operator.__file__).parent == ROOT / "operator"
    assert Path(adaptinf.stages.__file__).parent == ROOT / "stages"
    # From the repository root, `import operator` must still be the standard library's.
    out = subprocess.run([sys.executable, "-c", "import operator, sys; print(operator.__file__)"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not out.strip().startswith(str(ROOT))


def test_console_script_has_the_contract_commands():
    from adaptinf.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"demo-data", "run-local", "stage", "compare"} <= set(sub.choices)
