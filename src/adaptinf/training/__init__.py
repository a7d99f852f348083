"""Fine-tuning (LoRA or full) with accelerate."""
from .loop import TrainConfig, TrainResult, train_model

__all__ = ["TrainConfig", "TrainResult", "train_model"]
