"""Third-party logging, warnings and bars kept out of what adaptinf prints (the CLI and every
compare worker process, which does not inherit the parent's warning filters)."""
from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Library chatter off: it would interleave with the step table and the bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its own level on import
    # "View run … at <tracking URI>" lines interleave with the step table (and would print any
    # credentials in the URI); the command prints where MLflow is once, redacted.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    warnings.filterwarnings("ignore", module="mlflow")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    for name in ("transformers", "peft", "accelerate", "mlflow", "alembic", "urllib3", "botocore", "faiss",
                 "matplotlib", "PIL"):  # matplotlib.font_manager logs INFO lines on its first use
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Loading weights" bars on every model load drown the step table (read when transformers is
    # imported, which happens later); our own loops keep their bars.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
