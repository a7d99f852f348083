"""The local backend: run a LifelongRun over its datasets without a cluster."""
from .local import run_local
from .resources import collect

__all__ = ["collect", "run_local"]
