"""The modes of the files adaptinf writes: what the user's umask allows, not owner-only.

`tempfile.mkstemp`/`mkdtemp` (the atomic writes' temporaries) and safetensors create files
0600, which hides a model folder or a local store from the other users and pods that read it.
"""
from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which races with other threads.
UMASK = _umask()
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


def share_folder(folder: str | Path) -> None:
    """Give a folder written through temporaries (and everything in it) the usual modes."""
    folder = Path(folder)
    folder.chmod(DIR_MODE)
    for path in folder.rglob("*"):
        path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)
