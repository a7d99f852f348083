"""Experiment tracking (MLflow)."""
from .mlflow_tracker import Tracker, redact_uri, tracking_uri

__all__ = ["Tracker", "redact_uri", "tracking_uri"]
