"""The settings of a run, in one room: each a frozen dataclass that checks itself, bound
in gin as a group (``westofn.settings.Batching.row_len = 384``), as t5x binds its configs.

``DataSource`` (where the pairs come from, how they split), ``RewardModelRecipe`` (how every
reward model is built and trained) with its ``Batching`` (the reward models' rows),
``RunSettings`` (seed, logging, checkpoints), ``PolicyRecipe`` (the policy) with its
``PolicySft`` (the policy's SFT and samples), ``WestOfN`` (the rounds) with its
``WestOfNSampling``, ``WestOfNJudge``, ``WestOfNFilters`` and ``WestOfNStudent``,
``LMJudgeSettings`` (an LM judge), ``Rest``, ``Dpo``, ``Hir`` and ``CRlft`` (policy
improvement; the last two share ``PolicyImprovement``'s fields), and ``ScoringRows`` (how an
RM reads the samples it scores, one group for every stage that does). The reward models'
optimizer, loss and checkpoint selection are the libraries' own
(``rm.training.make_optimizer``, ``rm.training.LossConfig``,
``policies.core.train_loop.Selection``).

Runs written before this module existed bind these classes by their old homes
(``westofn.pipeline.Batching``, ``westofn.improve.Rest``, ...): ``westofn.compat`` reads such
a ``config.gin`` back in today's names.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

from policies.core.train_loop import Selection
from policies.objectives import check_thresholds
from policies.pretrained import PretrainedLM
from rm.leaderboard_rules import REWARDBENCH_COUNT_OVERRIDES, REWARDBENCH_SECTIONS
from rm.lm_judge import JudgePrompt
from rm.training import LossConfig
from westofn.errors import ConfigError, require_room

SELECTIONS = ("best_worst", "best_random", "tournament")


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where the preference pairs come from and how they are split by prompt.

  ``paths=None`` uses an embedded task with a gold reward (generated, nothing to
  download): ``task='letters'`` (the default task) or ``'sorting'``. A ``'validation'``
  part in ``split`` is human-labelled data the RMs are selected on
  (``RewardModelRecipe.selection``).

  ``columns`` maps the pipeline's field names to the files' own (``{'prompt': 'question',
  'chosen': 'answer_a'}``). ``eval_paths`` names extra evaluation sets (``{'name': path or
  glob}``), read like the training files and scored after every RM stage by RewardBench's
  rules; rows with a ``subset`` field are also scored per subset and per section of
  ``eval_sections`` (RewardBench's, weighted by example count with
  ``eval_count_overrides``).
  """

  paths: Optional[Sequence[str] | str] = None
  """Preference files: a file, a glob, a directory of such files, or a list (jsonl(.gz), parquet, a
  `datasets` directory). None: an embedded gold task (`task`)."""
  split: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"train": 0.8, "heldout": 0.2})
  """Parts by prompt hash and their shares: 'train' (human pairs), 'heldout' (evaluation, required),
  optionally 'validation' (checkpoint selection) and 'unlabeled' (West-of-N's prompts)."""
  split_salt: str = "westofn"
  """Salt of the prompt hash that splits: another salt, another split."""
  on_error: str = "raise"
  """'raise' stops at the first bad row (file:line: field); 'skip' counts and skips bad rows."""
  rating_margins: Optional[Mapping[str, float]] = None
  """Maps a row's `rating` label to a margin (Llama 2's margin loss, with
  `LossConfig.use_margin`)."""
  max_pairs: Optional[int] = None
  """Read at most this many pairs (before the split)."""
  max_per_part: Optional[Mapping[str, int]] = None
  """Caps on the size of parts (e.g. {'heldout': 500}): a deterministic subset by prompt hash, so
  capped runs are comparable and cheap on a CPU."""
  unlabeled_prompts: Optional[str] = None
  """West-of-N's unlabeled prompts from a file (jsonl, a "prompt" per line) instead of the prompts
  of the 'unlabeled' part."""
  default_num_pairs: int = 6000
  """Pairs generated for an embedded task."""
  default_seed: int = 0
  """Seed of the embedded task's generator."""
  default_beta: float = 2.0
  """The embedded task's label noise: P(y1 ≻ y2) = σ(beta · Δgold)."""
  task: str = "letters"
  """The embedded gold task when `paths` is None: 'letters' (the default task) or 'sorting'."""
  task_name: str = "westofn_preferences"
  """The seqio task's name."""
  columns: Optional[Mapping[str, str]] = None
  """Maps the pipeline's field names to the files' own ({'prompt': 'question', 'chosen':
  'answer_a'})."""
  eval_paths: Optional[Mapping[str, object]] = None
  """Extra evaluation sets ({'name': path or glob}), read like the training files and scored after
  every RM stage by RewardBench's rules."""
  eval_sections: Optional[Mapping[str, Sequence[str]]] = dataclasses.field(
      default_factory=lambda: dict(REWARDBENCH_SECTIONS))
  """RewardBench's sections: rows with a `subset` field are also scored per subset and per
  section."""
  eval_count_overrides: Optional[Mapping[str, int]] = dataclasses.field(
      default_factory=lambda: dict(REWARDBENCH_COUNT_OVERRIDES))
  """Example counts that weight the sections (RewardBench's)."""


@dataclasses.dataclass(frozen=True)
class Batching:
  rows: int = 8
  """Rows a reward-model batch holds."""
  row_len: int = 256
  """Tokens a row holds: [prompt | chosen | rejected] of one or more pairs; prompts are left-
  truncated to fit."""
  pairs_per_row: int = 8
  """At most this many pairs share a row (first fit)."""
  max_response_len: int = 64
  """A response keeps at most this many tokens (its beginning), EOS included."""
  eval_rows: Optional[int] = None  # defaults to ``rows``
  """Rows of an evaluation batch (None: `rows`)."""

  def __post_init__(self):
    # A pair's responses shrink to half the row if they must (rm.packing.truncate_pair).
    require_room("Batching", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=5, what="a prompt token and two responses of a token and EOS")


@dataclasses.dataclass(frozen=True)
class PolicySft:
  """SFT of the policy LM on chosen responses, then samples on held-out prompts."""

  num_steps: int = 600
  """SFT steps on the chosen responses (0: the policy as loaded)."""
  rows: int = 8
  """Rows an SFT batch holds."""
  row_len: int = 256
  """Tokens a row holds."""
  max_sequences_per_row: int = 16
  """At most this many [prompt | response] sequences share a row."""
  max_response_len: int = 32
  """A response keeps at most this many tokens."""
  num_samples: int = 4
  """Samples per held-out prompt written to samples.jsonl."""
  num_prompts: int = 64
  """Held-out prompts sampled."""
  max_new_tokens: int = 32
  """Tokens a sample may have."""
  temperature: float = 1.0
  """Sampling temperature."""
  top_k: int = 0
  """Sample among the k likeliest tokens (0: all)."""
  top_p: float = 1.0
  """Nucleus sampling's mass (1: all)."""
  max_eval_examples: int = 1024  # held-out perplexity on at most this many chosen responses
  """Held-out perplexity on at most this many chosen responses."""

  def __post_init__(self):
    require_room("PolicySft", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=self.max_response_len + 1,
                 what=f"a prompt token and a response of max_response_len={self.max_response_len}")


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """What every stage of a run shares: the seed, how often it logs, evaluates and saves."""

  seed: int = 0
  """The run's seed: every model's initialisation, data order and sampling derive from it."""
  log_every: int = 50
  """Steps between training-log lines."""
  eval_every: int = 0
  """Steps between held-out (or validation) evaluations (0: at the end only)."""
  save_every: int = 200
  """Steps between checkpoints (0: at the end only)."""
  keep_checkpoints: int = 2
  """The newest checkpoint steps each stage keeps on disk."""
  progress: bool = True
  """Progress bars on long work (process 0 only)."""


@dataclasses.dataclass(frozen=True)
class RewardModelRecipe:
  """How every reward model of a run is built and trained (base, students, references).

  ``backbone`` starts each RM from a pretrained LM (a new scalar head on its final hidden
  state); otherwise ``model_config(vocab_size=...)`` builds one from scratch. ``selection``
  keeps each RM's best checkpoint on the validation part and may stop it early (every RM of
  the run, base, students and references alike, gets the same rule). ``epochs`` sizes each
  RM's run to its data: ``epochs`` passes over its training pairs (at least ``min_steps``, at
  most ``num_steps`` steps), so that the learning-rate schedule runs its whole course for an
  RM on little data and on much.
  """

  make_optimizer: Callable
  """`make_optimizer(model, total_steps=...)` (`rm.training.make_optimizer`)."""
  batching: Batching
  """How pairs pack into rows (`Batching`)."""
  num_steps: int
  """Training steps of each RM (with `epochs`: the most it may take)."""
  loss: LossConfig = LossConfig()
  """Bradley-Terry, with a margin or reward centring (`rm.training.LossConfig`)."""
  model_config: Optional[Callable] = None
  """An RM from scratch: `model_config(vocab_size=...)` (a `TransformerConfig`)."""
  backbone: Optional[PretrainedLM] = None
  """An RM from a pretrained LM (GGUF, Hugging Face); the vocabulary must be its."""
  selection: Optional[Selection] = None
  """Keep each RM's best checkpoint on the 'validation' part, and maybe stop early."""
  epochs: Optional[float] = None
  """Passes over each RM's training pairs (None: `num_steps` steps)."""
  min_steps: int = 0
  """With `epochs`: the fewest steps an RM takes."""
  base_rm_steps: Optional[int] = None
  """The base RM's steps instead of `num_steps` (0: an imported Hugging Face RM as it is, as
  West-of-N's judge)."""

  def __post_init__(self):
    if self.model_config is None and self.backbone is None:
      raise ConfigError("give RewardModelRecipe.model_config (a reward model from scratch) or "
                        "RewardModelRecipe.backbone (one initialised from a pretrained LM)")

  def steps_for(self, steps_per_epoch: int) -> int:
    """The run's length: ``num_steps``, or ``epochs`` passes clipped to [min_steps, num_steps]."""
    if self.epochs is None:
      return self.num_steps
    return int(min(self.num_steps, max(self.min_steps, round(self.epochs * steps_per_epoch))))

  def for_base_rm(self) -> "RewardModelRecipe":
    """The base RM's recipe: ``base_rm_steps`` steps where given."""
    if self.base_rm_steps is None:
      return self
    return dataclasses.replace(self, num_steps=self.base_rm_steps)


@dataclasses.dataclass(frozen=True)
class PolicyRecipe:
  """The policy LM: how it is built, fine-tuned on the chosen responses and improved."""

  model_config: Optional[Callable] = None
  """A policy from scratch: `model_config(vocab_size=...)`."""
  backbone: Optional[PretrainedLM] = None
  """A policy from a pretrained LM (the vocabulary must be its)."""
  make_optimizer: Optional[Callable] = None
  """The SFT optimizer (`policies.training.make_optimizer`)."""
  improve_optimizer: Optional[Callable] = None
  """The optimizer of ReST, DPO, HIR and C-RLFT (None: `make_optimizer`)."""
  sft: PolicySft = PolicySft()
  """SFT on the chosen responses, then samples (`PolicySft`)."""

  @property
  def improvement_optimizer(self) -> Optional[Callable]:
    return self.improve_optimizer or self.make_optimizer


@dataclasses.dataclass(frozen=True)
class ScoringRows:
  """How a reward model reads a prompt's responses when it scores them: rows of [prompt |
  response | response | ...] (``rm.response_rewards.score_responses``). One group for every
  stage that scores policy samples (West-of-N's judge, ReST, DPO, HIR, C-RLFT): bind
  ``westofn.settings.ScoringRows.row_len = 512`` once. ``for_batching`` gives the rows a
  trained RM reads in ``score``, ``evaluate`` and ``serve``."""

  rows: int = 8
  """Rows a scoring batch holds."""
  row_len: int = 256
  """Tokens a row holds (the prompt is left-truncated to fit)."""
  max_response_len: int = 64
  """A response keeps at most this many tokens (its beginning), EOS included."""
  max_per_row: int = 16
  """At most this many responses of one prompt share a row."""

  def __post_init__(self):
    require_room("ScoringRows", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=self.max_response_len + 1,
                 what=f"a prompt token and a response of max_response_len={self.max_response_len}")

  @classmethod
  def for_batching(cls, batching: Batching) -> "ScoringRows":
    """The rows of a run's ``Batching``, so that a restored RM reads what it was trained and
    evaluated on."""
    return cls(rows=batching.eval_rows or batching.rows, row_len=batching.row_len,
               max_response_len=batching.max_response_len,
               max_per_row=max(2, 2 * batching.pairs_per_row))

  def kwargs(self) -> dict:
    """``score_responses``'s keyword arguments."""
    return dataclasses.asdict(self)


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
class WestOfNSampling:
  """How the policy samples each unlabeled prompt's candidates in the West-of-N rounds."""

  num_samples: int = 16
  """N, the samples per unlabeled prompt (16: picked by the rule of `west_of_n_what_pays.md`; within
  noise of 8 on its held-out pairs)."""
  max_new_tokens: int = 32
  """Tokens a sample may have."""
  temperature: float = 1.0
  """The policy's sampling temperature in the rounds."""
  top_p: float = 1.0
  """Nucleus sampling's mass in the rounds."""
  max_prompts: Optional[int] = None
  """Sample at most this many unlabeled prompts."""
  prompt_repeats: int = 1
  """Sample the unlabeled prompts k times (fresh samples, another seed each), for up to k synthetic
  pairs a prompt; `WestOfNStudent.synthetic_per_human` still caps the mix."""
  batch_prompts: int = 8
  """Prompts sampled together (N samples each): a speed setting that changes the draws, not their
  distribution."""
  policy: str = "sft"
  """'sft': every round samples from the SFT policy; 'improved' (the paper's iterative setting):
  round k+1 samples from the policy improved by ReST with round k's student (`train.rest`)."""

  def __post_init__(self):
    if self.num_samples < 2:
      raise ConfigError("West-of-N needs WestOfNSampling.num_samples >= 2")
    if self.policy not in ("sft", "improved"):
      raise ConfigError(f"WestOfNSampling.policy must be 'sft' or 'improved', got "
                        f"{self.policy!r}")
    for name in ("batch_prompts", "prompt_repeats"):
      if getattr(self, name) < 1:
        raise ConfigError(f"WestOfNSampling.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class WestOfNJudge:
  """Who judges a prompt's candidates and how the pair is drawn from its verdicts: a trained
  RM (or an ensemble of them), a pairwise model's tournament, or a prompted LM
  (``westofn.judges.make_judge`` reads these)."""

  kind: str = "rm"
  """'rm': the trained judge of `selection`; 'lm': AI feedback, best and worst from knockout
  tournaments judged by a prompted pretrained LM (`lm`), position-debiased."""
  selection: str = "best_worst"
  """'best_worst' (West-of-N with the pointwise base RM), 'tournament' (the paper's: a pairwise
  preference model's two knockout tournaments; confidence its P(best ≻ worst)) or 'best_random'
  (the paper's baseline). Naive self-training is 'best_worst' with num_samples=2."""
  rejected_rank: Optional[int] = None
  """Beyond the paper ('best_worst' only): pair the best sample with the k-th in the judge's order
  (2: the runner-up) instead of the worst, for harder, near-boundary pairs. None: the worst."""
  ensemble: int = 1
  """Beyond the paper: the first round's judge is K base RMs on the same human pairs (the base RM
  and K − 1 more, other seeds); their mean reward picks the pair and their mean Bradley–Terry
  probability is its confidence. Later rounds are judged by the previous student."""
  members: str = "same"
  """With ensemble ≥ 2: 'same' trains every member on the base RM's pairs; 'bootstrap' each on its
  own resample of them (bagging)."""
  lm: Optional[LMJudgeSettings] = None
  """The LM judge's settings, with kind='lm' (default: SmolLM2-135M-Instruct)."""
  scoring: ScoringRows = ScoringRows()
  """How the judge's RMs read the samples (`ScoringRows`)."""

  @property
  def needs_preference_model(self) -> bool:
    """A pairwise preference model's tournament judges (trained by the pipeline first)."""
    return self.selection == "tournament" and self.kind == "rm"

  def __post_init__(self):
    if self.kind not in ("rm", "lm"):
      raise ConfigError(f"WestOfNJudge.kind must be 'rm' (the trained judge of `selection`) "
                        f"or 'lm' (a prompted LM), got {self.kind!r}")
    if self.selection not in SELECTIONS:
      raise ConfigError(f"WestOfNJudge.selection must be one of {SELECTIONS}, got "
                        f"{self.selection!r}")
    if self.kind == "lm" and (self.selection == "best_random" or self.rejected_rank is not None
                              or self.ensemble > 1):
      raise ConfigError("WestOfNJudge.kind='lm' finds best and worst by knockout tournaments: "
                        "it does not combine with selection='best_random', rejected_rank or "
                        "ensemble")
    if self.lm is not None and self.kind != "lm":
      raise ConfigError("WestOfNJudge.lm is set but WestOfNJudge.kind is not 'lm'")
    if self.ensemble < 1:
      raise ConfigError(f"WestOfNJudge.ensemble must be >= 1, got {self.ensemble}")
    if self.members not in ("same", "bootstrap"):
      raise ConfigError(f"WestOfNJudge.members must be 'same' or 'bootstrap', got "
                        f"{self.members!r}")
    if self.members != "same" and self.ensemble < 2:
      raise ConfigError(f"WestOfNJudge.members={self.members!r} describes an ensemble's "
                        f"members: it needs ensemble >= 2, got {self.ensemble}")
    if self.selection != "best_worst" and (self.rejected_rank is not None or self.ensemble > 1):
      raise ConfigError("WestOfNJudge.rejected_rank and ensemble apply to "
                        f"selection='best_worst', not {self.selection!r}")


@dataclasses.dataclass(frozen=True)
class WestOfNFilters:
  """Which of the judged pairs are kept (each a quantile of the round's usable pairs)."""

  confidence_quantile: float = 0.0
  """Keep pairs whose confidence, σ(r_best − r_worst), is at or above this quantile of the round."""
  likelihood_quantile: float = 0.0
  """Keep pairs whose best and worst both have a per-token mean log-likelihood at or above this
  quantile of the round."""
  likelihood_threshold: Optional[float] = None
  """The same filter with an absolute per-token log-likelihood."""
  disagreement_quantile: float = 0.0
  """With an ensemble judge: drop the share q of pairs whose members disagree most (measured: it
  does not pay)."""
  disagreement_measure: str = "std"
  """'std': the members' std of r_best − r_worst; 'relative': that std over the mean margin's
  magnitude (scale-free)."""

  def __post_init__(self):
    if not 0.0 <= self.disagreement_quantile < 1.0:
      raise ConfigError(f"WestOfNFilters.disagreement_quantile must be in [0, 1), got "
                        f"{self.disagreement_quantile}")
    if self.disagreement_measure not in ("std", "relative"):
      raise ConfigError(f"WestOfNFilters.disagreement_measure must be 'std' or 'relative', got "
                        f"{self.disagreement_measure!r}")


@dataclasses.dataclass(frozen=True)
class WestOfNStudent:
  """What the student RM trains on and where it starts."""

  synthetic_per_human: float = 1.0
  """Synthetic pairs per human pair in the student's data (the mix; 1: the paper's 1:1)."""
  soft_labels: bool = True
  """Distil the judge (the default): each synthetic pair's label is the judge's P(best ≻ worst), the
  student's Bradley–Terry target, instead of the paper's hard 1 (False). Measured in
  `west_of_n_what_pays.md`: hard labels on West-of-N's easy pairs cost the student accuracy, the
  more so the more pairs."""
  unlabeled_pairs: bool = False
  """Also label the 'unlabeled' part's own response pairs (their human labels unread) with the
  round's judge, as the policy's best and worst are labelled, and add them all beside the
  synthetic pairs. Needs an 'unlabeled' part of pairs and an RM judge with 'best_worst'."""
  start: str = "scratch"
  """'scratch' (the paper's): each student starts from a new initialisation; 'teacher': from its
  round's teacher (the base RM as selected on validation, or the previous student)."""

  def __post_init__(self):
    if self.start not in ("scratch", "teacher"):
      raise ConfigError(f"WestOfNStudent.start must be 'scratch' or 'teacher', got "
                        f"{self.start!r}")
    if self.synthetic_per_human < 0:
      raise ConfigError(f"WestOfNStudent.synthetic_per_human must be >= 0, got "
                        f"{self.synthetic_per_human}")
    if self.synthetic_per_human == 0 and not self.unlabeled_pairs:
      raise ConfigError("WestOfNStudent.synthetic_per_human=0 puts no synthetic pair in the "
                        "student's data, whose student would be RM(human) again: it goes with "
                        "unlabeled_pairs=True (the judged unlabeled pairs alone)")


WEST_OF_N_GROUPS = {"sampling": WestOfNSampling, "judge": WestOfNJudge,
                    "filters": WestOfNFilters, "student": WestOfNStudent}


@dataclasses.dataclass(frozen=True)
class WestOfN:
  """The West-of-N rounds, in four groups bound by gin (``westofn.settings.WestOfNJudge.
  ensemble = 5``): how the policy samples (``WestOfNSampling``), who judges
  (``WestOfNJudge``), which pairs are kept (``WestOfNFilters``) and what the student trains on
  (``WestOfNStudent``). What to use and why is in docs/west-of-n.md."""

  rounds: int = 1
  """Rounds; each round's student becomes the next round's judge."""
  sampling: WestOfNSampling = WestOfNSampling()
  """How the policy samples (`WestOfNSampling`)."""
  judge: WestOfNJudge = WestOfNJudge()
  """Who judges (`WestOfNJudge`)."""
  filters: WestOfNFilters = WestOfNFilters()
  """Which pairs are kept (`WestOfNFilters`)."""
  student: WestOfNStudent = WestOfNStudent()
  """What the student trains on (`WestOfNStudent`)."""

  def __post_init__(self):
    if self.rounds < 1:
      raise ConfigError(f"WestOfN.rounds must be >= 1, got {self.rounds}")
    j = self.judge
    if j.rejected_rank is not None and not 2 <= j.rejected_rank <= self.sampling.num_samples:
      raise ConfigError(f"WestOfNJudge.rejected_rank must be in [2, WestOfNSampling."
                        f"num_samples={self.sampling.num_samples}] (2: the runner-up; None: the "
                        f"worst), got {j.rejected_rank}")
    if self.filters.disagreement_quantile > 0 and j.ensemble < 2:
      raise ConfigError("WestOfNFilters.disagreement_quantile filters by the ensemble judge's "
                        f"disagreement: it needs WestOfNJudge.ensemble >= 2, got {j.ensemble}")
    if self.student.unlabeled_pairs and (j.kind != "rm" or j.selection != "best_worst"):
      raise ConfigError("WestOfNStudent.unlabeled_pairs labels pairs with the trained RM judge: "
                        "it needs WestOfNJudge.kind='rm' and selection='best_worst', got "
                        f"kind={j.kind!r}, selection={j.selection!r}")

  @classmethod
  def build(cls, **fields) -> "WestOfN":
    """Settings from fields named as in the groups (``WestOfN.build(num_samples=8,
    ensemble=5, soft_labels=False)``): each goes to the one group that has it; ``rounds`` is
    the rounds'. For scripts that sweep options as flat dictionaries."""
    grouped = {name: {} for name in WEST_OF_N_GROUPS}
    top = {k: fields.pop(k) for k in ("rounds",) if k in fields}
    for key, value in fields.items():
      owners = [g for g, c in WEST_OF_N_GROUPS.items()
                if key in {f.name for f in dataclasses.fields(c)}]
      if not owners:
        known = "; ".join(f"{g}: {', '.join(f.name for f in dataclasses.fields(c))}"
                          for g, c in WEST_OF_N_GROUPS.items())
        raise ConfigError(f"WestOfN has no setting named {key!r}; the groups' fields: {known}")
      grouped[owners[0]][key] = value
    return cls(**top, **{g: WEST_OF_N_GROUPS[g](**kw) for g, kw in grouped.items()})


REWARD_MODELS = ("base_rm", "west_of_n", "human_100")
DPO_PAIRS = ("human", "west_of_n", "both")


@dataclasses.dataclass(frozen=True)
class PolicyImprovement:
  """What the policy-improvement stages that sample the policy share (ReST, HIR, C-RLFT): the
  RM, the policy's sampling and the held-out measure."""

  reward_model: str = "base_rm"
  """The RM that scores the policy's samples: 'base_rm', 'west_of_n' (the last round's
  student) or 'human_100'."""
  num_prompts: Optional[int] = 1000
  """Training prompts sampled (None: all)."""
  learning_rate: float = 1e-3
  """The fine-tuning's peak learning rate (the rest of the schedule:
  `PolicyRecipe.improve_optimizer`)."""
  max_new_tokens: int = 32
  """Tokens a sample may have."""
  temperature: float = 1.0
  """Sampling temperature."""
  eval_prompts: int = 128
  """Held-out prompts the policy is measured on."""
  eval_samples: int = 4
  """Samples per held-out prompt."""
  scoring: ScoringRows = ScoringRows()
  """How the RM reads the samples it scores (`ScoringRows`)."""

  def _check(self, counts: Sequence[str]) -> None:
    name = type(self).__name__
    if self.reward_model not in REWARD_MODELS:
      raise ConfigError(f"{name}.reward_model must be one of {REWARD_MODELS}, got "
                        f"{self.reward_model!r}")
    if not self.learning_rate > 0:
      raise ConfigError(f"{name}.learning_rate must be positive, got {self.learning_rate}")
    for field in ("eval_prompts", "eval_samples", *counts):
      if getattr(self, field) < 1:
        raise ConfigError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")


@dataclasses.dataclass(frozen=True)
class Rest(PolicyImprovement):
  """ReST (Gulcehre et al. 2023): ``grow_steps`` Grow steps, each sampling ``num_samples``
  responses per training prompt from the current policy and scoring them with the RM named
  by ``reward_model``; then one Improve step per threshold in ``improve_thresholds`` (on the
  normalised [0, 1] scale of ``policies.objectives``), each fine-tuning the policy for
  ``steps_per_improve`` SFT steps on the samples at or above its threshold, from the
  previous step's weights. ``keep='best'`` keeps the single best sample per prompt instead
  (rejection-sampling fine-tuning, Llama 2's variant; use it with one threshold, 0.0).
  ``reward_weighted`` weights each kept sample's loss by its normalised reward.
  ``learning_rate`` is each Improve step's peak rate (the rest of the schedule comes from
  ``PolicyRecipe.improve_optimizer``); it is part of the stage's identity.
  """

  grow_steps: int = 1
  """Grow steps: each samples `num_samples` responses per training prompt from the current
  policy."""
  improve_thresholds: Sequence[float] = (0.0, 0.7, 0.8, 0.9)
  """One Improve step per threshold (on the normalised [0, 1] reward scale), each fine-tuning on the
  samples at or above it."""
  keep: str = "threshold"
  """'threshold' (ReST) or 'best': the single best sample per prompt (rejection-sampling fine-
  tuning; use one threshold, 0.0)."""
  reward_weighted: bool = False
  """Weight each kept sample's loss by its normalised reward."""
  num_samples: int = 8
  """Samples per prompt in a Grow step."""
  steps_per_improve: int = 100
  """SFT steps of each Improve step."""

  def __post_init__(self):
    self._check(counts=("grow_steps", "num_samples", "steps_per_improve"))
    if self.keep not in ("threshold", "best"):
      raise ConfigError(f"Rest.keep must be 'threshold' or 'best', got {self.keep!r}")
    try:
      object.__setattr__(self, "improve_thresholds", check_thresholds(self.improve_thresholds))
    except ValueError as e:
      raise ConfigError(f"Rest.improve_thresholds: {e}") from None


@dataclasses.dataclass(frozen=True)
class Hir(PolicyImprovement):
  """HIR, hindsight instruction relabeling (Zhang et al. 2023), of the SFT policy with the RM
  named by ``reward_model``: each round samples ``num_samples`` responses per training prompt
  from the current policy (round 1 as it is, later rounds asked for the best outcome), relabels
  each with the outcome it reached (its normalised reward's bin among ``num_bins``), and
  fine-tunes on the relabeled instructions with the contrastive term. At inference the policy
  is asked for the best outcome. ``policies.conditioning`` and ``policies.hindsight`` hold its
  pure parts."""

  rounds: int = 2
  """Rounds of sampling, relabeling and fine-tuning."""
  num_bins: int = 4
  """Outcome instructions: equal bins of the normalised reward on [0, 1]."""
  num_samples: int = 8
  """Samples per prompt in a round."""
  steps_per_round: int = 100
  """Fine-tuning steps per round."""
  batch: int = 8
  """Responses a batch holds (each packed once per instruction)."""
  contrastive_coef: float = 1.0
  """Weight of the contrastive term beside the relabeled SFT loss (0: relabeled SFT alone)."""
  row_len: int = 128
  """Tokens a [instruction + prompt | response] row holds."""
  max_response_len: int = 32
  """A response keeps at most this many tokens in training."""

  def __post_init__(self):
    self._check(counts=("rounds", "num_samples", "steps_per_round", "batch"))
    if self.num_bins < 2:
      raise ConfigError(f"Hir.num_bins must be >= 2, got {self.num_bins}")
    if self.contrastive_coef < 0:
      raise ConfigError(f"Hir.contrastive_coef must be >= 0, got {self.contrastive_coef}")
    require_room("Hir", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=self.max_response_len + 1,
                 what=f"a prompt token and a response of max_response_len={self.max_response_len}")


C_RLFT_CLASSES = ("reward_bins", "sources")


@dataclasses.dataclass(frozen=True)
class CRlft(PolicyImprovement):
  """C-RLFT, class-conditioned RL fine-tuning (OpenChat, Wang et al. 2023), of the SFT policy:
  the 'train' part's human chosen and rejected responses and ``num_samples`` policy samples per
  training prompt, each in a class, the policy conditioned on its class and fine-tuned by
  weighted SFT, each class weighted by its reward (``policies.conditioning.class_weights``).
  At inference it is conditioned on the class of the highest reward."""

  classes: str = "reward_bins"
  """'reward_bins': every response's class is the bin of its normalised RM reward among
  `num_bins`; 'sources': its source (human chosen, human rejected, policy sample)."""
  num_bins: int = 4
  """With classes='reward_bins': equal bins of the normalised reward on [0, 1]."""
  beta: float = 0.1
  """The KL coefficient of the weights exp((r_c − max r) / β), r_c a class's mean normalised
  reward."""
  num_samples: int = 4
  """Policy samples per training prompt."""
  num_steps: int = 300
  """Fine-tuning steps."""

  def __post_init__(self):
    self._check(counts=("num_samples", "num_steps"))
    if self.classes not in C_RLFT_CLASSES:
      raise ConfigError(f"CRlft.classes must be one of {C_RLFT_CLASSES}, got {self.classes!r}")
    if self.num_bins < 2:
      raise ConfigError(f"CRlft.num_bins must be >= 2, got {self.num_bins}")
    if not self.beta > 0:
      raise ConfigError(f"CRlft.beta must be positive, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class Dpo:
  """DPO (Rafailov et al. 2023) of the SFT policy, which is also the frozen reference, on
  ``pairs``: the human pairs of the 'train' part, the last West-of-N round's synthetic
  pairs, or both. ``reward_model`` only measures the result (the proxy reward).
  ``learning_rate`` is the peak rate (the rest of the schedule comes from
  ``PolicyRecipe.improve_optimizer``): DPO wants one about 10x below SFT's, or the policy's
  likelihood of both responses collapses and its samples degrade."""

  pairs: str = "human"
  """'human' (the 'train' part's pairs), 'west_of_n' (the last round's synthetic pairs) or
  'both'."""
  beta: float = 0.1
  """DPO's β: the strength of the KL tie to the reference (the SFT policy)."""
  num_steps: int = 300
  """Training steps."""
  learning_rate: float = 1e-4
  """The peak learning rate: about 10x below SFT's, or both responses' likelihood collapses."""
  pairs_per_batch: int = 16
  """Pairs a batch holds."""
  row_len: int = 128
  """Tokens a [prompt | response] row holds."""
  max_response_len: int = 32
  """A response keeps at most this many tokens."""
  reward_model: str = "base_rm"
  """The RM that measures the result (the proxy reward); DPO does not use it to train."""
  eval_prompts: int = 128
  """Held-out prompts the policy is measured on."""
  eval_samples: int = 4
  """Samples per held-out prompt."""
  scoring: ScoringRows = ScoringRows()
  """How the RM reads the samples it scores (`ScoringRows`)."""

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
