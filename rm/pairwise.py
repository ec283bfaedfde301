"""Pairwise preference model: reads (prompt, response A, response B), predicts P(A ≻ B).

This is the preference model West-of-N uses in Pace et al. 2024. One sequence
``[prompt | A | B]`` per comparison, plain causal attention (B sees A: that is
what makes it pairwise), positions running on through both responses; the
logit is read at B's last token (EOS). It trains on human pairs in both orders,
``[x | chosen | rejected] → 1`` and ``[x | rejected | chosen] → 0``, and
predicts with both orders averaged, ``P(A ≻ B) = σ((s(x,A,B) − s(x,B,A)) / 2)``,
so ``P(A ≻ B) = 1 − P(B ≻ A)`` exactly and the order a pair is shown in cannot
matter. The packed layout is the reward model's (``rm.packing``): the swapped
stream packs identically, so batch k of both streams holds the same pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from policies.core.read_only_jit import read_only_jit
from policies.core.sharding import to_host
from policies.core.train_loop import LoopResult, run_training, to_device
from policies.transformer import Decoder, segment_mask
from rm.model import scalar_head
from rm.packing import PackedPairs, PairBatches
from rm.tasks import TokenizedPair
from rm.training import new_train_metrics


def continuous_positions(group_RxL):
  """Position of each token inside its packed sequence (0 at each group's first token)."""
  idx = jnp.broadcast_to(jnp.arange(group_RxL.shape[1]), group_RxL.shape)
  prev = jnp.pad(group_RxL[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  start = jax.lax.cummax(jnp.where(group_RxL != prev, idx, 0), axis=1)
  return idx - start


class PairwisePreferenceModel(nnx.Module):

  def __init__(self, backbone: Decoder, *, rngs: nnx.Rngs):
    self.backbone = backbone
    self.head_w, self.head_b = scalar_head(backbone.cfg.d_model, rngs)

  def logits(self, tokens_RxL, group_RxL, ends_RxPx2):
    """s(x, A, B) for each packed ``[x | A | B]``, read at B's last token: ``[R, P]``."""
    mask = segment_mask(group_RxL, jnp.zeros_like(group_RxL))  # causal inside each group
    hidden = self.backbone(tokens_RxL, continuous_positions(group_RxL), mask,
                           read_index_BxQ=ends_RxPx2[..., 1]).astype(jnp.float32)
    return hidden @ self.head_w[...] + self.head_b[...]

  def __call__(self, batch: dict):
    """(s(x, first, second), s(x, second, first)) for a ``PairwiseBatch``'s arrays."""
    return (self.logits(batch["ab_tokens"], batch["ab_group"], batch["ab_ends"]),
            self.logits(batch["ba_tokens"], batch["ba_group"], batch["ba_ends"]))


def preference_probability(logit_ab, logit_ba):
  """P(A ≻ B) from both orders; antisymmetric by construction."""
  return jax.nn.sigmoid(0.5 * (logit_ab - logit_ba))


def preference_model_loss(logit_ab_B, logit_ba_B, label_B, weights_B):
  """Binary cross-entropy of both orders: ``label`` is 1 when A (the first) is preferred."""
  for name, x in (("logit_ba_B", logit_ba_B), ("label_B", label_B), ("weights_B", weights_B)):
    if x.shape != logit_ab_B.shape:
      raise ValueError(f"{name} has shape {x.shape}, expected {logit_ab_B.shape}")
  per_pair = (optax.sigmoid_binary_cross_entropy(logit_ab_B, label_B) +
              optax.sigmoid_binary_cross_entropy(logit_ba_B, 1.0 - label_B))
  return jnp.sum(per_pair * weights_B) / jnp.maximum(jnp.sum(weights_B), 1.0) / 2.0


@dataclasses.dataclass
class PairwiseBatch:
  ab: PackedPairs   # [x | A | B]
  ba: PackedPairs   # [x | B | A], the same pairs in the same slots

  @property
  def num_pairs(self) -> int:
    return self.ab.num_pairs

  def arrays(self) -> dict:
    keep = ("tokens", "group", "ends", "weight", "label")
    return {**{f"ab_{k}": getattr(self.ab, k) for k in keep},
            **{f"ba_{k}": getattr(self.ba, k) for k in ("tokens", "group", "ends")}}


@dataclasses.dataclass
class PairwiseBatches:
  """Resumable stream of (A, B) and (B, A) batches of the same human pairs (A = chosen)."""

  pairs: Sequence[TokenizedPair]
  rows: int
  row_len: int
  pairs_per_row: int
  max_response_len: int
  eos_id: int
  seed: int = 0
  shuffle: bool = True
  pad_id: int = 0

  def __post_init__(self):
    kw = dict(rows=self.rows, row_len=self.row_len, pairs_per_row=self.pairs_per_row,
              max_response_len=self.max_response_len, eos_id=self.eos_id, seed=self.seed,
              shuffle=self.shuffle, pad_id=self.pad_id)
    self._ab = PairBatches(list(self.pairs), **kw)
    self._ba = PairBatches([TokenizedPair(p.prompt, p.rejected, p.chosen, p.margin, 1 - p.label)
                            for p in self.pairs], **kw)

  def epoch(self, e: int) -> list[PairwiseBatch]:
    return [PairwiseBatch(ab, ba) for ab, ba in zip(self._ab.epoch(e), self._ba.epoch(e))]

  def __call__(self, start_step: int = 0) -> Iterator[PairwiseBatch]:
    return (PairwiseBatch(ab, ba) for ab, ba in zip(self._ab(start_step), self._ba(start_step)))

  def one_pass(self) -> list[PairwiseBatch]:
    return [PairwiseBatch(ab, ba) for ab, ba in zip(self._ab.one_pass(), self._ba.one_pass())]


@nnx.jit
def pairwise_train_step(model, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch: dict):
  def loss_fn(model):
    ab, ba = model(batch)
    w = batch["ab_weight"].reshape(-1)
    loss = preference_model_loss(ab.reshape(-1), ba.reshape(-1),
                                 batch["ab_label"].reshape(-1), w)
    return loss, preference_probability(ab, ba).reshape(-1)

  (loss, prob), grads = nnx.value_and_grad(
      loss_fn, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)(model)
  optimizer.update(model, grads)
  w = batch["ab_weight"].reshape(-1)
  metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                 accuracy=jnp.sum((prob > 0.5) * w) / jnp.maximum(jnp.sum(w), 1.0))


@read_only_jit
def _probabilities(model, batch: dict):
  return preference_probability(*model(batch))


@dataclasses.dataclass
class PairwiseEval:
  metrics: dict
  prob_chosen: np.ndarray   # P(chosen ≻ rejected) per pair, in input order


def evaluate_pairwise(*, model, batches: Iterable[PairwiseBatch], mesh=None) -> PairwiseEval:
  probs, index = [], []
  for b in batches:
    p = to_host(_probabilities(model, to_device(b.arrays(), mesh)))
    keep = b.ab.weight > 0
    probs.append(p[keep])
    index.append(b.ab.index[keep])
  if not probs:
    raise ValueError("evaluate_pairwise got no batches")
  prob = np.concatenate(probs)[np.argsort(np.concatenate(index), kind="stable")].astype(np.float64)
  metrics = {"accuracy": float(np.mean(np.where(prob > 0.5, 1.0, np.where(prob == 0.5, 0.5, 0.0)))),
             "loss": float(np.mean(-np.log(np.clip(prob, 1e-12, 1.0)))),
             "mean_confidence": float(np.mean(np.maximum(prob, 1 - prob))),
             "num_pairs": int(len(prob))}
  return PairwiseEval(metrics, prob)


def train_pairwise_model(*, model, optimizer: nnx.Optimizer,
                         train_batches: Callable[[int], Iterator[PairwiseBatch]], num_steps: int,
                         writer, checkpoints=None, eval_batches: Optional[list] = None,
                         eval_every: int = 0, log_every: int = 50, mesh=None,
                         progress: bool = True, desc: str = "pairwise model",
                         validation_batches: Optional[list] = None, selection=None,
                         best_checkpoints=None) -> LoopResult:
  """Trains in place for ``num_steps`` (resuming from ``checkpoints``), as the RM trainer,
  with the same validation-based selection."""
  metrics = new_train_metrics()   # the RM trainer's loss / accuracy / grad_norm
  evaluate = validate = None
  if eval_batches:
    evaluate = lambda: evaluate_pairwise(model=model, batches=eval_batches, mesh=mesh)
  if validation_batches:
    validate = lambda: evaluate_pairwise(model=model, batches=validation_batches, mesh=mesh)
  return run_training(model=model, optimizer=optimizer, metrics=metrics,
                      step_fn=pairwise_train_step, train_batches=train_batches,
                      num_steps=num_steps, writer=writer, checkpoints=checkpoints,
                      evaluate=evaluate, eval_every=eval_every, log_every=log_every, mesh=mesh,
                      progress=progress, desc=desc, units_of=lambda b: b.num_pairs,
                      units_name="pairs", validate=validate, selection=selection,
                      best_checkpoints=best_checkpoints)


def compare_responses(model, prompts: Sequence[np.ndarray], a: Sequence[np.ndarray],
                      b: Sequence[np.ndarray], *, rows: int, row_len: int, pairs_per_row: int,
                      max_response_len: int, eos_id: int, pad_id: int = 0) -> np.ndarray:
  """P(a_i ≻ b_i | prompt_i) for every i, batched (token ids in, float64 out)."""
  pairs = [TokenizedPair(p, x, y) for p, x, y in zip(prompts, a, b)]
  if not pairs:
    return np.zeros(0)
  batches = PairwiseBatches(pairs, rows=rows, row_len=row_len, pairs_per_row=pairs_per_row,
                            max_response_len=max_response_len, eos_id=eos_id, pad_id=pad_id,
                            shuffle=False).one_pass()
  return evaluate_pairwise(model=model, batches=batches).prob_chosen


def pair_batches(pairs, batching, vocabulary, *, seed: int, shuffle: bool,
                 rows: Optional[int] = None, pairwise: bool = False):
  """``PairBatches`` (pointwise RM) or ``PairwiseBatches`` (both orders of each pair), laid
  out as ``batching`` says (``westofn.settings.Batching``: rows, row_len, pairs_per_row,
  max_response_len)."""
  cls = PairwiseBatches if pairwise else PairBatches
  return cls(pairs, rows=rows or batching.rows, row_len=batching.row_len,
             pairs_per_row=batching.pairs_per_row, max_response_len=batching.max_response_len,
             eos_id=vocabulary.eos_id, pad_id=vocabulary.pad_id, seed=seed, shuffle=shuffle)
