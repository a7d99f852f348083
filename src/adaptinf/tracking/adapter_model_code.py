"""The model file MLflow stores with each adapter model ("models from code": the model is this
file and the adaptinf it imports, not a pickle)."""
import mlflow.models

from adaptinf.tracking.adapter_model import AdapterModel

mlflow.models.set_model(AdapterModel())
