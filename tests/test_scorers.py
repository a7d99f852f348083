"""Known-answer tests of the four scorers on hand-made logits (docs/method.md §5).

Conventions under test: logits at position t predict the label at t + 1 (causal LM shift);
label -100 marks prompt, image and padding positions, which never count; every score is a
mean over a sample's answer tokens.
"""
from __future__ import annotations

import math

import pytest
import torch

from adaptinf.scorers import available, get_scorer, token_stats

V = 10          # vocabulary size of the hand-made logits
IGNORE = -100
BIG = 60.0      # a logit margin that makes softmax one-hot to float32 precision


def _score(name: str, logits: torch.Tensor, labels: torch.Tensor, text_logits: torch.Tensor | None = None,
           text_labels: torch.Tensor | None = None, has_image: list[bool] | None = None) -> torch.Tensor:
    stats = token_stats(logits, labels)
    text = token_stats(text_logits, text_labels) if text_logits is not None else None
    flags = torch.tensor(has_image if has_image is not None else [True] * logits.shape[0])
    return get_scorer(name).score(stats, text, flags)


def _logits_for(probs_of_label: list[float], label: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample whose answer tokens (positions 1..n) get exactly the given probabilities of
    `label`, the rest spread evenly. Position 0 is a masked prompt token."""
    n = len(probs_of_label)
    logits = torch.zeros(1, n + 1, V)
    labels = torch.full((1, n + 1), IGNORE)
    for t, p in enumerate(probs_of_label):
        row = torch.full((V,), (1 - p) / (V - 1))
        row[label] = p
        logits[0, t] = row.log()          # predicts the label at t + 1
        labels[0, t + 1] = label
    return logits, labels


def test_registry_has_the_four_paper_scorers() -> None:
    assert {"perplexity", "image-grounding", "el2n", "entropy"} <= set(available())
    assert [s for s in available() if get_scorer(s).needs_text_only_pass] == ["image-grounding"]
    with pytest.raises(KeyError, match="unknown scorer"):
        get_scorer("no-such-scorer")


def test_uniform_logits() -> None:
    # Uniform prediction: PPL = V, entropy = log V, ‖p − e_y‖² = V·(1/V)² − 2/V + 1 = 1 − 1/V.
    logits = torch.zeros(2, 6, V)
    labels = torch.tensor([[IGNORE, IGNORE, 1, 2, 3, IGNORE], [IGNORE, 4, 4, 4, 4, 4]])
    assert _score("perplexity", logits, labels).tolist() == pytest.approx([V, V], rel=1e-6)
    assert _score("entropy", logits, labels).tolist() == pytest.approx([math.log(V)] * 2, rel=1e-6)
    assert _score("el2n", logits, labels).tolist() == pytest.approx([math.sqrt(1 - 1 / V)] * 2, rel=1e-6)


def test_confident_correct_and_confident_wrong() -> None:
    labels = torch.tensor([[IGNORE, 2, 5, 7]])
    right = torch.zeros(1, 4, V)
    wrong = torch.zeros(1, 4, V)
    for t, y in enumerate([2, 5, 7]):
        right[0, t, y] = BIG               # position t predicts the label at t + 1
        wrong[0, t, (y + 1) % V] = BIG
    assert _score("el2n", right, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert _score("perplexity", right, labels).item() == pytest.approx(1.0, abs=1e-6)
    assert _score("entropy", right, labels).item() == pytest.approx(0.0, abs=1e-6)
    # All mass on a wrong token: ‖e_j − e_y‖ = √2, and a huge perplexity.
    assert _score("el2n", wrong, labels).item() == pytest.approx(math.sqrt(2), rel=1e-6)
    assert _score("perplexity", wrong, labels).item() > 1e20
    assert _score("entropy", wrong, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_next_token_alignment_and_masking() -> None:
    # Correct predictions sit one position before their labels; the positions predicting masked
    # labels (and the last position, which predicts nothing) carry confident garbage.
    labels = torch.tensor([[IGNORE, IGNORE, 4, 6, IGNORE]])
    logits = torch.zeros(1, 5, V)
    logits[0, 0, 9] = logits[0, 3, 9] = logits[0, 4, 9] = BIG   # would be wrong if counted
    logits[0, 1, 4] = logits[0, 2, 6] = BIG
    assert _score("perplexity", logits, labels).item() == pytest.approx(1.0, abs=1e-6)
    assert _score("el2n", logits, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_perplexity_is_exp_of_mean_nll_not_mean_of_exp() -> None:
    # p(y) = 1/2 and 1/8: NLLs ln 2 and ln 8, exp(mean) = 4. The reference code's mean of
    # per-token exp would give (2 + 8) / 2 = 5 (docs/method.md §5).
    logits, labels = _logits_for([0.5, 0.125])
    assert _score("perplexity", logits, labels).item() == pytest.approx(4.0, rel=1e-6)


def test_per_sample_means_over_answer_tokens_with_padding() -> None:
    # Sample 0: one answer token at p = 1/2 → PPL 2. Sample 1: two answer tokens at 1/4, 1/4 →
    # PPL 4, followed by padding (label -100) whose logits must not matter.
    a_logits, a_labels = _logits_for([0.5])
    b_logits, b_labels = _logits_for([0.25, 0.25])
    logits = torch.full((2, 5, V), 0.0)
    labels = torch.full((2, 5), IGNORE)
    logits[0, :2], labels[0, :2] = a_logits[0], a_labels[0]
    logits[1, :3], labels[1, :3] = b_logits[0], b_labels[0]
    logits[:, 3:, 0] = BIG
    assert _score("perplexity", logits, labels).tolist() == pytest.approx([2.0, 4.0], rel=1e-6)


def test_el2n_and_entropy_match_their_definitions_on_random_logits() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 7, V, generator=g)
    labels = torch.randint(0, V, (3, 7), generator=g)
    labels[:, :2] = IGNORE
    labels[2, 5:] = IGNORE
    p = logits[:, :-1].softmax(-1).double()
    y = labels[:, 1:]
    mask = y != IGNORE
    onehot = torch.nn.functional.one_hot(y.clamp_min(0), V).double()
    el2n_tok = (p - onehot).norm(dim=-1)                        # ‖softmax − onehot(y)‖₂
    ent_tok = -(p * p.log()).sum(-1)
    nll_tok = -p.log().gather(-1, y.clamp_min(0)[..., None]).squeeze(-1)

    def mean(v: torch.Tensor) -> list[float]:
        return ((v * mask).sum(1) / mask.sum(1)).tolist()

    assert _score("el2n", logits, labels).tolist() == pytest.approx(mean(el2n_tok), rel=1e-5)
    assert _score("entropy", logits, labels).tolist() == pytest.approx(mean(ent_tok), rel=1e-5)
    assert _score("perplexity", logits, labels).tolist() == pytest.approx(
        [math.exp(v) for v in mean(nll_tok)], rel=1e-5)


def test_image_grounding_is_ppl_without_image_over_ppl_with_image() -> None:
    # With the image p(y) = 1/2 (PPL 2); without it 1/8 (PPL 8): IG = 8 / 2 = 4 > 1, the image
    # helps. The image-free sequence is shorter (no image tokens), so it has its own logits.
    with_logits, with_labels = _logits_for([0.5, 0.5])
    pad = torch.zeros(1, 3, V)
    with_logits = torch.cat([pad, with_logits], dim=1)          # three leading image positions
    with_labels = torch.cat([torch.full((1, 3), IGNORE), with_labels], dim=1)
    text_logits, text_labels = _logits_for([0.125, 0.125])
    ig = _score("image-grounding", with_logits, with_labels, text_logits, text_labels)
    assert ig.item() == pytest.approx(4.0, rel=1e-6)
    # The other way round (the image misleads): IG < 1.
    ig_rev = _score("image-grounding", text_logits, text_labels, with_logits, with_labels)
    assert ig_rev.item() == pytest.approx(0.25, rel=1e-6)


def test_image_grounding_is_one_for_text_only_samples() -> None:
    img_logits, labels = _logits_for([0.5])
    txt_logits, _ = _logits_for([0.125])
    logits = torch.cat([img_logits, img_logits])
    text = torch.cat([txt_logits, txt_logits])
    both = torch.cat([labels, labels])
    ig = _score("image-grounding", logits, both, text, both, has_image=[True, False])
    assert ig.tolist() == pytest.approx([4.0, 1.0], rel=1e-6)
    # No image-free pass at all (a batch without images): every sample gets 1.
    assert _score("image-grounding", logits, both, has_image=[False, False]).tolist() == [1.0, 1.0]


def test_scores_are_float64_and_gradient_free_inputs_accepted() -> None:
    logits = torch.zeros(2, 4, V, requires_grad=True)
    labels = torch.tensor([[IGNORE, 1, 2, 3], [IGNORE, IGNORE, 1, 2]])
    for name in ("perplexity", "el2n", "entropy"):
        out = _score(name, logits, labels)
        assert out.dtype == torch.float64 and out.shape == (2,)
    # bf16 logits (the GPU path) are scored in fp32: uniform stays exactly V.
    bf = _score("perplexity", logits.detach().bfloat16(), labels)
    assert bf.tolist() == pytest.approx([V, V], rel=1e-6)
