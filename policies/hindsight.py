"""HIR's training: each response under all K instructions at once, its relabeled one learnt by
SFT and contrasted against the others (``policies.conditioning.hindsight_contrastive_loss``).

A batch holds ``B`` responses; each is packed K times, once under each instruction, one
sequence a row (``[B·K, L]`` rows, response k of example b in row ``b·K + k``), so the K
log-likelihoods of a response come from one forward pass and share its response tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from policies.conditioning import hindsight_contrastive_loss
from policies.core.train_loop import LoopResult, run_training, stream_from_step
from policies.sft import pack_sequences
from policies.transformer import segment_mask


@dataclasses.dataclass(frozen=True)
class HindsightExample:
  prompts_K: tuple          # the prompt's token ids under each of the K instructions
  response: np.ndarray      # the response's token ids (no EOS)
  target: int               # the relabeled instruction: the outcome the response reached


def pack_hindsight(examples: Sequence[HindsightExample], *, batch: int, row_len: int,
                   max_response_len: int, eos_id: int, pad_id: int = 0) -> dict:
  """One batch of ``batch`` examples (fewer: padded with weight 0) as arrays."""
  if not examples or len(examples) > batch:
    raise ValueError(f"a hindsight batch holds 1 to {batch} examples, got {len(examples)}")
  k = len(examples[0].prompts_K)
  sequences = [(p, e.response) for e in examples for p in e.prompts_K]
  (packed,) = pack_sequences(sequences, rows=batch * k, row_len=row_len,
                             max_sequences_per_row=1, max_response_len=max_response_len,
                             eos_id=eos_id, pad_id=pad_id)
  arrays = packed.arrays()
  target = np.zeros(batch, np.int32)
  weight = np.zeros(batch, np.float32)
  target[:len(examples)] = [e.target for e in examples]
  weight[:len(examples)] = 1.0
  return dict(arrays, target=target, example_weight=weight)


@dataclasses.dataclass
class HindsightBatches:
  """Deterministic, resumable stream of hindsight batches (epoch e shuffled with seed + e)."""

  examples: Sequence[HindsightExample]
  batch: int
  row_len: int
  max_response_len: int
  eos_id: int
  seed: int = 0
  pad_id: int = 0

  def epoch(self, e: int) -> list:
    order = np.random.default_rng(self.seed + e).permutation(len(self.examples))
    return [_Batch(pack_hindsight([self.examples[i] for i in order[s:s + self.batch]],
                                  batch=self.batch, row_len=self.row_len,
                                  max_response_len=self.max_response_len, eos_id=self.eos_id,
                                  pad_id=self.pad_id))
            for s in range(0, len(order), self.batch)]

  def __call__(self, start_step: int = 0) -> Iterator:
    return stream_from_step(self.epoch, start_step)


@dataclasses.dataclass
class _Batch:
  data: dict

  def arrays(self) -> dict:
    return self.data


def response_logp(model, batch: dict):
  """(``logp_BxK``, ``tokens_BxK``): each response's log-likelihood under each instruction,
  and its number of response tokens (EOS included)."""
  b = batch["target"].shape[0]
  hidden = model(batch["tokens"], batch["positions"], segment_mask(batch["group"],
                                                                   batch["segment"]))
  logp = jax.nn.log_softmax(model.logits(hidden).astype(jnp.float32), axis=-1)
  token_logp = jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
  return (jnp.sum(token_logp * batch["weights"], axis=-1).reshape(b, -1),
          jnp.sum(batch["weights"], axis=-1).reshape(b, -1))


def hindsight_loss(model, batch: dict, *, contrastive_coef: float):
  """(loss, (sft, contrastive)): the relabeled sequences' mean next-token NLL over response
  tokens, plus ``contrastive_coef`` × the contrastive term."""
  seq_logp_BxK, seq_tokens_BxK = response_logp(model, batch)
  target = batch["target"][:, None]
  w = batch["example_weight"]
  own_logp = jnp.take_along_axis(seq_logp_BxK, target, axis=-1)[:, 0]
  own_tokens = jnp.take_along_axis(seq_tokens_BxK, target, axis=-1)[:, 0]
  sft = -jnp.sum(own_logp * w) / jnp.maximum(jnp.sum(own_tokens * w), 1.0)
  contrastive = hindsight_contrastive_loss(seq_logp_BxK, batch["target"], weights_B=w)
  return sft + contrastive_coef * contrastive, (sft, contrastive)


@nnx.jit(static_argnames=("contrastive_coef",))
def hindsight_step(model, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch: dict,
                   contrastive_coef: float):
  (loss, (sft, contrastive)), grads = nnx.value_and_grad(
      lambda m: hindsight_loss(m, batch, contrastive_coef=contrastive_coef),
      argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)(model)
  optimizer.update(model, grads)
  metrics.update(loss=loss, sft_loss=sft, contrastive_loss=contrastive,
                 grad_norm=optax.tree.norm(grads))


def train_hindsight(*, model, optimizer: nnx.Optimizer, train_batches: Callable[[int], Iterator],
                    num_steps: int, contrastive_coef: float, writer, checkpoints=None,
                    log_every: int = 50, mesh=None, progress: bool = True,
                    desc: str = "HIR") -> LoopResult:
  """HIR's fine-tuning of ``model`` in place for ``num_steps`` steps, resuming from
  ``checkpoints``."""
  metrics = nnx.MultiMetric(loss=nnx.metrics.Average("loss"),
                            sft_loss=nnx.metrics.Average("sft_loss"),
                            contrastive_loss=nnx.metrics.Average("contrastive_loss"),
                            grad_norm=nnx.metrics.Average("grad_norm"))
  step = lambda m, o, mt, b: hindsight_step(m, o, mt, b, contrastive_coef=contrastive_coef)
  return run_training(model=model, optimizer=optimizer, metrics=metrics, step_fn=step,
                      train_batches=train_batches, num_steps=num_steps, writer=writer,
                      checkpoints=checkpoints, log_every=log_every, mesh=mesh, progress=progress,
                      desc=desc, units_of=lambda b: int(b.data["example_weight"].sum()),
                      units_name="responses")


def relabel(prompt_ids_K: Sequence[np.ndarray], responses: Sequence[np.ndarray],
            outcomes: Sequence[int]) -> list[HindsightExample]:
  """The hindsight examples of one prompt's responses and the outcomes they reached (an
  outcome of −1, an invalid sample, is left out)."""
  prompts = tuple(np.asarray(p, np.int32) for p in prompt_ids_K)
  return [HindsightExample(prompts, np.asarray(r, np.int32), int(o))
          for r, o in zip(responses, outcomes) if o >= 0]
