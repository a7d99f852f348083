"""Greedy batched generation of the last answer of each record.

Generation stops at the encoder's stop tokens (the chat template's end-of-turn token and the
EOS token(s)); the text returned is what came before the first of them, so a model that goes on
after its answer is not scored on what follows. How each metric compares it to the reference
is in `adaptinf.metrics`.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..data.records import Record
from ..model.encoding import Encoder
from ..model.loading import ModelBundle
from .. import progress as progress_label


def cut_at_stop(ids: list[int], stop_ids: list[int]) -> list[int]:
    """The generated ids before the first stop token."""
    stops = set(stop_ids)
    return next((ids[:i] for i, t in enumerate(ids) if t in stops), ids)


def generate_answers(bundle: ModelBundle, encoder: Encoder, records: list[Record], max_new_tokens: int,
                     batch_size: int = 32, progress: bool = False) -> list[str]:
    model, tok = bundle.model, bundle.tokenizer
    dtype = next(model.parameters()).dtype
    stop_ids = encoder.stop_ids
    model.eval()
    answers: list[str] = []
    for start in tqdm(range(0, len(records), batch_size), desc=progress_label.desc("eval"), unit="batch", disable=not progress):
        chunk = records[start:start + batch_size]
        batch = encoder.collate([encoder.encode(r, include_answer=False) for r in chunk], pad_left=True)
        inputs = {k: v.to(bundle.device) for k, v in batch.items() if k != "labels"}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=stop_ids)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        answers += [t.strip() for t in tok.batch_decode([cut_at_stop(ids, stop_ids) for ids in new],
                                                        skip_special_tokens=True)]
    return answers
