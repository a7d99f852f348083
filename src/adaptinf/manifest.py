"""The names the strategy and scorer registries provide, read from their source without importing it.

A strategy (or scorer) is one module: a class decorated with `@register` whose body sets
`name = "<literal>"`. This module parses those files with `ast` instead of importing them, because
the operator validates specs (`spec.STRATEGIES`, `spec.SCORERS`, the CRD enums) in an image
without torch or faiss. The registries import exactly the modules listed here and check that
what registered is what was read (`check_registered`), so the two cannot drift.

Where strategies live is `STRATEGY_PACKAGES`: a package of strategies defined elsewhere (e.g. the
training regimes) is one more entry there.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

# Packages (below `adaptinf`) whose modules define registered strategies / scorers.
STRATEGY_PACKAGES = ("adaptinf.selection",)
SCORER_PACKAGES = ("adaptinf.scorers",)
_ROOT = Path(__file__).resolve().parent   # the `adaptinf` package folder


class ManifestError(RuntimeError):
    """A registered class whose name cannot be read from its source, or a name given twice."""


def _folder(package: str) -> Path:
    top, _, rest = package.partition(".")
    if top != "adaptinf":
        raise ManifestError(f"{package}: only packages below adaptinf are scanned")
    return _ROOT.joinpath(*rest.split(".")) if rest else _ROOT


def _is_register(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "register") or \
        (isinstance(target, ast.Attribute) and target.attr == "register")


def _class_name(cls: ast.ClassDef, where: str) -> str:
    """The literal `name = "..."` in a registered class's body."""
    for stmt in cls.body:
        targets: list[ast.expr]
        value: ast.expr | None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "name" for t in targets):
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value:
                return value.value
            break
    raise ManifestError(f"{where}:{cls.lineno}: class {cls.name} is @register-ed but sets no literal "
                        f"`name = \"...\"` in its body (the name is read without importing the module)")


def module_names(path: Path) -> list[str]:
    """The names the `@register`-ed classes of one source file declare."""
    text = path.read_text(encoding="utf-8")
    if "register" not in text:   # a helper module: not worth parsing
        return []
    tree = ast.parse(text, filename=str(path))
    return [_class_name(node, str(path)) for node in tree.body
            if isinstance(node, ast.ClassDef) and any(_is_register(d) for d in node.decorator_list)]


def _scan(packages: Iterable[str], what: str) -> dict[str, str]:
    """name → the module that registers it, over every module of `packages`."""
    found: dict[str, str] = {}
    for package in packages:
        for path in sorted(_folder(package).glob("*.py")):
            if path.stem == "__init__":
                continue
            module = f"{package}.{path.stem}"
            for name in module_names(path):
                if name in found:
                    raise ManifestError(f"{what} {name!r} is registered by both {found[name]} and {module}")
                found[name] = module
    return found


@cache
def strategy_modules() -> dict[str, str]:
    """Every built-in strategy name → the module defining it."""
    return _scan(STRATEGY_PACKAGES, "strategy")


@cache
def scorer_modules() -> dict[str, str]:
    """Every built-in scorer name → the module defining it."""
    return _scan(SCORER_PACKAGES, "scorer")


def strategy_names() -> tuple[str, ...]:
    return tuple(sorted(strategy_modules()))


def scorer_names() -> tuple[str, ...]:
    return tuple(sorted(scorer_modules()))


def check_registered(declared: dict[str, str], registered: Iterable[str], what: str) -> None:
    """After importing the declared modules: the registry holds exactly the declared names."""
    registered = set(registered)
    missing, undeclared = sorted(set(declared) - registered), sorted(registered - set(declared))
    if missing or undeclared:
        raise ManifestError(f"the {what} registry and adaptinf.manifest disagree: read but not registered "
                            f"{missing}, registered but not read {undeclared} (register each with a "
                            f"decorated class and a literal name)")
