"""Batched sampling with a KV cache, and teacher-forced scoring, for the policy LM.

``sample_tokens`` prefills each (left-padded) prompt once and decodes one token
a step inside a single compiled ``lax.scan``; the N samples of a prompt share
its KV cache (``Decoder.decode(prefix=...)``), which is neither copied N times
nor read N times a step. Per-token log-probabilities are always those of the policy itself
(temperature 1, no top-k/top-p), whatever the sampling settings: they measure how
in-distribution a response is, which is what West-of-N's likelihood filter needs.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from policies.core import buckets
from policies.core.read_only_jit import read_only_jit
from policies.transformer import Decoder, RotaryAngles, causal_mask


@dataclasses.dataclass
class SampledTokens:
  tokens: np.ndarray     # [B, N, T] int32; pad after the sample ended
  logprobs: np.ndarray   # [B, N, T] float32 log p_policy(token | prefix); 0 after the end
  lengths: np.ndarray    # [B, N] generated tokens, EOS included
  stopped: np.ndarray    # [B, N] bool: the sample ended with EOS

  def response(self, b: int, n: int) -> np.ndarray:
    return self.tokens[b, n, :self.lengths[b, n]]


def process_logits(logits_BxV, *, temperature, top_k: int, top_p, use_top_p: bool = True):
  """Sampling distribution: temperature, then top-k, then nucleus (top-p) truncation.

  ``use_top_p=False`` skips the nucleus step (it sorts the vocabulary every step).
  """
  logits = logits_BxV / jnp.maximum(temperature, 1e-6)
  neg = jnp.finfo(logits.dtype).min
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if not use_top_p:
    return logits
  probs = jax.nn.softmax(logits, axis=-1)
  sorted_probs = jnp.flip(jnp.sort(probs, axis=-1), axis=-1)
  mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
  # The smallest set of most likely tokens whose mass reaches top_p.
  threshold = jnp.min(jnp.where(mass_before < top_p, sorted_probs, jnp.inf), axis=-1,
                      keepdims=True)
  return jnp.where(probs >= threshold, logits, neg)


def sample_categorical(key, logits_BxV, *, log_probs: bool = False):
  """One draw per row from ``softmax(logits)``, by inverse CDF (as ``jax.random.choice``).

  One uniform number per row, where Gumbel-max (``jax.random.categorical``) needs
  one per vocabulary entry: on a CPU, generating those costs more than a small
  model's whole decoding step, and 3.5x more than this at a 49k vocabulary.
  Tokens of probability 0 (cut by top-k/top-p) are never drawn. ``log_probs=True``:
  the rows are already log-probabilities (``log_softmax``'s output, which the decoder
  computes anyway), so ``exp`` gives the distribution without a second maximum and sum
  over the vocabulary.
  """
  if logits_BxV.ndim != 2:
    raise ValueError(f"logits must be [batch, vocab], got shape {logits_BxV.shape}")
  logits = logits_BxV.astype(jnp.float32)
  probs = jnp.exp(logits) if log_probs else jax.nn.softmax(logits, axis=-1)
  cdf = jnp.cumsum(probs, axis=-1)
  u = jax.random.uniform(key, (probs.shape[0], 1)) * cdf[:, -1:]
  # The first token whose cumulative mass exceeds u; rounding can push u past the
  # end, so the draw is capped at the last token of nonzero probability.
  drawn = jnp.sum(cdf <= u, axis=-1)
  last = probs.shape[1] - 1 - jnp.argmax(probs[:, ::-1] > 0, axis=-1)
  return jnp.minimum(drawn, last).astype(jnp.int32)


@read_only_jit(static_argnames=("num_samples", "max_new_tokens", "top_k", "greedy", "use_top_p",
                                "plain", "eos_id", "pad_id", "unroll"))
def _generate(model: Decoder, prompts_BxP, prompt_lens_B, rng, temperature, top_p, *,
              num_samples: int, max_new_tokens: int, top_k: int, greedy: bool, use_top_p: bool,
              plain: bool, eos_id: int, pad_id: int, unroll: int):
  b, p = prompts_BxP.shape
  slots = jnp.arange(p)
  n_pad = p - prompt_lens_B
  prompt_valid = slots[None] >= n_pad[:, None]
  positions = jnp.maximum(slots[None] - n_pad[:, None], 0)
  hidden, prompt_caches = model.decode(prompts_BxP, positions, causal_mask(prompt_valid),
                                       model.init_cache(b, p), 0)
  if model.cfg.matmul_dtype:
    # Under mixed precision the prompt cache, read by every decoding step, is rounded
    # once to the matmul dtype: half the bytes to read, and bf16 dots (as the dense
    # layers' operands already are).
    low = jnp.dtype(model.cfg.matmul_dtype)
    prompt_caches = jax.tree.map(lambda c: c.astype(low), prompt_caches)
  # The N samples of a prompt share its cache (stored once, read once a step) and
  # each has a cache of its own tokens only.
  prefix = (prompt_caches, prompt_valid)
  bn = b * num_samples
  caches = model.init_cache(bn, max_new_tokens)
  logits = jnp.repeat(model.logits(hidden[:, -1]), num_samples, axis=0)
  key_valid = jnp.zeros((bn, max_new_tokens), bool)
  lens = jnp.repeat(prompt_lens_B, num_samples)
  done = jnp.zeros((bn,), bool)
  table = model.rotary_table(p + max_new_tokens)

  def step(carry, t):
    caches, logits, key_valid, done, rng = carry
    rng, key = jax.random.split(rng)
    logp = jax.nn.log_softmax(logits, axis=-1)
    if greedy:
      tok = jnp.argmax(logits, axis=-1)
    elif plain:  # temperature 1, full vocabulary: sample the policy itself
      tok = sample_categorical(key, logp, log_probs=True)
    else:
      tok = sample_categorical(key, process_logits(
          logits, temperature=temperature, top_k=top_k, top_p=top_p, use_top_p=use_top_p))
    tok = jnp.where(done, pad_id, tok).astype(jnp.int32)
    tok_logp = jnp.where(done, 0.0, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0])
    was_done = done
    done = done | (tok == eos_id)
    key_valid = jax.lax.dynamic_update_slice_in_dim(
        key_valid, jnp.ones((bn, 1), bool), t, axis=1)
    angles = RotaryAngles(*(x[lens + t][:, None] for x in table))
    hidden, caches = model.decode(tok[:, None], angles, key_valid[:, None, :], caches, t,
                                  prefix=prefix)
    return (caches, model.logits(hidden[:, 0]), key_valid, done, rng), (tok, tok_logp, was_done)

  # Unrolling lets XLA fuse across steps; on a CPU the per-iteration cost dominates.
  _, (toks, logps, was_done) = jax.lax.scan(
      step, (caches, logits, key_valid, done, rng), jnp.arange(max_new_tokens), unroll=unroll)
  toks, logps, was_done = toks.T, logps.T, was_done.T   # [B*N, T]
  lengths = jnp.sum(~was_done, axis=-1)
  stopped = jnp.any((toks == eos_id) & ~was_done, axis=-1)
  shape = (b, num_samples, max_new_tokens)
  return (toks.reshape(shape), logps.reshape(shape), lengths.reshape(b, num_samples),
          stopped.reshape(b, num_samples))


# Unrolled decoding steps let XLA fuse across steps (on a CPU a loop iteration's overhead
# is a large part of a small model's step), but each unrolled step copies every block the
# step runs: 8 steps of a 30-layer loop compiled in 26 s where 4 took 9 s at the same
# tokens/s (SmolLM2 shape, 2 CPU cores). So the unrolled blocks are capped.
MAX_UNROLLED_BLOCKS = 120


def default_unroll(cfg) -> int:
  """Decoding steps unrolled per loop iteration: up to 8, with at most
  ``MAX_UNROLLED_BLOCKS`` blocks in the compiled step (a layer scan counts as one)."""
  blocks = 1 if cfg.scans_layers else cfg.num_layers
  return max(1, min(8, MAX_UNROLLED_BLOCKS // blocks))


def _left_pad(prompts: Sequence[np.ndarray], pad_id: int, bucket: int) -> tuple[np.ndarray, np.ndarray]:
  longest = max(len(p) for p in prompts)
  if min(len(p) for p in prompts) == 0:
    raise ValueError("every prompt needs at least one token")
  width = buckets.bucket(longest, bucket)
  out = np.full((len(prompts), width), pad_id, np.int32)
  for i, p in enumerate(prompts):
    out[i, width - len(p):] = p
  return out, np.asarray([len(p) for p in prompts], np.int32)


def sample_tokens(model: Decoder, prompts: Sequence[np.ndarray], *, num_samples: int,
                  max_new_tokens: int, eos_id: int, pad_id: int = 0, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                  prompt_bucket: int = 32, unroll: Optional[int] = None) -> SampledTokens:
  """N samples for each prompt (token ids), with per-token log-likelihoods.

  ``temperature=0`` is greedy decoding. ``top_k=0`` and ``top_p=1`` disable
  truncation. The returned ``logprobs`` are under the unmodified policy
  (temperature 1, full vocabulary), not the sampling distribution. The same
  ``seed`` gives the same samples. Prompts are left-padded to a multiple of
  ``prompt_bucket`` times a power of two, so that a new prompt length rarely means a
  new compile. ``unroll`` decoding steps are unrolled in the compiled loop (None:
  ``default_unroll``).
  """
  if num_samples < 1 or max_new_tokens < 1:
    raise ValueError("num_samples and max_new_tokens must be positive")
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  tokens, lens = _left_pad(prompts, pad_id, prompt_bucket)
  greedy = temperature == 0.0
  out = _generate(model, jnp.asarray(tokens), jnp.asarray(lens), jax.random.key(seed),
                  jnp.float32(temperature if not greedy else 1.0), jnp.float32(top_p),
                  num_samples=num_samples, max_new_tokens=max_new_tokens, top_k=top_k,
                  greedy=greedy, use_top_p=top_p < 1.0,
                  plain=temperature == 1.0 and not top_k and top_p >= 1.0, eos_id=eos_id,
                  pad_id=pad_id,
                  unroll=max(1, min(unroll or default_unroll(model.cfg), max_new_tokens)))
  return SampledTokens(*[np.asarray(x) for x in out])


@read_only_jit
def _token_logprobs(model: Decoder, tokens_BxL, valid_BxL):
  positions = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
  logits = model.logits(model(tokens_BxL, positions, causal_mask(valid_BxL)))
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  return jnp.take_along_axis(logp, tokens_BxL[:, 1:, None], axis=-1)[..., 0]


def score_tokens(model: Decoder, prompts: Sequence[np.ndarray], responses: Sequence[np.ndarray],
                 *, pad_id: int = 0, batch_size: int = 32, bucket: int = 64) -> list[np.ndarray]:
  """Teacher-forced ``log p(response_t | prompt, response_<t)`` for each response token."""
  if len(prompts) != len(responses):
    raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
  out: list[Optional[np.ndarray]] = [None] * len(prompts)
  seqs = [np.concatenate([p, r]).astype(np.int32) for p, r in zip(prompts, responses)]
  width = buckets.bucket(max(len(s) for s in seqs), bucket)
  for start in range(0, len(seqs), batch_size):
    chunk = seqs[start:start + batch_size]
    tokens = np.full((batch_size, width), pad_id, np.int32)
    valid = np.zeros((batch_size, width), bool)
    for i, s in enumerate(chunk):
      tokens[i, :len(s)] = s
      valid[i, :len(s)] = True
    logp = np.asarray(_token_logprobs(model, jnp.asarray(tokens), jnp.asarray(valid)))
    for i in range(len(chunk)):
      j = start + i
      p_len, r_len = len(prompts[j]), len(responses[j])
      out[j] = logp[i, p_len - 1:p_len - 1 + r_len]
  return out
