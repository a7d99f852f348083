"""Perplexity: exp of the mean answer-token NLL (the paper's definition; the reference code
averaged per-token exp instead)."""
from .base import Scorer, register


@register
class Perplexity(Scorer):
    name = "perplexity"

    def score(self, with_image, without_image, has_image):
        return with_image.per_sample_mean(with_image.nll).exp()
