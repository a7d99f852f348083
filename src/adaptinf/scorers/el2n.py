"""EL2N (Paul et al., 2021): mean over answer tokens of ‖softmax(logits) − onehot(y)‖₂."""
from .base import Scorer, register


@register
class EL2N(Scorer):
    name = "el2n"

    def score(self, with_image, without_image, has_image):
        return with_image.per_sample_mean(with_image.el2n)
