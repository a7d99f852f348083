#!/usr/bin/env python3
"""Rewrite citations of the out-of-tree notes into citations of the repository's own docs.

Source files and docs used to cite two documents that were never part of the repository: the
method notes (`PAPER_NOTES §N`) and the design notes (`DESIGN §N`). Their content now lives in
`docs/method.md` (the method as implemented) and the other docs; this script rewrites every such
citation in place according to the mapping below.

    python tools/cite_method_doc.py            # rewrite, print every changed line
    python tools/cite_method_doc.py --check    # print what would change, write nothing
    python tools/cite_method_doc.py --root DIR # another checkout

Files: every text file git knows in the checkout (tracked, or untracked and not ignored); without
git, a walk of the tree that skips virtual environments, caches and build outputs. This file and
`tests/test_docs_citations.py` hold the patterns themselves and are never rewritten.

Order of the rules: first the literal phrases (where the citation needs its sentence reworded),
then `<notes> §<id>` citations by id, with per-file overrides where one id meant different
things in different files. Idempotent: no replacement contains a pattern, so a second run changes
nothing.

Exit codes: 0 when no citation of the notes is left (after rewriting, or already); 1 when some
citation is not in the mapping (each is printed as path:line) or, with --check, when a rewrite
is still pending.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

METHOD = "docs/method.md"

# (path, old, new): literal rewrites of whole phrases, applied first (only in that file).
PHRASES: list[tuple[str, str, str]] = [
    # The design notes' "about a second" was not reproduced: bench/README.md §2 measured 6.6 s
    # for this sweep on one thread.
    ("src/adaptinf/clustering.py",
     "takes about a second on CPU, DESIGN §4)",
     "takes about 7 s on one CPU thread, bench/README.md §2)"),
    ("src/adaptinf/features/reference.py",
     "where the original was wrong (PAPER_NOTES):",
     f"where the original was wrong ({METHOD} §15):"),
    ("bench/step.py",
     "(PAPER_NOTES, Table 6)",
     f"(paper Table 6, {METHOD} §14)"),
    ("tests/chart/test_images.py",
     "(DESIGN: the operator image has no torch)",
     "(docs/install.md §2: the operator image has no torch)"),
    ("bench/README.md",
     "DESIGN.md's \"1.3 s vs 18.6 s\" was not reproduced",
     "An earlier estimate of \"1.3 s vs 18.6 s\" (thread count not recorded) was not reproduced"),
    ("docs/contracts.md",
     "(DESIGN §2 format)",
     f"(format: {METHOD} §12)"),
]

# `PAPER_NOTES §<id>` → replacement, by id (a single section or a range).
PAPER_NOTES: dict[str, str] = {
    "1": f"{METHOD} §3–4",       # sample vectors: gradients (§3) and hidden states (§4)
    "2": f"{METHOD} §6",         # pseudo-task clustering, k by the WSS elbow
    "3": f"{METHOD} §5",         # scores
    "4": f"{METHOD} §8–9",       # entropy rule and CCS inside a cluster
    "5": f"{METHOD} §7",         # budget over clusters
    "6": f"{METHOD} §10",        # Lite: permanent pruning
    "7": f"{METHOD} §11",        # metrics
    "8": f"{METHOD} §14",        # the paper's reported figures
    "2–6": f"{METHOD} §6–10",
    "4–5": f"{METHOD} §7–9",
}

# `DESIGN §<id>` → replacement, by id.
DESIGN: dict[str, str] = {
    "2": f"{METHOD} §12",        # the summary.json format (skill labels: see OVERRIDES)
    "4": "bench/README.md §2",   # k-means timings
    "5": "see docs/operator.md",  # the Kubernetes API emulator used by the tests
}

# (path, notes, id) → replacement where an id means something else in that file.
OVERRIDES: dict[tuple[str, str, str], str] = {
    ("src/adaptinf/selection/coincide.py", "PAPER_NOTES", "1"): f"{METHOD} §4",
    ("src/adaptinf/selection/semdedup.py", "PAPER_NOTES", "1"): f"{METHOD} §4",
    ("src/adaptinf/runner/skill_report.py", "DESIGN", "2"): f"{METHOD} §2",
    ("src/adaptinf/analysis.py", "DESIGN", "2"): f"{METHOD} §2",
    ("src/adaptinf/selection/primitives.py", "PAPER_NOTES", "4"): f"{METHOD} §8",
}

TABLES = {"PAPER_NOTES": PAPER_NOTES, "DESIGN": DESIGN}
CITATION = re.compile(r"\b(PAPER_NOTES|DESIGN) §(\d+(?:[–-]\d+)?)")
# Anything that still names the notes after the rewrite is an unmapped citation.
LEFTOVER = re.compile(r"\bPAPER_NOTES\b|\bDESIGN\b")
EXEMPT = {"tools/cite_method_doc.py", "tests/test_docs_citations.py"}
SKIP_DIRS = {".git", ".venv", ".venv-ci", "venv", "node_modules", "build", "dist", ".cache",
             "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def repo_files(root: Path) -> list[str]:
    """Relative paths of the checkout's files: git's view, or a filtered walk without git."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
        paths = sorted({p for p in out.decode("utf-8").split("\0") if p})
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for top, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            paths += [os.path.relpath(os.path.join(top, f), root) for f in files]
        paths.sort()
    return [p.replace(os.sep, "/") for p in paths if (root / p).is_file()]


def read_text(path: Path) -> str | None:
    """The file as UTF-8 text, or None for binary or undecodable files."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def rewrite(rel: str, text: str) -> str:
    """`text` with every mapped citation replaced (unmapped ones are left for `leftovers`)."""
    for path, old, new in PHRASES:
        if path == rel:
            text = text.replace(old, new)

    def by_id(m: re.Match) -> str:
        notes, ident = m.group(1), m.group(2).replace("-", "–")
        new = OVERRIDES.get((rel, notes, ident), TABLES[notes].get(ident))
        return new if new is not None else m.group(0)

    return CITATION.sub(by_id, text)


def leftovers(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line that still names the notes."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if LEFTOVER.search(line)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout to rewrite (default: this script's repository)")
    parser.add_argument("--check", action="store_true", help="print what would change; write nothing")
    args = parser.parse_args(argv)
    root = args.root.resolve()

    changed_files = changed_lines = 0
    unmapped: list[str] = []
    for rel in repo_files(root):
        if rel in EXEMPT:
            continue
        text = read_text(root / rel)
        if text is None or not LEFTOVER.search(text):
            continue
        new = rewrite(rel, text)
        if new != text:
            old_lines, new_lines = text.splitlines(), new.splitlines()
            assert len(old_lines) == len(new_lines), "replacements never add or remove lines"
            for i, (a, b) in enumerate(zip(old_lines, new_lines), 1):
                if a != b:
                    changed_lines += 1
                    print(f"{rel}:{i}:\n  - {a.strip()}\n  + {b.strip()}")
            changed_files += 1
            if not args.check:
                # Bytes, not text mode: keep the file's own line endings.
                (root / rel).write_bytes(new.encode("utf-8"))
        unmapped += [f"{rel}:{i}: {line}" for i, line in leftovers(new)]

    verb = "would rewrite" if args.check else "rewrote"
    print(f"{verb} {changed_lines} line(s) in {changed_files} file(s)")
    if unmapped:
        print(f"{len(unmapped)} citation(s) not in the mapping (add them to {Path(__file__).name}):",
              file=sys.stderr)
        for u in unmapped:
            print(f"  {u}", file=sys.stderr)
        return 1
    return 1 if args.check and changed_lines else 0


if __name__ == "__main__":
    sys.exit(main())
