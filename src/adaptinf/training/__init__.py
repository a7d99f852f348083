"""Fine-tuning (LoRA or full) with accelerate; `regimes` says how a strategy trains across steps,
`initial` is the run's one full tuning of the base."""
from .loop import TrainConfig, TrainResult, train_model

__all__ = ["TrainConfig", "TrainResult", "train_model"]
