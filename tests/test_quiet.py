"""Library warnings stay out of what compare's worker processes print (a spawned worker does
not inherit the parent's warning filters: transformers' FutureWarnings once interleaved with
compare's log)."""
from __future__ import annotations

import subprocess
import sys

PROBE = """
import os, warnings
from adaptinf.runner.compare import _worker_init
_worker_init(os.getppid())
with warnings.catch_warnings(record=True) as seen:
    warnings.warn_explicit("`is_gradient_checkpointing` is deprecated", FutureWarning, "modeling_utils.py", 1,
                           module="transformers.modeling_utils")
    warnings.warn_explicit("our own", UserWarning, "x.py", 1, module="adaptinf.x")
print([str(w.message) for w in seen])
"""


def test_compare_workers_filter_library_future_warnings():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['our own']"
