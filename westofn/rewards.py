"""Rewards of trained reward models for the programs that train policies with them: the HTTP
server (``westofn.serve``) and TRL's reward-function interface (``reward_fn``).

``RewardService`` restores one RM, or an ensemble of RMs from several MODEL_DIRs, as
``evaluate`` and ``score`` do, and scores ``(prompt, [responses])`` items: each prompt is
computed once, each response read at its EOS, in the fixed-shape rows of the RM's batching
(one compiled program per member, warmed up before serving). An ensemble's members are put
on one scale by each one's held-out reward mean and std (stored in its checkpoint), and the
reward a trainer gets is ``mean − k·std`` over them: the members' disagreement is a penalty
(Coste et al. 2023; Eisenstein et al. 2023), the defence against over-optimising one RM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional, Sequence

import numpy as np

from rm.conversations import is_conversation, messages, to_transcript
from rm.row_sources import RowError
from rm.response_rewards import pack_prompt_responses, score_responses
from westofn.errors import ConfigError
from westofn.model_dir import ModelDir
from westofn.restore import TrainedRun, load_run, restore_reward_model, truncated_responses
from westofn.samples import scoring_items
from westofn.settings import ScoringRows

SLOTS_PER_ROW = 16   # responses one served row can hold (a gather: cheap to make room for)
CALLS_IN_FLIGHT = 2  # scoring calls of one served batch run at once (score_responses)


@dataclasses.dataclass
class Member:
  """One restored RM and what scoring with it needs."""

  name: str            # "MODEL_DIR:stage"
  model: object
  run: TrainedRun
  mean: Optional[float]
  std: Optional[float]

  @property
  def normalizable(self) -> bool:
    return self.mean is not None and bool(self.std) and math.isfinite(self.std)


@dataclasses.dataclass
class Scored:
  """Per item: ``rewards`` (what a trainer should use), ``rewards_normalized``, the
  responses the RM read only in part, and, for an ensemble, each member's raw rewards and
  the normalised mean and std."""

  rewards: np.ndarray
  rewards_normalized: Optional[np.ndarray]
  truncated: int
  members: Optional[dict] = None
  mean: Optional[np.ndarray] = None
  std: Optional[np.ndarray] = None

  def as_dict(self) -> dict:
    out = {"rewards": self.rewards.tolist(), "truncated": self.truncated}
    if self.rewards_normalized is not None:
      out["rewards_normalized"] = self.rewards_normalized.tolist()
    if self.members is not None:
      out.update(members={k: v.tolist() for k, v in self.members.items()},
                 mean=self.mean.tolist(), std=self.std.tolist())
    return out


def with_matmul_dtype(model, matmul_dtype: str):
  """A pointwise RM for scoring with the same parameters, its matmuls (dense layers and
  attention's dots) in ``matmul_dtype`` with float32 activations and accumulation (mixed
  precision, as PyTorch's bf16 autocast), its dense weights stored in ``matmul_dtype``
  (``store_dense_weights_in``)."""
  from flax import nnx
  from rm.model import RewardModel
  from policies.transformer import Decoder, store_dense_weights_in
  cfg = dataclasses.replace(model.backbone.cfg, matmul_dtype=matmul_dtype,
                            attention_dtype=matmul_dtype)
  if cfg.dtype != "float32":
    raise ConfigError(f"--matmul_dtype needs a float32 model; this one computes in {cfg.dtype}")
  out = RewardModel(Decoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))
  nnx.update(out, nnx.state(model, nnx.Param))
  store_dense_weights_in(out.backbone, matmul_dtype)
  return out


def serving_settings(batching) -> dict:
  """How a served RM packs ``(prompt, [responses])`` items: its run's rows (``score``'s), but
  a row may hold several requests, each its own attention group (``share_rows``), with
  room for ``SLOTS_PER_ROW`` responses: concurrent short requests fill rows instead of
  padding them (the rewards are the same; tested). A batch's last call takes the smallest
  bucket of rows that holds what is left (``fit_last``: a lone request need not pay for a
  full call; every bucket is compiled at warm-up). Rows twice as long, holding more
  requests whole, scored slower on a CPU: attention's cost grows with the row."""
  settings = ScoringRows.for_batching(batching).kwargs()
  return {**settings, "share_rows": True, "fit_last": True,
          "max_per_row": max(settings["max_per_row"], SLOTS_PER_ROW)}


def _rows_needed(encoded, settings: dict, vocab) -> int:
  """How many rows ``score_responses`` packs the encoded items into under ``settings``."""
  return len(pack_prompt_responses(encoded, **{**settings, "rows": 1}, eos_id=vocab.eos_id,
                                   pad_id=vocab.pad_id))


def parse_member(spec: str) -> tuple[str, Optional[str]]:
  """``DIR`` or ``DIR:STAGE``."""
  model_dir, sep, stage = spec.partition(":")
  return model_dir, (stage or None) if sep else None


def ensemble_stats(normalized_KxN, k: float):
  """``(mean_N, std_N, penalized_N)`` over the members' normalised rewards ``[K, N]``:
  ``penalized = mean − k·std`` (population std: K members are the ensemble, not a sample)."""
  r = np.asarray(normalized_KxN, np.float64)
  if r.ndim != 2 or r.shape[0] < 2:
    raise ValueError(f"an ensemble's rewards are [members >= 2, responses], got {r.shape}")
  mean, std = r.mean(0), r.std(0)
  return mean, std, mean - k * std


class RewardService:
  """Restored reward models that score ``(prompt, [responses])`` items."""

  def __init__(self, members: Sequence[Member], *, uncertainty_k: float = 1.0):
    if not members:
      raise ConfigError("no reward model to serve")
    if len(members) > 1:
      missing = [m.name for m in members if not m.normalizable]
      if missing:
        raise ConfigError(f"an ensemble puts its members on one scale by their held-out reward "
                          f"mean and std, and {', '.join(missing)} stores none")
    if uncertainty_k < 0 or not math.isfinite(uncertainty_k):
      raise ConfigError(f"--uncertainty_k must be a finite number >= 0, got {uncertainty_k}")
    self.members = list(members)
    self.uncertainty_k = uncertainty_k

  @classmethod
  def restore(cls, model_dir: str, stage: Optional[str] = None, *,
              ensemble: Sequence[str] = (), uncertainty_k: float = 1.0,
              matmul_dtype: Optional[str] = None) -> "RewardService":
    """The RM of ``model_dir`` (``stage``, default as ``score``'s), plus the members named by
    ``ensemble`` (``DIR`` or ``DIR:STAGE`` each). ``matmul_dtype='bfloat16'`` scores with
    mixed-precision matmuls whatever the RMs trained with (about twice as fast on CPUs with
    AVX512-BF16 and on GPUs; rewards within bf16 rounding of the float32 ones)."""
    members = []
    for d, s in [(model_dir, stage)] + [parse_member(e) for e in ensemble]:
      run = load_run(d)
      rm = restore_reward_model(run, s)
      if rm.pairwise:
        raise ConfigError(f"{d}:{rm.name} is a pairwise model: it compares two responses and "
                          "gives no reward of one; serve a pointwise RM stage (e.g. base_rm)")
      model = rm.model if matmul_dtype is None else with_matmul_dtype(rm.model, matmul_dtype)
      members.append(Member(f"{d}:{rm.name}", model, run, rm.metadata.get("reward_mean"),
                            rm.metadata.get("reward_std")))
    return cls(members, uncertainty_k=uncertainty_k)

  @property
  def identity(self) -> dict:
    """What is served: each member's stage and a digest of its run's config."""
    out = []
    for m in self.members:
      config = open(ModelDir(m.run.model_dir).config_gin, "rb").read()
      out.append({"model": m.name, "config_digest": hashlib.sha256(config).hexdigest()[:16],
                  "reward_mean": m.mean, "reward_std": m.std})
    return {"members": out, "uncertainty_k": self.uncertainty_k if len(out) > 1 else None}

  def _member_rewards(self, member: Member, items) -> tuple[list[np.ndarray], list[int]]:
    """Per item: the member's rewards, and how many responses it read only in part."""
    encoded = scoring_items(member.run.vocabulary, [p for p, _ in items], [r for _, r in items])
    vocab = member.run.vocabulary
    rewards = score_responses(member.model, encoded, eos_id=vocab.eos_id, pad_id=vocab.pad_id,
                              concurrent=CALLS_IN_FLIGHT, **serving_settings(member.run.batching))
    cut = [truncated_responses(p, r, member.run.batching) for p, r in encoded]
    return [np.asarray(r, np.float64) for r in rewards], cut

  def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[Scored]:
    """One ``Scored`` per ``(prompt, responses)`` item, in order."""
    per_member = [self._member_rewards(m, items) for m in self.members]
    out = []
    for i in range(len(items)):
      cut = max(cuts[i] for _, cuts in per_member)
      raw = [rewards[i] for rewards, _ in per_member]
      normalized = [(x - m.mean) / m.std if m.normalizable else None
                    for x, m in zip(raw, self.members)]
      if len(self.members) == 1:
        out.append(Scored(raw[0], normalized[0], cut))
        continue
      mean, std, penalized = ensemble_stats(np.stack(normalized), self.uncertainty_k)
      out.append(Scored(penalized, penalized, cut,
                        members={m.name: x for m, x in zip(self.members, raw)},
                        mean=mean, std=std))
    return out

  def warm_up(self) -> None:
    """Compiles every member's scoring programs (one per bucket of rows) before the first
    request: a request of any size then runs programs compiled already."""
    for m in self.members:
      settings, vocab = serving_settings(m.run.batching), m.run.vocabulary
      item = ("Hello", ["Hi."] * settings["max_per_row"])   # at most one more row each
      target, n = 1, 1
      while True:
        # as many items as fill ``target`` rows (shared rows hold several of them)
        while _rows_needed(scoring_items(vocab, *zip(*[item] * n)), settings, vocab) < target:
          n += 1
        self.score([item] * n)
        if target >= settings["rows"]:
          break
        target = min(target * 2, settings["rows"])


def prompt_text(prompt) -> str:
  """A prompt as text: a string as it is, chat messages as their transcript."""
  if is_conversation(prompt):
    try:
      return to_transcript(messages(prompt, "prompt"))
    except RowError as e:
      raise ValueError(f"{e.field}: {e.message}") from None
  if not isinstance(prompt, str):
    raise TypeError(f"a prompt is a string or a list of chat messages, got {type(prompt).__name__}")
  return prompt


def completion_text(completion) -> str:
  """A completion as text: a string, or TRL's conversational ``[{"role": "assistant",
  "content": ...}]`` (the assistant messages' content)."""
  if isinstance(completion, str):
    return completion
  if isinstance(completion, list) and all(isinstance(m, dict) for m in completion):
    return "".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant")
                   == "assistant")
  raise TypeError("a completion is a string or a list of chat messages, got "
                  f"{type(completion).__name__}")


def group_by_prompt(prompts: Sequence[str], completions: Sequence[str]):
  """``(items, where)``: one ``(prompt, [completions])`` item per distinct prompt (a policy
  samples several completions per prompt: the prompt is computed once), and for each input
  its ``(item, position)``."""
  index, items, where = {}, [], []
  for p, c in zip(prompts, completions, strict=True):
    if p not in index:
      index[p] = len(items)
      items.append((p, []))
    items[index[p]][1].append(c)
    where.append((index[p], len(items[index[p]][1]) - 1))
  return items, where


def reward_fn(model_dir: str, *, stage: Optional[str] = None, ensemble: Sequence[str] = (),
              uncertainty_k: float = 1.0, normalize: bool = False,
              matmul_dtype: Optional[str] = None):
  """A reward function for TRL's trainers (``GRPOTrainer(reward_funcs=[...])``, online DPO):
  ``f(prompts, completions, **kwargs) -> list[float]``, prompts and completions as text or
  as conversations (lists of role/content messages). The reward is the RM's (with
  ``normalize``, by its held-out mean and std), or an ensemble's ``mean − k·std``."""
  service = RewardService.restore(model_dir, stage, ensemble=ensemble,
                                  uncertainty_k=uncertainty_k, matmul_dtype=matmul_dtype)
  if normalize and not service.members[0].normalizable:
    raise ConfigError(f"{service.members[0].name} stores no held-out reward mean/std to "
                      "normalise with")

  def westofn_reward(prompts, completions, **kwargs) -> list[float]:
    del kwargs   # TRL passes the dataset's other columns
    items, where = group_by_prompt([prompt_text(p) for p in prompts],
                                   [completion_text(c) for c in completions])
    scored = service.score(items)
    pick = ((lambda s: s.rewards_normalized) if normalize and len(service.members) == 1
            else (lambda s: s.rewards))
    return [float(pick(scored[i])[j]) for i, j in where]

  westofn_reward.service = service
  return westofn_reward
