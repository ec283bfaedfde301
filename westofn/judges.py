"""West-of-N's judges behind one interface. A judge reads each prompt's candidate responses
and gives its ``Verdicts``: which candidate is best and which worst, how sure it is
(P(best ≻ worst), the soft label), and, where it scores each candidate on its own, each
member's reward (an ensemble's mean and spread come from those).

* ``RewardModelJudge``: one reward model, or an ensemble of K (``WestOfNJudge.ensemble``);
  every candidate's reward per member; best and worst by ``WestOfNJudge.selection``
  (``best_worst``, ``best_random``, or a ``rejected_rank``), the members' mean
  P(best ≻ worst) as the confidence and their spread as the disagreement.
* ``TournamentJudge``: a pairwise comparator (a trained pairwise preference model,
  ``selection='tournament'``); best and worst by knockout tournaments, P(best ≻ worst) from
  one more comparison; no reward per candidate. ``PromptedLMJudge`` is one whose comparator is
  a prompted LM (``kind='lm'``), position-debiased.

Every judge also compares given pairs (``compare_pairs``: P(a ≻ b) and the judge's own
numbers), which is how the ``label`` command labels pairs with any of them.

``make_judge`` is the one place that reads which judge the settings ask for.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rm.pairwise import compare_responses
from rm.response_rewards import score_responses
from westofn import selection
from westofn.samples import pad_ragged, scoring_items
from westofn.settings import ScoringRows, WestOfNJudge


@dataclasses.dataclass
class Verdicts:
  """A judge's verdicts on B prompts' candidates (indices into each prompt's list)."""
  best_B: np.ndarray
  worst_B: np.ndarray
  usable_B: np.ndarray          # a prompt with a best distinct from its worst
  confidence_B: np.ndarray      # P(best ≻ worst)
  selection: str                # how best and worst were picked (recorded with each pair)
  rewards_KxBxN: Optional[np.ndarray] = None   # each member's reward (None: a tournament)
  rewards_BxN: Optional[np.ndarray] = None     # the members' mean: the judge's reward
  disagreement_B: Optional[np.ndarray] = None  # the members' spread on best − worst
  relative_disagreement_B: Optional[np.ndarray] = None
  comparisons: int = 0          # pairwise comparisons a tournament made


@dataclasses.dataclass
class PairVerdicts:
  """A judge's verdicts on B given pairs (a, b) of one prompt each."""
  prefers_a_B: np.ndarray       # the judge prefers a (ties go to a)
  probability_B: np.ndarray     # P(a ≻ b)
  details: dict                 # name: [B] array, what else the judge measured per pair


class Judge(Protocol):
  def verdicts(self, *, prompts: Sequence[str], texts: Sequence[Sequence[str]],
               valid_BxN: np.ndarray, settings: WestOfNJudge, seed: int) -> Verdicts:
    """Best, worst and confidence for each prompt's candidates ``texts``."""

  def compare_pairs(self, *, prompts: Sequence[str], responses_a: Sequence[str],
                    responses_b: Sequence[str],
                    progress: Optional[Callable] = None) -> PairVerdicts:
    """Which of each pair the judge prefers, and how sure it is; ``progress(n)`` as pairs
    are done."""


class RewardModelJudge:
  """One reward model or an ensemble of them, reading the candidates in ``scoring``'s rows:
  each candidate's reward per member. West-of-N's judge, best-of-N's picker."""

  def __init__(self, members: Sequence, vocabulary, scoring: ScoringRows = ScoringRows()):
    self.members, self.vocabulary, self.scoring = list(members), vocabulary, scoring

  def rewards(self, *, prompts: Sequence[str], texts: Sequence[Sequence[str]]) -> np.ndarray:
    """[K, B, N] rewards of the K members for each prompt's candidates (0 where a prompt
    has fewer)."""
    return self.item_rewards(scoring_items(self.vocabulary, prompts, texts))

  def item_rewards(self, items: Sequence) -> np.ndarray:
    """``rewards`` of items already tokenized (``samples.scoring_items``)."""
    out = []
    for model in self.members:
      scores = score_responses(model, items, **self.scoring.kwargs(),
                               eos_id=self.vocabulary.eos_id, pad_id=self.vocabulary.pad_id)
      out.append(pad_ragged([r[:len(responses)] for r, (_, responses) in zip(scores, items)])[0])
    return np.stack(out)

  def compare_pairs(self, *, prompts, responses_a, responses_b, progress=None) -> PairVerdicts:
    """P(a ≻ b): the members' mean Bradley–Terry probability σ(r_a − r_b) (an ensemble's
    confidence, as West-of-N's); the details are the members' mean rewards."""
    r_KxBx2 = jnp.asarray(self.rewards(prompts=prompts, texts=[[a, b] for a, b in
                                                                 zip(responses_a, responses_b)]))
    mean_Bx2 = np.asarray(selection.ensemble_rewards(r_KxBx2))
    n = len(prompts)
    p_B = np.asarray(selection.ensemble_confidence(r_KxBx2, jnp.zeros(n, jnp.int32),
                                                   jnp.ones(n, jnp.int32)))
    if progress is not None:
      progress(len(prompts))
    return PairVerdicts(mean_Bx2[:, 0] >= mean_Bx2[:, 1], p_B,
                        {"judge_reward_a": mean_Bx2[:, 0], "judge_reward_b": mean_Bx2[:, 1]})

  def best(self, *, prompts: Sequence[str], texts: Sequence[Sequence[str]]) -> np.ndarray:
    """[B] the index of each prompt's best candidate by the members' mean reward
    (best-of-N)."""
    r_BxN = self.rewards(prompts=prompts, texts=texts).mean(0)
    valid_BxN = np.arange(r_BxN.shape[1]) < np.array([len(t) for t in texts])[:, None]
    return np.where(valid_BxN, r_BxN, -np.inf).argmax(1)

  def verdicts(self, *, prompts, texts, valid_BxN, settings: WestOfNJudge,
               seed: int) -> Verdicts:
    r_KxBxN = self.rewards(prompts=prompts, texts=texts)
    r, valid = selection.ensemble_rewards(jnp.asarray(r_KxBxN)), jnp.asarray(valid_BxN)
    if settings.selection == "best_random":
      best, worst, usable = selection.best_and_random(r, valid, jax.random.key(seed))
    elif settings.rejected_rank is not None:
      best, worst, usable = selection.best_and_ranked(r, valid, settings.rejected_rank)
    else:
      best, worst, usable = selection.best_and_worst(r, valid)
    members, b, w = jnp.asarray(r_KxBxN), jnp.asarray(best), jnp.asarray(worst)
    return Verdicts(np.asarray(best), np.asarray(worst), np.asarray(usable),
                    np.asarray(selection.ensemble_confidence(members, b, w)),
                    settings.selection, rewards_KxBxN=r_KxBxN, rewards_BxN=np.asarray(r),
                    disagreement_B=np.asarray(selection.ensemble_disagreement(members, b, w)),
                    relative_disagreement_B=np.asarray(
                        selection.relative_disagreement(members, b, w)))


class TournamentJudge:
  """A pairwise comparator: ``comparator(prompts, texts)`` returns ``compare(matches)``,
  P(i ≻ j) for rows (prompt, i, j); best and worst by knockout."""

  def __init__(self, comparator: Callable, selection_name: str):
    self.comparator, self.selection_name = comparator, selection_name

  def compare_pairs(self, *, prompts, responses_a, responses_b, progress=None) -> PairVerdicts:
    compare = self.comparator(list(prompts), [[a, b] for a, b in zip(responses_a,
                                                                    responses_b)])
    n = len(prompts)
    p_B = np.asarray(compare(np.stack([np.arange(n), np.zeros(n, int), np.ones(n, int)], 1)))
    if progress is not None:
      progress(n)
    return PairVerdicts(p_B >= 0.5, p_B, {})

  def verdicts(self, *, prompts, texts, valid_BxN, settings: WestOfNJudge,
               seed: int) -> Verdicts:
    compare = self.comparator(list(prompts), texts)
    counts_n = [len(t) for t in texts]
    best, used_best = selection.knockout(counts_n, compare, find="best")
    worst, used_worst = selection.knockout(counts_n, compare, find="worst")
    usable = (np.asarray(counts_n) >= 2) & (best != worst)
    best, worst = np.maximum(best, 0), np.maximum(worst, 0)
    conf = np.full(len(prompts), 0.5, np.float32)
    if usable.any():
      rows = np.arange(len(prompts))
      conf[usable] = compare(np.stack([rows[usable], best[usable], worst[usable]], 1))
    return Verdicts(best, worst, usable, conf, self.selection_name,
                    comparisons=used_best + used_worst + int(usable.sum()))


def preference_model_comparator(preference_model, vocabulary, rows: ScoringRows) -> Callable:
  """The comparator of a trained pairwise preference model (``rm.pairwise``), reading the
  responses in ``rows``."""
  def comparator(prompts, texts):
    items = scoring_items(vocabulary, prompts, texts)
    kw = dict(rows=rows.rows, row_len=rows.row_len, pairs_per_row=max(1, rows.row_len // 128),
              max_response_len=rows.max_response_len, eos_id=vocabulary.eos_id,
              pad_id=vocabulary.pad_id)

    def compare(matches):
      responses = [items[b][1] for b in matches[:, 0]]
      return compare_responses(preference_model, [items[b][0] for b in matches[:, 0]],
                               [r[i] for r, i in zip(responses, matches[:, 1])],
                               [r[j] for r, j in zip(responses, matches[:, 2])], **kw)
    return compare
  return comparator


class PromptedLMJudge(TournamentJudge):
  """A prompted LM (``rm.lm_judge.LMJudge``) as the comparator, loaded on first use (a
  reused round loads no LM) by ``make_lm_judge()``. Its pair verdicts carry both orders'
  logits and whether the verdict flipped with the order."""

  def __init__(self, make_lm_judge: Callable):
    super().__init__(lambda prompts, texts: self.lm().comparator(prompts, texts),
                     "lm_tournament")
    self._make, self._lm = make_lm_judge, None

  def lm(self):
    if self._lm is None:
      self._lm = self._make()
    return self._lm

  def compare_pairs(self, *, prompts, responses_a, responses_b, progress=None) -> PairVerdicts:
    v = self.lm().judge(list(prompts), list(responses_a), list(responses_b),
                        progress=None if progress is None else lambda n: progress(n / 2))
    return PairVerdicts(np.asarray(v.logit) >= 0, np.asarray(v.probability),
                        {"judge_logit_ab": np.asarray(v.logit_ab),
                         "judge_logit_ba": np.asarray(v.logit_ba),
                         "position_flip": np.asarray(v.flips)})


def make_judge(*, settings: WestOfNJudge, vocabulary, reward_models: Sequence = (),
               preference_model=None, make_lm_judge: Optional[Callable] = None) -> Judge:
  """The judge ``settings`` ask for: an LM judge (``kind='lm'``), a pairwise tournament
  (``selection='tournament'``), else the reward model(s) (a list: an ensemble)."""
  if settings.kind == "lm":
    if make_lm_judge is None:
      raise ValueError("WestOfNJudge.kind='lm' needs the LM judge")
    return PromptedLMJudge(make_lm_judge)
  if settings.selection == "tournament":
    if preference_model is None:
      raise ValueError("selection='tournament' needs a pairwise preference model")
    return TournamentJudge(preference_model_comparator(preference_model, vocabulary,
                                                       settings.scoring), "tournament")
  if not reward_models:
    raise ValueError("a reward-model judge needs at least one reward model")
  return RewardModelJudge(reward_models, vocabulary, scoring=settings.scoring)
