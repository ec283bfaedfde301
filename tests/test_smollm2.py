"""SmolLM2-135M-Instruct from its GGUF file: weights, tokenizer, chat template, sampler.

The reference is ``transformers`` reading the same GGUF (its own dequantisation
and Q/K un-permutation), run in PyTorch on the CPU.
"""

import glob
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from policies.gguf_loader import (CheckpointError, load_gguf_llama, smollm2_path,
                                  unpermute_rotary_rows)
from policies.policy import Policy
from policies.transformer import causal_mask
from rm.bpe_vocabulary import BPEVocabulary, hh_to_messages, pretrained_vocabulary
from rm.data import read_preference_files

pytestmark = pytest.mark.slow   # end-to-end or real models: see pytest.ini


@pytest.fixture(scope="module")
def ours():
  return load_gguf_llama()


@pytest.fixture(scope="module")
def vocab():
  return BPEVocabulary.from_gguf()


def _reference_location():
  path = smollm2_path()
  return os.path.dirname(path), dict(gguf_file=os.path.basename(path))


@pytest.fixture(scope="module")
def reference_model():
  transformers.utils.logging.disable_progress_bar()
  where, kw = _reference_location()
  return transformers.AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32,
                                                           **kw).eval()


@pytest.fixture(scope="module")
def reference_tokenizer():
  where, kw = _reference_location()
  return transformers.AutoTokenizer.from_pretrained(where, **kw)


@pytest.fixture(scope="module")
def hh_pairs(hh_dir):
  pairs, _ = read_preference_files(sorted(glob.glob(os.path.join(hh_dir, "*.jsonl.gz"))),
                                   on_error="skip")
  return pairs[::50]  # ~170 pairs from all four files


def test_config_comes_from_the_file_metadata(ours):
  cfg = ours.cfg
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_dim,
          cfg.vocab_size, cfg.rope_base, cfg.tie_embeddings) == (
              30, 576, 9, 3, 1536, 49152, 1e5, True)


def test_logits_equal_transformers_on_the_dequantised_model(ours, reference_model):
  tokens = np.random.default_rng(0).integers(0, 49152, (2, 40))
  with torch.no_grad():
    want = reference_model(torch.tensor(tokens)).logits.numpy()
  pos = jnp.broadcast_to(jnp.arange(40), (2, 40))
  got = np.asarray(ours.logits(ours(jnp.asarray(tokens), pos,
                                    causal_mask(jnp.ones((2, 40), bool)))))
  print(f"max |logit difference| = {np.abs(got - want).max():.2e} "
        f"(logits up to {np.abs(want).max():.1f})")
  np.testing.assert_allclose(got, want, atol=5e-4, rtol=1e-4)


def test_unpermute_inverts_llama_cpp_permute():
  def llama_cpp_permute(w, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))
  w = np.random.default_rng(0).normal(size=(3 * 8, 5))
  np.testing.assert_array_equal(unpermute_rotary_rows(llama_cpp_permute(w, 3), 3), w)
  assert not np.array_equal(llama_cpp_permute(w, 3), w)


def _smollm2_reference_tokenizer(tokenizer):
  """transformers' GGUF conversion drops the file's ``tokenizer.ggml.pre = 'smollm'``
  (digits split one by one before the GPT-2 split, as in llama.cpp and in SmolLM2's own
  tokenizer.json); put that pre-tokenizer back so the reference is SmolLM2's tokenizer."""
  from tokenizers import Tokenizer, pre_tokenizers
  backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy
  backend.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  return backend


def test_token_ids_equal_the_reference_tokenizer_on_hh_texts(vocab, reference_tokenizer,
                                                            hh_pairs):
  texts = [t for p in hh_pairs for t in (p.prompt, p.chosen, p.rejected)]
  without_digits = [t for t in texts if not any(c.isdigit() for c in t)]
  for t in without_digits:  # where the pre-tokenizers agree, transformers as it comes
    assert vocab.encode(t) == reference_tokenizer(t, add_special_tokens=False).input_ids, t[:80]
  backend = _smollm2_reference_tokenizer(reference_tokenizer)
  mismatches = [t[:80] for t in texts
                if vocab.encode(t) != backend.encode(t, add_special_tokens=False).ids]
  assert len(texts) > 400 and not mismatches, mismatches[:3]
  print(f"token ids equal on {len(texts)} HH texts ({len(without_digits)} also equal to the "
        "unmodified transformers GGUF tokenizer)")
  for t in texts[:60]:
    assert vocab.decode(vocab.encode(t)) == t


def test_chat_template_matches_transformers_apply_chat_template(vocab, reference_tokenizer,
                                                               hh_pairs):
  for p in hh_pairs[:40]:
    messages = hh_to_messages(p.prompt)
    want = reference_tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                   tokenize=False)
    assert vocab.prompt_vocabulary.format(p.prompt) == want
  ids = vocab.prompt_vocabulary.encode(hh_pairs[0].prompt)
  # <|im_start|> (the file's BOS) opens the system turn and the generation prompt.
  tail = [vocab.bos_id] + vocab.encode("assistant\n")
  assert ids[0] == vocab.bos_id and ids[-len(tail):] == tail
  assert vocab.response_vocabulary.encode(" Sure.") == vocab.encode("Sure.")
  # Text already rendered through the template (OpenRLHF's PPO sends its queries so) is not
  # rendered twice, and a response's own end-of-turn is the EOS the packer appends anyway.
  rendered = vocab.prompt_vocabulary.format(hh_pairs[0].prompt)
  assert vocab.prompt_vocabulary.encode(rendered) == ids
  end = vocab.token_text(vocab.eos_id)
  assert end == "<|im_end|>" and vocab.decode([vocab.eos_id]) == ""   # decode drops it
  assert vocab.response_vocabulary.encode(" Sure." + end) == vocab.encode("Sure.")


def test_vocabulary_from_a_hugging_face_directory(vocab, reference_tokenizer, hh_pairs, tmp_path):
  reference_tokenizer.save_pretrained(tmp_path)   # tokenizer.json + tokenizer_config.json
  hf_vocab = pretrained_vocabulary(str(tmp_path))
  assert (hf_vocab.eos_id, hf_vocab.vocab_size) == (vocab.eos_id, vocab.vocab_size)
  for p in hh_pairs[:20]:
    assert hf_vocab.prompt_vocabulary.format(p.prompt) == vocab.prompt_vocabulary.format(p.prompt)
    if not any(c.isdigit() for c in p.chosen):  # the saved reference splits digits as GPT-2
      assert hf_vocab.encode(p.chosen) == vocab.encode(p.chosen)


def test_hh_to_messages():
  assert hh_to_messages("\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: why?\n\nAssistant:") == [
      {"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"},
      {"role": "user", "content": "why?"}]
  assert hh_to_messages("just a question") == [{"role": "user", "content": "just a question"}]


def test_greedy_samples_equal_transformers_generate(ours, vocab, reference_model, hh_pairs):
  policy = Policy(ours, vocab, max_new_tokens=20, temperature=0.0)
  prompts = [hh_pairs[i].prompt for i in (1, 7)]
  samples = policy.sample(prompts, 1, seed=0)
  for prompt, (sample,) in zip(prompts, samples):
    ids = torch.tensor([vocab.prompt_vocabulary.encode(prompt)])
    with torch.no_grad():
      want = reference_model.generate(ids, max_new_tokens=20, do_sample=False,
                            eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id)[0, ids.shape[1]:]
    assert list(sample.token_ids) == want.tolist()[:len(sample.token_ids)]
    print(f"greedy: {len(sample.token_ids)} tokens equal to transformers' generate")
    assert sample.text and np.all(sample.token_logprobs <= 0)


def test_not_a_gguf_file_is_a_clear_error(tmp_path):
  bad = tmp_path / "model.gguf"
  bad.write_bytes(b"not a gguf file at all")
  with pytest.raises(CheckpointError, match="model.gguf: not a readable GGUF file"):
    load_gguf_llama(str(bad))


def test_lm_judge_reads_the_answer_transformers_gives(ours, vocab, reference_model,
                                                      reference_tokenizer, hh_pairs):
  """SmolLM2 as an AI-feedback judge: the comparison prompt is the model's chat template
  (system and user turns, then the assistant's turn), "A" and "B" are one token each, and
  log P(A) − log P(B) at the answer position is transformers' on the same text."""
  from rm.lm_judge import LMJudge
  judge = LMJudge(ours, vocab, max_len=512)
  p = hh_pairs[3]
  verdicts = judge.judge([p.prompt], [p.chosen], [p.rejected])
  for (first, second), got in (((p.chosen, p.rejected), verdicts.logit_ab[0]),
                               ((p.rejected, p.chosen), verdicts.logit_ba[0])):
    text = judge.text(p.prompt, first, second)
    messages = [{"role": "system", "content": judge.prompt.system},
                {"role": "user", "content": text.split("<|im_start|>user\n", 1)[1]
                 .split("<|im_end|>", 1)[0]}]
    assert text == reference_tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                           tokenize=False)
    ids, cut = judge.context_ids(p.prompt, first, second)
    assert not cut and list(ids) == reference_tokenizer(text, add_special_tokens=False).input_ids
    with torch.no_grad():
      logp = torch.log_softmax(reference_model(torch.tensor(ids[None])).logits[0, -1], -1)
    a, b = (reference_tokenizer.convert_tokens_to_ids(t) for t in ("A", "B"))
    assert list(judge.label_ids) == [a, b]
    np.testing.assert_allclose(got, float(logp[a] - logp[b]), atol=2e-3)
