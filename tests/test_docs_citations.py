"""The repository documents its own method: no file cites notes that live outside it, and every
`docs/method.md §N` citation names a section that exists.

The method is in docs/method.md, the contracts in docs/contracts.md. `tools/cite_method_doc.py`
rewrites old citations of the out-of-tree notes into citations of those docs; if the first test
fails, run it (and extend its mapping for any citation it reports as unmapped).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHOD = REPO / "docs" / "method.md"
# The two files that must spell the old citations: the rewriting tool and this test.
EXEMPT = {"tools/cite_method_doc.py", "tests/test_docs_citations.py"}
NOTES = re.compile(r"\bPAPER_NOTES\b|\bDESIGN\b")
METHOD_CITATION = re.compile(r"docs/method\.md §(\d+)(?:[–-](\d+))?")
SECTION = re.compile(r"^## (\d+)\. ", re.M)
SKIP_DIRS = {".git", ".venv", ".venv-ci", "venv", "node_modules", "build", "dist", ".cache",
             "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def repo_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files (git), or a filtered walk without git."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
        paths = {p for p in out.decode("utf-8").split("\0") if p}
    except (OSError, subprocess.CalledProcessError):
        paths = set()
        for top, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            paths |= {os.path.relpath(os.path.join(top, f), REPO) for f in files}
    return sorted(p.replace(os.sep, "/") for p in paths if (REPO / p).is_file())


def text_files() -> dict[str, str]:
    out = {}
    for rel in repo_files():
        data = (REPO / rel).read_bytes()
        if b"\0" in data:
            continue
        try:
            out[rel] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def test_no_file_cites_notes_outside_the_repository():
    files = text_files()
    assert EXEMPT <= set(files), "the exempt files moved: update EXEMPT"
    offenders = [f"{rel}:{i}: {line.strip()}"
                 for rel, text in files.items() if rel not in EXEMPT
                 for i, line in enumerate(text.splitlines(), 1) if NOTES.search(line)]
    assert not offenders, ("citations of notes that are not in the repository; run "
                           "`python tools/cite_method_doc.py`:\n" + "\n".join(offenders))


def test_method_doc_sections_are_numbered_in_order():
    numbers = [int(n) for n in SECTION.findall(METHOD.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 16


def test_method_doc_citations_name_existing_sections():
    sections = {int(n) for n in SECTION.findall(METHOD.read_text(encoding="utf-8"))}
    bad = [f"{rel}: {m.group(0)}"
           for rel, text in text_files().items()
           for m in METHOD_CITATION.finditer(text)
           if not {int(n) for n in m.groups() if n} <= sections]
    assert not bad, "citations of sections docs/method.md does not have:\n" + "\n".join(bad)
