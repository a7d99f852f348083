"""The fused extraction pass over a list of records.

One forward per batch gives the logits (→ perplexity, EL2N, entropy), the chosen layer's hidden
states (→ mean-pooled features) and, through one batched backward, per-sample LoRA gradients of
the chosen layer(s) (→ random projection → L2 normalisation). Image grounding adds one
image-free forward, without grad, for the samples that have an image. With
`gradient_source="zero-order"` the backward is replaced by seeded forward-only estimates of the
same gradients (`zero_order.py`), projected the same way.

Throughput details (bench/extract.py measures them): records are batched by length (less
padding) and written back in record order; the next batch is collated in a background thread;
raw gradients of several batches are projected together (one pass over the projection matrix
serves up to 256 samples); on a GPU lengths are padded to a multiple of 64 so that few distinct
shapes reach the kernels. Per-sample results do not depend on the batching (tests check it).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import Record
from ..model.answer_logits import answer_logits_kwargs
from ..model.encoding import Encoder, sequence_pad_values
from ..model.loading import ModelBundle, decoder_layers
from ..model.partial_forward import layer_output
from ..scorers import TokenStats, get_scorer, token_stats
from .grads import LoraGradCapture
from .projection import RademacherProjector, l2_normalise
from .upper import UpperStack
from .zero_order import DEFAULT_DIRECTIONS, ZeroOrderGrads, answer_nll
from .. import progress as progress_label

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    layers: list[int]                 # decoder-layer indices whose LoRA gradients are taken
    projection_dim: int = 8192
    batch_size: int = 16
    seed: int = 0
    grads: bool = True
    hidden: bool = True
    scorers: tuple[str, ...] = ("perplexity", "image-grounding", "el2n", "entropy")
    # Sequence lengths are padded up to a multiple of this. None: 64 on a GPU, where every new
    # shape costs kernel selection (cuDNN attention builds a plan per shape, ~0.1-0.3 s), and
    # 1 on CPU, where padding is only wasted work.
    pad_to_multiple: int | None = None
    # "backprop": exact per-sample gradients (one batched backward); "zero-order": forward-only
    # SPSA estimates of the same gradients (features/zero_order.py).
    gradient_source: str = "backprop"
    zo_directions: int = DEFAULT_DIRECTIONS
    zo_epsilon: float | None = None        # None: by dtype (zero_order.EPSILON)


@dataclass
class Features:
    grads: np.ndarray | None = None                 # (n, k) float32, unit rows
    hidden: np.ndarray | None = None                # (n, h) float32
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    grad_dim: int = 0                               # gradient dimension before projection


def _model_inputs(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
    out = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Sum in fp32: a bf16 sum over hundreds of positions loses most of its mantissa.
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1)


def hidden_layer_index(model: torch.nn.Module, cfg: ExtractConfig) -> int:
    """The decoder layer whose mean-pooled output is the hidden feature: the middle chosen layer."""
    return cfg.layers[len(cfg.layers) // 2] if cfg.layers else len(decoder_layers(model)) // 2


def prepare_model(bundle: ModelBundle, cfg: ExtractConfig) -> LoraGradCapture | None:
    """Freeze everything but the chosen layers' LoRA weights; return their gradient capture."""
    for p in bundle.model.parameters():
        p.requires_grad_(False)
    if not cfg.grads:
        return None
    layers = decoder_layers(bundle.model)
    capture = LoraGradCapture([layers[i] for i in cfg.layers])
    for p in capture.parameters():
        p.requires_grad_(True)
    return capture


def extract_features(bundle: ModelBundle, encoder: Encoder, records: list[Record], cfg: ExtractConfig,
                     progress: bool = True) -> Features:
    model, device = bundle.model, bundle.device
    dtype = next(model.parameters()).dtype
    model.eval()  # no dropout: gradients and scores are deterministic per sample
    capture = prepare_model(bundle, cfg)
    zo = _zero_order(bundle, cfg, capture)
    scorers = [get_scorer(s) for s in cfg.scorers]
    need_text_pass = bundle.multimodal and any(s.needs_text_only_pass for s in scorers)
    projector = None
    if capture is not None:
        k = cfg.projection_dim
        if k > capture.dim:
            log.warning("extract.projectionDim %d exceeds the gradient dimension %d: projecting to %d",
                        k, capture.dim, capture.dim)
            k = capture.dim
        projector = RademacherProjector(capture.dim, k, seed=cfg.seed, device=device)
    hidden_layer = hidden_layer_index(model, cfg)

    n = len(records)
    grads = np.zeros((n, projector.out_dim), np.float32) if projector is not None else None
    hiddens: np.ndarray | None = None
    scores = {s.name: np.zeros(n, np.float64) for s in scorers}
    n_batches = -(-n // cfg.batch_size)
    multiple = cfg.pad_to_multiple or (64 if device.type == "cuda" else 1)
    pending = _PendingProjection(projector, grads) if projector is not None else None
    for b in tqdm(_prefetched_batches(encoder, records, cfg.batch_size, need_text_pass, multiple), total=n_batches,
                  desc=progress_label.desc("extract"), unit="batch", disable=not progress):
        labels = b.batch["labels"].to(device)
        inputs = _model_inputs(b.batch, device, dtype)
        stats, layer_hidden = None, None
        keep = answer_logits_kwargs(model, labels)
        with torch.set_grad_enabled(capture is not None and zo is None):
            if zo is not None:
                out, stats, g = _zero_order_batch(model, zo, inputs, labels, keep, cfg)
                pending.add(b.idx, g)
            elif capture is not None:
                with capture:
                    out = model(**inputs, output_hidden_states=cfg.hidden, use_cache=False, **keep)
                    stats = token_stats(out.logits, labels, keep.get("logits_to_keep"))
                    # The per-sample mean answer-token NLL from the same answer-only fp32 logits
                    # the scores use: no fp32 copy of every position's logits.
                    g = capture.per_sample_grads(stats.per_sample_mean(stats.nll).sum())
                pending.add(b.idx, g.detach())
            elif scorers:
                out = model(**inputs, output_hidden_states=cfg.hidden, use_cache=False, **keep)
                stats = token_stats(out.logits, labels, keep.get("logits_to_keep"))
            else:
                # Hidden states only (prune's after-training pass): nothing above that layer is read.
                out = None
                layer_hidden = layer_output(model, hidden_layer, inputs) if cfg.hidden else None
            if cfg.hidden and out is not None:
                layer_hidden = out.hidden_states[hidden_layer + 1]
        if layer_hidden is not None:
            pooled = _mean_pool(layer_hidden.detach(), inputs["attention_mask"]).cpu().numpy()
            if hiddens is None:
                hiddens = np.zeros((n, pooled.shape[1]), np.float32)
            hiddens[b.idx] = pooled
        del out, layer_hidden
        if stats is None or not scorers:
            continue
        text_stats = _text_only_stats(model, b, device, dtype) if need_text_pass else None
        stats = _detach(stats)
        for s in scorers:
            scores[s.name][b.idx] = s.score(stats, text_stats, b.has_image).cpu().numpy()
    if pending is not None:
        pending.flush()
    return Features(grads=grads, hidden=hiddens, scores=scores, grad_dim=capture.dim if capture is not None else 0)


def _zero_order(bundle: ModelBundle, cfg: ExtractConfig,
                capture: LoraGradCapture | None) -> tuple[ZeroOrderGrads, UpperStack] | None:
    """The SPSA estimator over the capture's parameters (now frozen: no backward is needed)."""
    if capture is None or cfg.gradient_source == "backprop":
        return None
    if cfg.gradient_source != "zero-order":
        raise ValueError(f"unknown gradient source {cfg.gradient_source!r}: backprop or zero-order")
    params = capture.parameters()
    for p in params:
        p.requires_grad_(False)
    upper = UpperStack(bundle.model, min(cfg.layers))
    if not upper.supported:
        log.warning("zero-order: cannot re-run the decoder from layer %d of %s; every perturbed forward "
                    "runs the whole model", min(cfg.layers), type(bundle.model).__name__)
    return ZeroOrderGrads(params, cfg.zo_directions, cfg.seed, cfg.zo_epsilon), upper


def _zero_order_batch(model: torch.nn.Module, zo: tuple[ZeroOrderGrads, UpperStack], inputs: dict,
                      labels: torch.Tensor, keep: dict[str, torch.Tensor], cfg: ExtractConfig):
    """The ordinary forward (scores, hidden states) plus 2K perturbed ones → raw estimates."""
    estimator, upper = zo
    positions = keep.get("logits_to_keep")
    if upper.supported:
        with upper:
            out = model(**inputs, output_hidden_states=cfg.hidden, use_cache=False, **keep)
        coeffs = estimator.coefficients(lambda: answer_nll(upper.logits(positions), labels, positions))
    else:
        out = model(**inputs, output_hidden_states=cfg.hidden, use_cache=False, **keep)
        coeffs = estimator.coefficients(
            lambda: answer_nll(model(**inputs, use_cache=False, **keep).logits, labels, positions))
    return out, token_stats(out.logits, labels, positions), estimator.estimate(coeffs)


class _PendingProjection:
    """Raw per-sample gradients waiting to be projected, several batches at once.

    x @ P reads all of P (gradient dim × projection dim) whatever the number of rows: with one
    small batch it is a skinny, memory-bound product. Up to `max_rows` rows or `max_bytes` of
    raw gradients are gathered first (measured on 2 CPU cores: 2.8 ms/sample at 16 rows,
    1.2 ms at 256), then projected, normalised and written to their rows of `out`.
    """

    def __init__(self, projector: RademacherProjector, out: np.ndarray, max_rows: int = 256,
                 max_bytes: int = 256 << 20):
        self.projector, self.out = projector, out
        self.max_rows = max(1, min(max_rows, max_bytes // (4 * projector.in_dim)))
        self.rows: list[torch.Tensor] = []
        self.idx: list[int] = []

    def add(self, idx: list[int], g: torch.Tensor) -> None:
        self.rows.append(g)
        self.idx += idx
        if len(self.idx) >= self.max_rows:
            self.flush()

    def flush(self) -> None:
        if self.idx:
            self.out[self.idx] = l2_normalise(self.projector(torch.cat(self.rows))).cpu().numpy()
            self.rows, self.idx = [], []


@dataclass
class _Batch:
    idx: list[int]                                   # positions in `records`
    batch: dict[str, torch.Tensor]                   # collated model inputs with labels
    has_image: torch.Tensor                          # (b,) bool
    text_batch: dict[str, torch.Tensor] | None       # the image-bearing samples without their image


def _pad_to_multiple(batch: dict[str, torch.Tensor], multiple: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the sequence dimension to a multiple (masked, unlabelled positions)."""
    width = batch["input_ids"].shape[1]
    extra = -width % multiple
    if extra == 0:
        return batch
    out = dict(batch)
    for key, value in sequence_pad_values(pad_id).items():
        if key in batch:  # mm_token_type_ids only for the families that use it
            out[key] = torch.nn.functional.pad(batch[key], (0, extra), value=value)
    return out


def _prefetched_batches(encoder: Encoder, records: list[Record], batch_size: int,
                        text_pass: bool, multiple: int = 1) -> Iterator[_Batch]:
    """Batches of similar length (padding is wasted work), collated one batch ahead in a
    thread: image decoding and preprocessing (and reads from S3) overlap the model's work."""
    encoded = [encoder.encode(r) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(encoded[i].input_ids))
    pad_id = encoder.tok.pad_token_id

    def prepare(start: int) -> _Batch:
        idx = order[start:start + batch_size]
        has_image = torch.tensor([records[i].image is not None for i in idx], dtype=torch.bool)
        text_batch = None
        if text_pass and has_image.any():
            text_batch = _pad_to_multiple(encoder.collate([encoder.encode(records[idx[j]], with_image=False)
                                                           for j in has_image.nonzero().flatten().tolist()]),
                                          multiple, pad_id)
        batch = _pad_to_multiple(encoder.collate([encoded[i] for i in idx]), multiple, pad_id)
        return _Batch(idx, batch, has_image, text_batch)

    starts = range(0, len(records), batch_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-collate") as pool:
        pending = pool.submit(prepare, starts[0]) if starts else None
        for k in range(len(starts)):
            current = pending.result()
            pending = pool.submit(prepare, starts[k + 1]) if k + 1 < len(starts) else None
            yield current


def _text_only_stats(model: torch.nn.Module, b: _Batch, device: torch.device, dtype: torch.dtype) -> TokenStats | None:
    """Answer-token statistics without the image (for image grounding), from a forward of the
    image-bearing samples only: a text-only sample's input has nothing to remove."""
    if b.text_batch is None:
        return None
    labels = b.text_batch["labels"].to(device)
    keep = answer_logits_kwargs(model, labels)
    with torch.no_grad():
        out = model(**_model_inputs(b.text_batch, device, dtype), use_cache=False, **keep)
    stats = token_stats(out.logits, labels, keep.get("logits_to_keep"))
    # Back to positions in the batch; text-only samples have no tokens here (scorers give 1).
    with_image = b.has_image.nonzero().flatten().to(stats.sample.device)
    return replace(stats, sample=with_image[stats.sample], batch_size=len(b.idx))


def _per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean answer-token cross-entropy of each sample (the loss the paper differentiates)."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels,
                                            ignore_index=-100, reduction="none")
    mask = (shift_labels != -100).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1)


def _detach(stats):
    for name in ("nll", "el2n", "entropy"):
        setattr(stats, name, getattr(stats, name).detach())
    return stats
