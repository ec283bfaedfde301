"""The settings of a run, in one room: each a frozen dataclass that checks itself, bound
in gin as a group (``westofn.settings.Batching.row_len = 384``), as t5x binds its configs.

``DataSource`` (where the pairs come from, how they split), ``Batching`` (the reward
models' rows), ``PolicySft`` (the policy's SFT and samples), ``WestOfN`` (the rounds),
``LMJudgeSettings`` (AI feedback), ``Rest`` and ``Dpo`` (policy improvement). The
reward models' optimizer, loss and checkpoint selection are the libraries' own
(``rm.training.make_optimizer``, ``rm.training.LossConfig``,
``policies.core.train_loop.Selection``).

Runs written before this module existed bind these classes by their old homes
(``westofn.pipeline.Batching``, ``westofn.west_of_n.WestOfN``, ``westofn.improve.Rest``,
``westofn.ai_feedback.LMJudgeSettings``); those modules still export them under those
names, so such a ``config.gin`` reads back unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

from policies.objectives import check_thresholds
from policies.pretrained import PretrainedLM
from rm.leaderboard_rules import REWARDBENCH_COUNT_OVERRIDES, REWARDBENCH_SECTIONS
from rm.lm_judge import JudgePrompt
from westofn.errors import ConfigError, require_room

SELECTIONS = ("best_worst", "best_random", "tournament")


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where the preference pairs come from and how they are split by prompt.

  ``paths=None`` uses an embedded task with a gold reward (generated, nothing to
  download): ``task='letters'`` (the default task) or ``'sorting'``. A ``'validation'``
  part in ``split`` is human-labelled data the RMs are selected on (``train.selection``).

  ``columns`` maps the pipeline's field names to the files' own (``{'prompt': 'question',
  'chosen': 'answer_a'}``). ``eval_paths`` names extra evaluation sets (``{'name': path or
  glob}``), read like the training files and scored after every RM stage by RewardBench's
  rules; rows with a ``subset`` field are also scored per subset and per section of
  ``eval_sections`` (RewardBench's, weighted by example count with
  ``eval_count_overrides``).
  """

  paths: Optional[Sequence[str] | str] = None
  split: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"train": 0.8, "heldout": 0.2})
  split_salt: str = "westofn"
  on_error: str = "raise"
  rating_margins: Optional[Mapping[str, float]] = None
  max_pairs: Optional[int] = None
  # Caps on the size of split parts (e.g. {'heldout': 500}): a deterministic subset by
  # prompt hash, so capped runs are comparable and cheap on a CPU.
  max_per_part: Optional[Mapping[str, int]] = None
  # West-of-N's unlabeled prompts from a file (jsonl, a "prompt" per line) instead of the
  # prompts of the 'unlabeled' part.
  unlabeled_prompts: Optional[str] = None
  default_num_pairs: int = 6000
  default_seed: int = 0
  default_beta: float = 2.0
  task: str = "letters"
  task_name: str = "westofn_preferences"
  columns: Optional[Mapping[str, str]] = None
  eval_paths: Optional[Mapping[str, object]] = None
  eval_sections: Optional[Mapping[str, Sequence[str]]] = dataclasses.field(
      default_factory=lambda: dict(REWARDBENCH_SECTIONS))
  eval_count_overrides: Optional[Mapping[str, int]] = dataclasses.field(
      default_factory=lambda: dict(REWARDBENCH_COUNT_OVERRIDES))


@dataclasses.dataclass(frozen=True)
class Batching:
  rows: int = 8
  row_len: int = 256
  pairs_per_row: int = 8
  max_response_len: int = 64
  eval_rows: Optional[int] = None  # defaults to ``rows``

  def __post_init__(self):
    # A pair's responses shrink to half the row if they must (rm.packing.truncate_pair).
    require_room("Batching", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=5, what="a prompt token and two responses of a token and EOS")


@dataclasses.dataclass(frozen=True)
class PolicySft:
  """SFT of the policy LM on chosen responses, then samples on held-out prompts."""

  num_steps: int = 600
  rows: int = 8
  row_len: int = 256
  max_sequences_per_row: int = 16
  max_response_len: int = 32
  num_samples: int = 4
  num_prompts: int = 64
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_eval_examples: int = 1024  # held-out perplexity on at most this many chosen responses

  def __post_init__(self):
    require_room("PolicySft", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=self.max_response_len + 1,
                 what=f"a prompt token and a response of max_response_len={self.max_response_len}")


@dataclasses.dataclass(frozen=True)
class LMJudgeSettings:
  """``pretrained``: the judging LM (default SmolLM2-135M-Instruct); ``principles_file``:
  one principle per line, shown to the judge (Constitutional AI); ``prompt``: the
  comparison prompt and answer labels; comparison prompts longer than ``max_len`` tokens
  keep the end of the conversation; ``batch_size`` prompts run together."""

  pretrained: PretrainedLM = PretrainedLM()
  principles_file: Optional[str] = None
  prompt: JudgePrompt = JudgePrompt()
  max_len: int = 1024
  batch_size: int = 8

  def __post_init__(self):
    if self.max_len < 16 or self.batch_size < 1:
      raise ConfigError(f"LMJudgeSettings needs max_len >= 16 and batch_size >= 1, got "
                        f"{self.max_len} and {self.batch_size}")

  def describe(self) -> str:
    return (self.pretrained.describe()
            + (f" with the principles of {self.principles_file}" if self.principles_file
               else ""))


@dataclasses.dataclass(frozen=True)
class WestOfN:
  """Settings of the West-of-N rounds.

  ``selection='best_worst'`` is West-of-N with the pointwise base RM (argmax and
  argmin of its rewards). ``'tournament'`` is West-of-N as in the paper, with a
  pairwise preference model (``rm.pairwise``, trained on the same human pairs):
  best and worst come from two knockout tournaments, and the confidence is the
  model's P(best ≻ worst). ``'best_random'`` is the paper's best-vs-random
  baseline; naive self-training is ``best_worst`` with ``num_samples=2`` (two
  samples, labelled by the base RM).

  Beyond the paper (``best_worst`` only): ``rejected_rank=k`` pairs the best sample with
  the k-th in the judge's order (2: the runner-up) instead of the worst, for harder,
  near-boundary pairs; ``judge_ensemble=K`` makes the first round's judge K base RMs on the
  same human pairs (the base RM and K − 1 more, other seeds): the mean reward picks the
  pair and the mean Bradley–Terry probability is its confidence. Later rounds are judged
  by the previous student alone. ``disagreement_quantile=q`` (with ``judge_ensemble`` ≥ 2)
  drops the share q of pairs whose members disagree most, a filter instead of (or beside)
  the confidence quantile: by the standard deviation over members of r_best − r_worst
  (``disagreement_measure='std'``), or by that std over the mean margin's magnitude
  (``'relative'``, scale-free: the plain std grows with the margin, so its filter drops the
  clearest pairs). ``judge_members='bootstrap'`` trains each further member on a resample
  of the human pairs (as many, drawn with replacement by the member's seed: bagging), so
  the members differ in their data as well as in their seed (``'same'``: every member on
  the base RM's pairs).

  ``judge='lm'`` takes AI feedback instead of a trained judge: best and worst come from
  knockout tournaments judged by a prompted pretrained LM (``lm_judge``, default
  SmolLM2-135M-Instruct; ``rm.lm_judge``), position-debiased, and the confidence is its
  P(best ≻ worst).

  ``soft_labels`` (the default) distils the judge: each synthetic pair's label is the
  judge's P(best ≻ worst) (its confidence: σ(r_best − r_worst), the ensemble's mean of
  those, or the pairwise or LM judge's probability), the student's Bradley–Terry target,
  instead of the paper's hard 1 (``soft_labels=False``). Measured in
  ``benchmarks/results/west_of_n_what_pays.md``: hard labels on West-of-N's easy pairs cost
  the student accuracy, the more so the more pairs; soft labels gain on both gold tasks.
  ``num_samples`` defaults to 16, picked there by the same rule (validation gain on both
  tasks); on the held-out pairs it is within noise of 8.
  ``prompt_repeats=k`` samples the unlabeled prompts k times (fresh samples, another seed
  each time), for up to k synthetic pairs a prompt: more synthetic data where unlabeled
  prompts are few (``synthetic_per_human`` still caps the mix).

  ``unlabeled_pairs=True`` also labels the 'unlabeled' part's own response pairs (the
  responses its rows hold, whose human labels stay unread) with the round's judge, as the
  policy's best and worst are labelled (the preferred response first; the judge's
  P(first ≻ other) with ``soft_labels``), and adds them all to the student's data beside the
  synthetic pairs (``synthetic_per_human`` caps the synthetic pairs only). Those pairs are
  from the task's own distribution, where the policy's samples may not be. It needs an
  'unlabeled' part of pairs (not a prompt file) and ``judge='rm'`` with ``best_worst``.

  ``student_start='teacher'`` starts each round's student from its teacher's parameters
  (round 1: the base RM, as selected on validation; later: the previous student) and
  trains it on human ∪ synthetic with the same recipe, instead of from a new
  initialisation (``'scratch'``, the paper's).

  ``policy='improved'`` is the paper's iterative setting: round k+1 samples from the policy
  improved with round k's student (the ``rest`` stage's settings, ``train.rest``) instead
  of the fixed SFT policy.

  ``sample_batch_prompts`` prompts are sampled together (N samples each): a speed setting
  (a GPU wants hundreds of sequences at once), which changes the draws, not their
  distribution, and so is left out of the variant's name.
  """

  num_samples: int = 16
  rounds: int = 1
  selection: str = "best_worst"
  confidence_quantile: float = 0.0
  likelihood_quantile: float = 0.0
  likelihood_threshold: Optional[float] = None
  synthetic_per_human: float = 1.0
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_p: float = 1.0
  max_prompts: Optional[int] = None
  score_rows: int = 8
  score_row_len: int = 256
  max_response_len: int = 64
  rejected_rank: Optional[int] = None
  judge_ensemble: int = 1
  disagreement_quantile: float = 0.0
  disagreement_measure: str = "std"
  judge_members: str = "same"
  soft_labels: bool = True
  prompt_repeats: int = 1
  student_start: str = "scratch"
  policy: str = "sft"
  sample_batch_prompts: int = 8
  judge: str = "rm"
  lm_judge: Optional[LMJudgeSettings] = None
  unlabeled_pairs: bool = False

  def __post_init__(self):
    if self.judge not in ("rm", "lm"):
      raise ConfigError(f"WestOfN.judge must be 'rm' (the trained judge of `selection`) or "
                        f"'lm' (a prompted LM), got {self.judge!r}")
    if self.judge == "lm" and (self.selection == "best_random" or self.rejected_rank is not None
                               or self.judge_ensemble > 1):
      raise ConfigError("WestOfN.judge='lm' finds best and worst by knockout tournaments: it "
                        "does not combine with selection='best_random', rejected_rank or "
                        "judge_ensemble")
    if self.lm_judge is not None and self.judge != "lm":
      raise ConfigError("WestOfN.lm_judge is set but WestOfN.judge is not 'lm'")
    if self.student_start not in ("scratch", "teacher"):
      raise ConfigError(f"WestOfN.student_start must be 'scratch' or 'teacher', got "
                        f"{self.student_start!r}")
    if self.policy not in ("sft", "improved"):
      raise ConfigError(f"WestOfN.policy must be 'sft' or 'improved', got {self.policy!r}")
    if self.selection not in SELECTIONS:
      raise ConfigError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
    if self.num_samples < 2:
      raise ConfigError("West-of-N needs num_samples >= 2")
    if self.rejected_rank is not None and not 2 <= self.rejected_rank <= self.num_samples:
      raise ConfigError(f"WestOfN.rejected_rank must be in [2, num_samples={self.num_samples}] "
                        f"(2: the runner-up; None: the worst), got {self.rejected_rank}")
    if self.sample_batch_prompts < 1:
      raise ConfigError(f"WestOfN.sample_batch_prompts must be >= 1, got "
                        f"{self.sample_batch_prompts}")
    if self.prompt_repeats < 1:
      raise ConfigError(f"WestOfN.prompt_repeats must be >= 1, got {self.prompt_repeats}")
    if self.judge_ensemble < 1:
      raise ConfigError(f"WestOfN.judge_ensemble must be >= 1, got {self.judge_ensemble}")
    if not 0.0 <= self.disagreement_quantile < 1.0:
      raise ConfigError(f"WestOfN.disagreement_quantile must be in [0, 1), got "
                        f"{self.disagreement_quantile}")
    if self.disagreement_measure not in ("std", "relative"):
      raise ConfigError(f"WestOfN.disagreement_measure must be 'std' or 'relative', got "
                        f"{self.disagreement_measure!r}")
    if self.judge_members not in ("same", "bootstrap"):
      raise ConfigError(f"WestOfN.judge_members must be 'same' or 'bootstrap', got "
                        f"{self.judge_members!r}")
    if self.judge_members != "same" and self.judge_ensemble < 2:
      raise ConfigError(f"WestOfN.judge_members={self.judge_members!r} describes an ensemble's "
                        f"members: it needs judge_ensemble >= 2, got {self.judge_ensemble}")
    if self.disagreement_quantile > 0 and self.judge_ensemble < 2:
      raise ConfigError("WestOfN.disagreement_quantile filters by the ensemble judge's "
                        "disagreement: it needs judge_ensemble >= 2, got "
                        f"{self.judge_ensemble}")
    if self.selection != "best_worst" and (self.rejected_rank is not None
                                           or self.judge_ensemble > 1):
      raise ConfigError("WestOfN.rejected_rank and judge_ensemble apply to "
                        f"selection='best_worst', not {self.selection!r}")
    if self.unlabeled_pairs and (self.judge != "rm" or self.selection != "best_worst"):
      raise ConfigError("WestOfN.unlabeled_pairs labels pairs with the trained RM judge: it "
                        f"needs judge='rm' and selection='best_worst', got judge={self.judge!r}, "
                        f"selection={self.selection!r}")
    require_room("WestOfN", row_len=self.score_row_len, max_response_len=self.max_response_len,
                 min_row_len=self.max_response_len + 1,
                 what=f"a prompt token and a sample of max_response_len={self.max_response_len} "
                      "(the judge's rows)", row_len_field="score_row_len")


REWARD_MODELS = ("base_rm", "west_of_n", "human_100")
DPO_PAIRS = ("human", "west_of_n", "both")


@dataclasses.dataclass(frozen=True)
class Rest:
  """ReST (Gulcehre et al. 2023): ``grow_steps`` Grow steps, each sampling ``num_samples``
  responses per training prompt from the current policy and scoring them with the RM named
  by ``reward_model``; then one Improve step per threshold in ``improve_thresholds`` (on the
  normalised [0, 1] scale of ``policies.objectives``), each fine-tuning the policy for
  ``steps_per_improve`` SFT steps on the samples at or above its threshold, from the
  previous step's weights. ``keep='best'`` keeps the single best sample per prompt instead
  (rejection-sampling fine-tuning, Llama 2's variant; use it with one threshold, 0.0).
  ``reward_weighted`` weights each kept sample's loss by its normalised reward.
  ``learning_rate`` is each Improve step's peak rate (the rest of the schedule comes from
  ``train.improve_optimizer``); it is part of the stage's identity.
  """

  reward_model: str = "base_rm"
  grow_steps: int = 1
  improve_thresholds: Sequence[float] = (0.0, 0.7, 0.8, 0.9)
  keep: str = "threshold"
  reward_weighted: bool = False
  num_samples: int = 8
  num_prompts: Optional[int] = 1000
  steps_per_improve: int = 100
  learning_rate: float = 1e-3
  max_new_tokens: int = 32
  temperature: float = 1.0
  eval_prompts: int = 128
  eval_samples: int = 4
  # How the RM reads [prompt | responses] rows (prompts are left-truncated to fit).
  score_row_len: int = 256
  score_max_response_len: int = 64

  def __post_init__(self):
    if self.reward_model not in REWARD_MODELS:
      raise ConfigError(f"Rest.reward_model must be one of {REWARD_MODELS}, got "
                        f"{self.reward_model!r}")
    if self.keep not in ("threshold", "best"):
      raise ConfigError(f"Rest.keep must be 'threshold' or 'best', got {self.keep!r}")
    try:
      object.__setattr__(self, "improve_thresholds", check_thresholds(self.improve_thresholds))
    except ValueError as e:
      raise ConfigError(f"Rest.improve_thresholds: {e}") from None
    if not self.learning_rate > 0:
      raise ConfigError(f"Rest.learning_rate must be positive, got {self.learning_rate}")
    for name in ("grow_steps", "num_samples", "steps_per_improve", "eval_prompts",
                 "eval_samples"):
      if getattr(self, name) < 1:
        raise ConfigError(f"Rest.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Dpo:
  """DPO (Rafailov et al. 2023) of the SFT policy, which is also the frozen reference, on
  ``pairs``: the human pairs of the 'train' part, the last West-of-N round's synthetic
  pairs, or both. ``reward_model`` only measures the result (the proxy reward).
  ``learning_rate`` is the peak rate (the rest of the schedule comes from
  ``train.improve_optimizer``): DPO wants one about 10x below SFT's, or the policy's
  likelihood of both responses collapses and its samples degrade."""

  pairs: str = "human"
  beta: float = 0.1
  num_steps: int = 300
  learning_rate: float = 1e-4
  pairs_per_batch: int = 16
  row_len: int = 128
  max_response_len: int = 32
  reward_model: str = "base_rm"
  eval_prompts: int = 128
  eval_samples: int = 4
  score_row_len: int = 256
  score_max_response_len: int = 64

  def __post_init__(self):
    if self.pairs not in DPO_PAIRS:
      raise ConfigError(f"Dpo.pairs must be one of {DPO_PAIRS}, got {self.pairs!r}")
    if self.reward_model not in REWARD_MODELS:
      raise ConfigError(f"Dpo.reward_model must be one of {REWARD_MODELS}, got "
                        f"{self.reward_model!r}")
    if not self.learning_rate > 0:
      raise ConfigError(f"Dpo.learning_rate must be positive, got {self.learning_rate}")
    if not self.beta > 0:
      raise ConfigError(f"Dpo.beta must be positive, got {self.beta}")
    if self.max_response_len >= self.row_len:
      raise ConfigError(f"Dpo.row_len={self.row_len} leaves no room for a prompt token and a "
                        f"response of Dpo.max_response_len={self.max_response_len}")
