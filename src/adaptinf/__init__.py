"""Adapt-∞: lifelong instruction tuning by dynamic data selection."""
from pathlib import Path as _Path

__version__ = "0.1.0"


def _add_source_checkout_folders() -> None:
    """In a source checkout, let `adaptinf.operator` / `adaptinf.stages` reach the top-level folders.

    Those folders have no `__init__.py` on purpose: a regular package named `operator` at the
    repository root would shadow the standard library's whenever Python runs from there. As
    namespace folders they are found as sub-packages of `adaptinf` only through its `__path__`;
    setuptools' editable finder cannot resolve a namespace sub-package of a regular package, so
    the checkout root is added here. An installed wheel already holds them inside `adaptinf/`.
    """
    root = _Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "operator" / "main.py").is_file():
        __path__.append(str(root))  # noqa: F821 - the package's own search path


_add_source_checkout_folders()
