"""An offline character-level tokenizer, so tiny demo models need nothing from a hub.

It is a normal `PreTrainedTokenizerFast` (a `tokenizers` WordLevel model over single
characters) saved beside the model, loaded back with `AutoTokenizer.from_pretrained` exactly
like a real model's tokenizer.
"""
from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, IMAGE, UNK = "<pad>", "<s>", "</s>", "<image>", "<unk>"
SPECIALS = [PAD, BOS, EOS, IMAGE, UNK]
# Printable ASCII plus what the French and German demo answers use.
EXTRA_CHARS = "\n\téèêëàâäçùûüôöîïœÉÀß€°"


def build_char_tokenizer(extra_chars: str = "", extra_specials: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """`extra_specials` (a model family's own image tokens, e.g. Qwen-VL's `<|image_pad|>`) come
    after the characters, so every other id is the same with or without them."""
    chars = sorted(set(string.printable[:95]) | set(EXTRA_CHARS) | set(extra_chars))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for special in extra_specials:
        vocab.setdefault(special, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Every character is its own token; special tokens are matched before this split.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, additional_special_tokens=[IMAGE, *extra_specials])
    fast.padding_side = "right"
    return fast
