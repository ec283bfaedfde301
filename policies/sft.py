"""Supervised fine-tuning of the policy LM on (prompt, response) pairs.

Sequences ``[prompt | response EOS]`` are packed side by side into fixed-shape
rows (first fit, positions restarting per sequence, attention kept inside each
sequence). The loss is next-token cross-entropy on response tokens only: the
policy learns to answer prompts, not to write them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from policies.core.checkpoints import Checkpoints
from policies.core.read_only_jit import read_only_jit
from policies.core.train_loop import LoopResult, run_training, stream_from_step, to_device
from policies.transformer import Decoder, segment_mask

RESPONSE = 1


@dataclasses.dataclass
class PackedSequences:
  tokens: np.ndarray      # [R, L] int32
  positions: np.ndarray   # [R, L] int32
  group: np.ndarray       # [R, L] int32, 0 = padding
  segment: np.ndarray     # [R, L] int32, 0 prompt / 1 response
  targets: np.ndarray     # [R, L] int32, the next token
  weights: np.ndarray     # [R, L] float32, 1 where the next token is a response token
  num_sequences: int

  def arrays(self) -> dict:
    d = dataclasses.asdict(self)
    d.pop("num_sequences")
    return d


def pack_sequences(examples: Sequence[tuple[np.ndarray, np.ndarray]], *, rows: int, row_len: int,
                   max_sequences_per_row: int, max_response_len: int, eos_id: int,
                   pad_id: int = 0) -> list[PackedSequences]:
  """Packs (prompt, response) token pairs; prompts are left-truncated to fit a row.

  An example may carry a third element, its weight in the loss (reward-weighted SFT).
  """
  def empty():
    z = lambda dtype: np.zeros((rows, row_len), dtype)
    return dict(tokens=np.full((rows, row_len), pad_id, np.int32), positions=z(np.int32),
                group=z(np.int32), segment=z(np.int32), targets=np.full((rows, row_len), pad_id,
                                                                        np.int32),
                weights=z(np.float32), fill=np.zeros(rows, int), count=np.zeros(rows, int), n=0)

  def build(b):
    return PackedSequences(b["tokens"], b["positions"], b["group"], b["segment"], b["targets"],
                           b["weights"], b["n"])

  if max_response_len >= row_len:
    raise ValueError(f"max_response_len={max_response_len} must be below row_len={row_len}")
  batches, b = [], empty()
  for example in examples:
    prompt, response = example[0], example[1]
    weight = float(example[2]) if len(example) > 2 else 1.0
    resp = np.append(response[:max_response_len - 1], eos_id).astype(np.int32)
    prompt = prompt[max(0, len(prompt) - (row_len - len(resp))):].astype(np.int32)
    seq = np.concatenate([prompt, resp])
    row = next((r for r in range(rows) if b["count"][r] < max_sequences_per_row
                and b["fill"][r] + len(seq) <= row_len), None)
    if row is None:
      batches.append(build(b))
      b, row = empty(), 0
    start, n = b["fill"][row], len(seq)
    sl = slice(start, start + n)
    b["tokens"][row, sl] = seq
    b["positions"][row, sl] = np.arange(n)
    b["group"][row, sl] = b["count"][row] + 1
    b["segment"][row, start + len(prompt):start + n] = RESPONSE
    b["targets"][row, start:start + n - 1] = seq[1:]
    # position i predicts token i+1: weight it when token i+1 is part of the response
    b["weights"][row, start + len(prompt) - 1:start + n - 1] = weight
    b["fill"][row] += n
    b["count"][row] += 1
    b["n"] += 1
  if b["n"]:
    batches.append(build(b))
  return batches


@dataclasses.dataclass
class SequenceBatches:
  """Deterministic, resumable stream of packed SFT batches (epoch e shuffled with seed + e)."""

  examples: Sequence[tuple[np.ndarray, np.ndarray]]
  rows: int
  row_len: int
  max_sequences_per_row: int
  max_response_len: int
  eos_id: int
  seed: int = 0
  pad_id: int = 0

  def epoch(self, e: int) -> list[PackedSequences]:
    order = np.random.default_rng(self.seed + e).permutation(len(self.examples))
    return pack_sequences([self.examples[i] for i in order], rows=self.rows, row_len=self.row_len,
                          max_sequences_per_row=self.max_sequences_per_row,
                          max_response_len=self.max_response_len, eos_id=self.eos_id,
                          pad_id=self.pad_id)

  def __call__(self, start_step: int = 0) -> Iterator[PackedSequences]:
    return stream_from_step(self.epoch, start_step)


def sft_loss(model: Decoder, batch: dict):
  """Mean next-token cross-entropy over response positions; also returns token accuracy."""
  hidden = model(batch["tokens"], batch["positions"], segment_mask(batch["group"], batch["segment"]))
  logp = jax.nn.log_softmax(model.logits(hidden), axis=-1)
  nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
  w = batch["weights"]
  denom = jnp.maximum(w.sum(), 1.0)
  correct = (jnp.argmax(logp, axis=-1) == batch["targets"]).astype(jnp.float32)
  return (nll * w).sum() / denom, (correct * w).sum() / denom


@nnx.jit
def sft_step(model, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch: dict):
  (loss, acc), grads = nnx.value_and_grad(
      sft_loss, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)(model, batch)
  optimizer.update(model, grads)
  metrics.update(loss=loss, token_accuracy=acc, grad_norm=optax.tree.norm(grads))


@read_only_jit
def _eval_loss(model, batch):
  return sft_loss(model, batch)


@dataclasses.dataclass
class SftEval:
  metrics: dict


def evaluate_policy(*, model, batches: Sequence[PackedSequences], mesh=None) -> SftEval:
  total, weight = 0.0, 0.0
  for b in batches:
    loss, _ = _eval_loss(model, to_device(b.arrays(), mesh))
    w = float(b.weights.sum())
    total += float(loss) * w
    weight += w
  nll = total / max(weight, 1.0)
  return SftEval({"loss": nll, "perplexity": float(np.exp(nll)), "tokens": weight})


def train_policy(*, model: Decoder, optimizer: nnx.Optimizer,
                 train_batches: Callable[[int], Iterator[PackedSequences]], num_steps: int,
                 writer, checkpoints: Optional[Checkpoints] = None,
                 eval_batches: Optional[list[PackedSequences]] = None, eval_every: int = 0,
                 log_every: int = 50, mesh=None, progress: bool = True,
                 desc: str = "policy SFT") -> LoopResult:
  """SFT of ``model`` in place for ``num_steps`` steps, resuming from ``checkpoints``."""
  metrics = nnx.MultiMetric(loss=nnx.metrics.Average("loss"),
                            token_accuracy=nnx.metrics.Average("token_accuracy"),
                            grad_norm=nnx.metrics.Average("grad_norm"))
  evaluate = None
  if eval_batches:
    evaluate = lambda: evaluate_policy(model=model, batches=eval_batches, mesh=mesh)
  return run_training(model=model, optimizer=optimizer, metrics=metrics, step_fn=sft_step,
                      train_batches=train_batches, num_steps=num_steps, writer=writer,
                      checkpoints=checkpoints, evaluate=evaluate, eval_every=eval_every,
                      log_every=log_every, mesh=mesh, progress=progress, desc=desc,
                      units_of=lambda b: int(b.weights.sum()), units_name="tokens",
                      final_metadata=lambda ev: dict(ev.metrics))
