"""Entropy: mean predictive entropy over answer tokens."""
from .base import Scorer, register


@register
class Entropy(Scorer):
    name = "entropy"

    def score(self, with_image, without_image, has_image):
        return with_image.per_sample_mean(with_image.entropy)
