"""The one layer of yapo that touches a model's internals.

Everything that reads or edits a decoder block's output, or needs to know how a
model's forward is called, lives here, so that steering, training, scoring, activation
patching, feature inspection and SAE activation extraction all handle an architecture's
quirks the same way:

* :mod:`~yapo.intervene.outputs` — a block's output split into hidden states and the
  rest, and rebuilt;
* :mod:`~yapo.intervene.devices` — the input device, ``logits_to_keep`` support, the
  cache argument's name;
* :mod:`~yapo.intervene.positions` — prompt versus generated positions of a steering hook;
* :mod:`~yapo.intervene.hooks` — every forward hook: add a delta, replace a state,
  record states, run up to a layer and stop;
* :mod:`~yapo.intervene.split` — the model cut after block ``L`` (lower half once,
  upper half per step).
"""

from yapo.intervene.devices import cache_argument, input_device, supports_logits_to_keep
from yapo.intervene.hooks import DeltaFn, add_to_layer, record_states, replace_state, run_to_layer
from yapo.intervene.outputs import Rest, rebuild_output, split_output
from yapo.intervene.positions import POSITIONS, Positions, PositionTracker
from yapo.intervene.split import LayerSplit

__all__ = [
    "POSITIONS",
    "DeltaFn",
    "LayerSplit",
    "PositionTracker",
    "Positions",
    "Rest",
    "add_to_layer",
    "cache_argument",
    "input_device",
    "rebuild_output",
    "record_states",
    "replace_state",
    "run_to_layer",
    "split_output",
    "supports_logits_to_keep",
]
