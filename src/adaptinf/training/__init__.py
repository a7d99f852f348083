"""Fine-tuning (LoRA or full) with accelerate; `regimes` says how a strategy trains across steps,
`initial` is the run's one full tuning of the base."""
from .loop import LaterRows, TrainConfig, TrainResult, train_model

__all__ = ["LaterRows", "TrainConfig", "TrainResult", "train_model"]
