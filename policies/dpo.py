"""Direct preference optimisation (Rafailov et al. 2023) of the policy LM on preference pairs.

A batch of B pairs is 2B rows, ``[prompt | chosen EOS]`` in rows 0..B-1 and
``[prompt | rejected EOS]`` in rows B..2B-1 (``sft.pack_sequences`` with one sequence
per row, so positions, masks and response weights are SFT's). A row's log-likelihood is
the sum of its response tokens' log-probabilities. The reference model's log-likelihoods
are computed once for every pair before training (the reference is frozen) and travel
with the batches, so a step runs the policy only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from policies.core.checkpoints import Checkpoints
from policies.core.read_only_jit import read_only_jit
from policies.core.sharding import to_host
from policies.core.train_loop import LoopResult, run_training, stream_from_step, to_device
from policies.objectives import dpo_loss
from policies.sft import pack_sequences
from policies.transformer import Decoder, segment_mask


@dataclasses.dataclass
class DpoBatch:
  arrays_: dict        # the packed rows: tokens, positions, group, segment, targets, weights
  index: np.ndarray    # [B] pair index, -1 for an empty slot
  reference_chosen: np.ndarray    # [B]
  reference_rejected: np.ndarray  # [B]

  @property
  def num_pairs(self) -> int:
    return int((self.index >= 0).sum())

  def arrays(self) -> dict:
    return {**self.arrays_, "reference_chosen": self.reference_chosen,
            "reference_rejected": self.reference_rejected,
            "pair_weights": (self.index >= 0).astype(np.float32)}


def pack_pairs(pairs: Sequence, indices: Sequence[int], *, pairs_per_batch: int, row_len: int,
               max_response_len: int, eos_id: int, pad_id: int = 0,
               reference: Optional[tuple[np.ndarray, np.ndarray]] = None) -> list[DpoBatch]:
  """Batches of ``pairs_per_batch`` pairs (the last one padded with empty slots).

  ``pairs`` are tokenized (``.prompt``, ``.chosen``, ``.rejected`` token arrays);
  ``reference`` holds every pair's reference log-likelihoods (zeros when omitted).
  """
  shape = dict(rows=pairs_per_batch, row_len=row_len, max_sequences_per_row=1,
               max_response_len=max_response_len, eos_id=eos_id, pad_id=pad_id)
  out = []
  for start in range(0, len(indices), pairs_per_batch):
    chunk = list(indices[start:start + pairs_per_batch])
    sides = []
    for side in ("chosen", "rejected"):
      packed = pack_sequences([(pairs[i].prompt, getattr(pairs[i], side)) for i in chunk],
                              **shape)
      if len(packed) != 1:
        raise AssertionError("one sequence per row must fit one batch")
      sides.append(packed[0].arrays())
    arrays = {k: np.concatenate([sides[0][k], sides[1][k]]) for k in sides[0]}
    index = np.full(pairs_per_batch, -1, np.int64)
    index[:len(chunk)] = chunk
    ref_c, ref_r = np.zeros(pairs_per_batch, np.float32), np.zeros(pairs_per_batch, np.float32)
    if reference is not None:
      ref_c[:len(chunk)] = reference[0][chunk]
      ref_r[:len(chunk)] = reference[1][chunk]
    out.append(DpoBatch(arrays, index, ref_c, ref_r))
  return out


def sequence_logprobs(model: Decoder, batch: dict):
  """[2B] sum of log p(response token) over each row's response tokens."""
  hidden = model(batch["tokens"], batch["positions"],
                 segment_mask(batch["group"], batch["segment"]))
  logp = jax.nn.log_softmax(model.logits(hidden).astype(jnp.float32), axis=-1)
  token_logp = jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
  return jnp.sum(token_logp * batch["weights"], axis=-1)


def _objective(model, batch: dict, beta: float):
  logp = sequence_logprobs(model, batch)
  b = logp.shape[0] // 2
  return dpo_loss(logp[:b], logp[b:], batch["reference_chosen"], batch["reference_rejected"],
                  beta=beta, weights_B=batch["pair_weights"])


@functools.partial(nnx.jit, static_argnames=("beta",))
def dpo_step(model, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch: dict, *,
             beta: float):
  (loss, acc), grads = nnx.value_and_grad(
      _objective, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)(model, batch, beta)
  optimizer.update(model, grads)
  metrics.update(loss=loss, implied_reward_accuracy=acc, grad_norm=optax.tree.norm(grads))


@read_only_jit
def _logprobs(model, batch):
  return sequence_logprobs(model, batch)


@read_only_jit(static_argnames=("beta",))
def _eval_objective(model, batch, *, beta: float):
  return _objective(model, batch, beta)


def reference_logprobs(model: Decoder, pairs: Sequence, *, mesh=None,
                       **shape) -> tuple[np.ndarray, np.ndarray]:
  """Every pair's (chosen, rejected) log-likelihood under ``model`` (the frozen reference)."""
  chosen, rejected = np.zeros(len(pairs), np.float32), np.zeros(len(pairs), np.float32)
  for batch in pack_pairs(pairs, range(len(pairs)), **shape):
    logp = to_host(_logprobs(model, to_device(batch.arrays(), mesh)))
    b, real = len(batch.index), batch.index >= 0
    chosen[batch.index[real]] = logp[:b][real]
    rejected[batch.index[real]] = logp[b:][real]
  return chosen, rejected


@dataclasses.dataclass
class DpoBatches:
  """Deterministic, resumable stream of DPO batches (epoch e shuffled with seed + e)."""

  pairs: Sequence
  reference: tuple[np.ndarray, np.ndarray]
  shape: dict   # pack_pairs' keyword arguments: pairs_per_batch, row_len, ...
  seed: int = 0

  def epoch(self, e: int) -> list[DpoBatch]:
    order = np.random.default_rng(self.seed + e).permutation(len(self.pairs))
    full = len(order) - len(order) % self.shape["pairs_per_batch"]   # whole batches only
    return pack_pairs(self.pairs, order[:full] if full else order, reference=self.reference,
                      **self.shape)

  def __call__(self, start_step: int = 0) -> Iterator[DpoBatch]:
    return stream_from_step(self.epoch, start_step)


@dataclasses.dataclass
class DpoEval:
  metrics: dict


def evaluate_dpo(*, model, batches: Sequence[DpoBatch], beta: float, mesh=None) -> DpoEval:
  """Pair-weighted DPO loss and implied-reward accuracy over ``batches``."""
  loss = acc = count = 0.0
  for b in batches:
    l, a = _eval_objective(model, to_device(b.arrays(), mesh), beta=beta)
    loss += float(l) * b.num_pairs
    acc += float(a) * b.num_pairs
    count += b.num_pairs
  count = max(count, 1.0)
  return DpoEval({"loss": loss / count, "implied_reward_accuracy": acc / count,
                  "pairs": int(count)})


def train_dpo(*, model: Decoder, optimizer: nnx.Optimizer, train_batches: DpoBatches,
              num_steps: int, beta: float, writer, checkpoints: Optional[Checkpoints] = None,
              eval_batches: Optional[list[DpoBatch]] = None, eval_every: int = 0,
              log_every: int = 50, mesh=None, progress: bool = True,
              desc: str = "dpo") -> LoopResult:
  """DPO of ``model`` in place for ``num_steps`` steps, resuming from ``checkpoints``."""
  metrics = nnx.MultiMetric(
      loss=nnx.metrics.Average("loss"),
      implied_reward_accuracy=nnx.metrics.Average("implied_reward_accuracy"),
      grad_norm=nnx.metrics.Average("grad_norm"))
  evaluate = None
  if eval_batches:
    evaluate = lambda: evaluate_dpo(model=model, batches=eval_batches, beta=beta, mesh=mesh)
  step = functools.partial(dpo_step, beta=beta)
  return run_training(model=model, optimizer=optimizer, metrics=metrics, step_fn=step,
                      train_batches=train_batches, num_steps=num_steps, writer=writer,
                      checkpoints=checkpoints, evaluate=evaluate, eval_every=eval_every,
                      log_every=log_every, mesh=mesh, progress=progress, desc=desc,
                      units_of=lambda b: b.num_pairs, units_name="pairs",
                      final_metadata=lambda ev: dict(ev.metrics))
