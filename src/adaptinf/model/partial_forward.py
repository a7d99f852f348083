"""A forward that stops after a chosen decoder layer, for passes that read only its output.

Prune's after-training hidden states and the expansion router's prompt states are the
mean-pooled output of the middle decoder layer; the layers above it and the LM head (a large
share of a small model's work over a real vocabulary) do not affect it. A forward hook on that
layer keeps its output and raises, which ends the forward there; transformers' output capture
resets its state in a `finally`, so the model is left as it was.
"""
from __future__ import annotations

import torch

from .loading import decoder_layers


class _StopForward(Exception):
    """Raised by a hook once the wanted layer has run: the rest of the forward is skipped."""


def layer_output(model: torch.nn.Module, layer: int, inputs: dict) -> torch.Tensor:
    """The output of decoder layer `layer` (= `hidden_states[layer + 1]` of a full forward),
    from a forward that stops there: the layers above and the LM head never run. The last
    layer's entry is after the final norm in transformers' outputs, so it takes the full forward."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers) - 1:      # the last layer, or an index from the end
        return model(**inputs, output_hidden_states=True, use_cache=False).hidden_states[layer + 1]
    kept: list[torch.Tensor] = []

    def stop(module, args, output):
        kept.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = layers[layer].register_forward_hook(stop)
    try:
        model(**inputs, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not kept:
        raise RuntimeError(f"decoder layer {layer} did not run in the forward of {type(model).__name__}")
    return kept[0]
