"""Image grounding: PPL(text without image) / PPL(text with image); higher = the image matters.

"Without image" drops the image placeholder and pixels from the input entirely (see
model/encoding.py). Text-only samples get 1.0: the image neither helps nor hurts them."""
import torch

from .base import Scorer, register


@register
class ImageGrounding(Scorer):
    name = "image-grounding"
    needs_text_only_pass = True

    def score(self, with_image, without_image, has_image):
        ppl_img = with_image.per_sample_mean(with_image.nll).exp()
        if without_image is None:
            return torch.ones_like(ppl_img)
        ppl_txt = without_image.per_sample_mean(without_image.nll).exp()
        return torch.where(has_image.to(ppl_img.device), ppl_txt / ppl_img, torch.ones_like(ppl_img))
