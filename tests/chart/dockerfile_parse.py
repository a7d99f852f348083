"""A small Dockerfile and .dockerignore reader for the image tests (no Docker needed).

Enough of the Dockerfile grammar for our own files: comments, line continuations, parser
directives, the JSON (exec) and shell forms, stages (`FROM … AS name`) and `--flag=value`
options of COPY/ADD. `.dockerignore` matching follows Docker's rules: patterns are matched
against the path and each of its parents, `**` spans folders, the last matching pattern wins and
`!` re-includes.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str           # upper case: FROM, COPY, USER, …
    value: str             # the rest of the logical line
    line: int

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """COPY --from=x --chown=1:1 a b c  →  ({'from': 'x', 'chown': '1:1'}, ['a', 'b', 'c'])."""
        words = self.exec_form() or shlex.split(self.value)
        flags: dict[str, str] = {}
        while words and words[0].startswith("--"):
            k, _, v = words.pop(0)[2:].partition("=")
            flags[k] = v
        return flags, words

    def exec_form(self) -> list[str] | None:
        """The JSON-array form (`["a", "b"]`), or None for the shell form."""
        text = self.value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                return None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                return parsed
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def last(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]           # ARGs before the first FROM, with defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), text)


def parse(path: Path) -> Dockerfile:
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append((start, buf + line))
        buf = ""
    if buf:
        logical.append((start, buf))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, text in logical:
        keyword, _, value = text.strip().partition(" ")
        ins = Instruction(keyword.upper(), value.strip(), n)
        if ins.keyword == "FROM":
            words = ins.value.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if ins.keyword == "ARG":
                k, _, v = ins.value.partition("=")
                args[k.strip()] = v.strip().strip('"')
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(path=path, args=args, stages=stages)


# --- .dockerignore ------------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + r"\Z")


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """[(negated, regex)] in file order."""
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:].strip() if neg else line
        pat = pat.strip("/")
        pat = re.sub(r"/+", "/", pat)
        if pat.startswith("./"):
            pat = pat[2:]
        rules.append((neg, _pattern_regex(pat)))
    return rules


def is_excluded(rules: list[tuple[bool, re.Pattern[str]]], relpath: str) -> bool:
    """Whether Docker leaves `relpath` (relative to the context root) out of the build context."""
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, rx in rules:
        if any(rx.match(c) for c in candidates):
            excluded = not neg
    return excluded
