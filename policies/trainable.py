"""Which parameters train: everything, the top layers only, or LoRA adapters.

``Trainable`` is an NNX filter (a callable on ``(path, variable)``) handed to
``nnx.Optimizer(..., wrt=...)``; the training steps differentiate with respect
to the optimizer's filter, so frozen parameters get no gradient, no optimizer
state, and no backward pass below the lowest trainable layer.

The reward head (``head_w``/``head_b``) always trains: a pretrained backbone
brings no head, and a frozen random head would make the whole run meaningless.
Checkpoints always hold every parameter, frozen or not.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from policies.transformer import LoRAParam

ALWAYS_TRAINED = ("head_w", "head_b")


@dataclasses.dataclass(frozen=True)
class Trainable:
  # Blocks below this index (and the token embedding, when > 0) stay frozen.
  frozen_layers: int = 0
  # Only LoRA adapters (and the reward head) train; needs TransformerConfig.lora_rank > 0.
  lora_only: bool = False

  def __call__(self, path, variable) -> bool:
    if not isinstance(variable, nnx.Param):
      return False
    names = [str(getattr(p, "key", p)) for p in path]
    if any(n in ALWAYS_TRAINED for n in names):
      return True
    if isinstance(variable, LoRAParam):
      return True
    if self.lora_only:
      return False
    if self.frozen_layers <= 0:
      return True
    if "embedding" in names:
      return False
    if "blocks" in names:
      return int(names[names.index("blocks") + 1]) >= self.frozen_layers
    return True

  def prepare(self, model: nnx.Module) -> None:
    """Raises if this filter cannot apply to ``model``; cuts the decoder's layer scan at the
    lowest trained block (``Decoder.cut_scan_at``)."""
    if self.lora_only and not jax.tree.leaves(nnx.state(model, LoRAParam)):
      raise ValueError("Trainable.lora_only needs LoRA adapters: set PretrainedLM.lora_rank "
                       "(or TransformerConfig.lora_rank) > 0")
    decoder = getattr(model, "backbone", model)
    num_blocks = len(getattr(decoder, "blocks", []))
    if self.frozen_layers > num_blocks:
      raise ValueError(f"Trainable.frozen_layers={self.frozen_layers} but the model has "
                       f"{num_blocks} blocks")
    if self.frozen_layers and not self.lora_only and hasattr(decoder, "cut_scan_at"):
      decoder.cut_scan_at(self.frozen_layers)

  def describe(self, model: nnx.Module) -> str:
    trained = sum(v.size for v in jax.tree.leaves(nnx.state(model, self)))
    total = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return f"{trained:,} of {total:,} parameters train ({trained / max(total, 1):.1%})"
