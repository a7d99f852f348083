"""Experiment tracking (MLflow)."""
from .mlflow_tracker import Tracker, tracking_uri

__all__ = ["Tracker", "tracking_uri"]
