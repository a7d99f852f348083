"""A step's adapter as an MLflow pyfunc model: base + LoRA adapter, answering text prompts.

MLflow's transformers flavour logs a PEFT model either by a hub reference (it asks the hub for
the base's latest commit: a network call, and the wrong base for a tuned one in the store) or by
a local base path (a temporary folder inside a stage pod). Neither names the base a user can
reach later, so the model here carries only the adapter, whose `adapter_config.json` names the
base by its id/URI and revision (`adaptinf.model.checkpoints.record_base`), and loads both with adaptinf's
own loader (a hub id, a local folder or an `s3://` base alike).

No `from __future__ import annotations`: MLflow reads `predict`'s type hints as the signature.
"""
import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc

ADAPTER_ARTIFACT = "adapter"


class AdapterModel(mlflow.pyfunc.PythonModel):
    """`predict(["a prompt", ...])` → the model's answers (greedy, through its chat template)."""

    def load_context(self, context: Any) -> None:
        from ..model.encoding import Encoder
        from ..model.loading import attach_adapter, load_base
        from ..spec import LoraSpec
        adapter = Path(context.artifacts[ADAPTER_ARTIFACT])
        config = json.loads((adapter / "adapter_config.json").read_text())
        settings = context.model_config or {}
        bundle = load_base(config["base_model_name_or_path"], settings.get("dtype", "auto"),
                           revision=config.get("revision"))
        self.bundle = attach_adapter(bundle, LoraSpec(), adapter, trainable=False)
        self.encoder = Encoder(self.bundle, int(settings.get("max_length", 512)))
        self.max_new_tokens = int(settings.get("max_new_tokens", 32))

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from ..data.records import Record
        from ..evaluation.generate import generate_answers
        records = [Record(id=str(i), conversations=(("human", prompt), ("gpt", "")))
                   for i, prompt in enumerate(model_input)]
        max_new = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        return generate_answers(self.bundle, self.encoder, records, max_new)
