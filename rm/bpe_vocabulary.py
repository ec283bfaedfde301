"""Byte-level BPE vocabulary from a GGUF file's metadata, as a seqio Vocabulary.

The tokenizer is rebuilt with the ``tokenizers`` library from the file's own
tokens, merges and special-token ids, so the pipeline needs no ``tokenizer.json``
and no download. Chat models come with a chat template (Jinja, in the file):

* ``vocab.prompt_vocabulary`` encodes an HH transcript (``"\\n\\nHuman: ..."``
  ``"\\n\\nAssistant: ..."`` turns) as the model's chat messages, ending in the
  assistant's generation prompt;
* ``vocab.response_vocabulary`` encodes a response as the text of that
  assistant turn (leading whitespace dropped, as the template puts a newline
  before it); the EOS the packer appends is the template's end-of-turn token.

Tasks (``rm.tasks``) and the policy use these per field, so preference pairs,
policy samples and synthetic pairs stay plain HH text on disk.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from rm.tasks import Vocabulary, tf

CONTROL_TOKEN = 3  # GGUF token_type of special tokens (<|im_start|>, <|im_end|>, ...)
_TURN = re.compile(r"(?:^|\n\n)(System|Human|Assistant):")
_ROLE = {"System": "system", "Human": "user", "Assistant": "assistant"}


def hh_to_messages(transcript: str) -> list[dict]:
  """``"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:"`` → chat messages
  (user a, assistant b, user c). The empty last assistant turn is the one to be
  generated and is dropped; text without turn markers is one user message."""
  parts = _TURN.split(transcript)
  if len(parts) == 1:
    return [{"role": "user", "content": transcript.strip()}]
  messages = []
  lead = parts[0].strip()
  if lead:
    messages.append({"role": "user", "content": lead})
  for speaker, text in zip(parts[1::2], parts[2::2]):
    messages.append({"role": _ROLE[speaker], "content": text.strip()})
  if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
    messages.pop()
  return messages


def render_chat(template: str, messages: Sequence[dict], *, add_generation_prompt: bool) -> str:
  """Renders a Hugging Face style chat template (sandboxed Jinja, as transformers does)."""
  from jinja2.sandbox import ImmutableSandboxedEnvironment
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  return env.from_string(template).render(messages=list(messages),
                                          add_generation_prompt=add_generation_prompt)


def byte_level_bpe(tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int] = (),
                   pre_tokenizer: str = "gpt2"):
  """A ``tokenizers.Tokenizer`` as llama.cpp's 'gpt2' tokenizer model with the given
  pre-tokenizer type (``tokenizer.ggml.pre``); control tokens are special."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                             fuse_unk=False))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre_tokenizer == "smollm":
    # llama.cpp's 'smollm' pre-tokenizer: every digit is its own word, then GPT-2's split.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  elif pre_tokenizer in ("gpt2", "default"):
    tok.pre_tokenizer = byte_level
  else:
    raise ValueError(f"pre-tokenizer {pre_tokenizer!r} is not supported (gpt2, smollm)")
  tok.decoder = decoders.ByteLevel()
  specials = [t for t, kind in zip(tokens, token_types) if kind == CONTROL_TOKEN]
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
  return tok


class BPEVocabulary(Vocabulary):
  """A ``tokenizers`` tokenizer (byte-level BPE) as a seqio Vocabulary, plus the model's
  chat template. Build it with ``from_gguf`` or ``from_hf_directory``."""

  def __init__(self, tokenizer, *, eos_id: int, pad_id: int, unk_id: Optional[int],
               bos_id: Optional[int], chat_template: Optional[str] = None, name: str = "bpe"):
    super().__init__(extra_ids=0)
    self.name = name
    self._tokenizer = tokenizer
    self._size = tokenizer.get_vocab_size(with_added_tokens=True)
    self._eos, self._pad, self._unk, self._bos = eos_id, pad_id, unk_id, bos_id
    self.chat_template = chat_template
    self.prompt_vocabulary = ChatVocabulary(self, "prompt") if chat_template else self
    self.response_vocabulary = ChatVocabulary(self, "response") if chat_template else self

  @classmethod
  def from_gguf(cls, path: Optional[str] = None, *, use_chat_template: bool = True
                ) -> "BPEVocabulary":
    """The tokenizer a GGUF file carries (default: the installed SmolLM2-135M-Instruct)."""
    from policies.gguf_loader import CheckpointError, read_gguf_metadata
    meta = read_gguf_metadata(path)
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
      raise CheckpointError(f"{meta.path}: tokenizer.ggml.model: {model!r} is not supported "
                            "(only byte-level BPE, 'gpt2')")
    tokenizer = byte_level_bpe(meta.get("tokenizer.ggml.tokens"),
                               meta.get("tokenizer.ggml.merges"),
                               meta.get("tokenizer.ggml.token_type", ()),
                               meta.get("tokenizer.ggml.pre", "gpt2"))
    eos = int(meta.get("tokenizer.ggml.eos_token_id"))
    return cls(tokenizer, eos_id=eos,
               pad_id=int(meta.get("tokenizer.ggml.padding_token_id", eos)),
               unk_id=meta.get("tokenizer.ggml.unknown_token_id", None),
               bos_id=meta.get("tokenizer.ggml.bos_token_id", None),
               chat_template=(meta.get("tokenizer.chat_template", None)
                              if use_chat_template else None),
               name=meta.get("general.name", "gguf"))

  @classmethod
  def from_hf_directory(cls, path: str, *, use_chat_template: bool = True) -> "BPEVocabulary":
    """``tokenizer.json`` (+ ``tokenizer_config.json`` for special tokens, and the chat
    template from there or from ``chat_template.jinja``) of a Hugging Face model directory."""
    import json
    import os
    from tokenizers import Tokenizer
    tok_file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tok_file):
      raise FileNotFoundError(f"{tok_file}: missing (the model directory needs its tokenizer)")
    tokenizer = Tokenizer.from_file(tok_file)
    cfg_file = os.path.join(path, "tokenizer_config.json")
    cfg = json.load(open(cfg_file)) if os.path.exists(cfg_file) else {}

    def token_id(key):
      tok = cfg.get(key)
      tok = tok.get("content") if isinstance(tok, dict) else tok
      return tokenizer.token_to_id(tok) if tok else None

    eos = token_id("eos_token")
    if eos is None:
      raise ValueError(f"{cfg_file}: eos_token: missing; the reward model reads at EOS")
    pad = token_id("pad_token")
    template = cfg.get("chat_template")
    template_file = os.path.join(path, "chat_template.jinja")  # newer transformers save it here
    if template is None and os.path.exists(template_file):
      template = open(template_file, encoding="utf-8").read()
    return cls(tokenizer, eos_id=eos, pad_id=eos if pad is None else pad,
               unk_id=token_id("unk_token"), bos_id=token_id("bos_token"),
               chat_template=template if use_chat_template else None,
               name=os.path.basename(os.path.normpath(path)))

  @property
  def eos_id(self) -> int:
    return self._eos

  @property
  def pad_id(self) -> int:
    return self._pad

  @property
  def unk_id(self) -> Optional[int]:
    return self._unk

  @property
  def bos_id(self) -> Optional[int]:
    return self._bos

  @property
  def _base_vocab_size(self) -> int:
    return self._size

  def _encode(self, s: str) -> list[int]:
    return self._tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def token_text(self, token_id: int) -> str:
    """The text of one token as the table spells it, special tokens included."""
    return self._tokenizer.id_to_token(int(token_id)) or ""

  def _encode_tf(self, s):
    return _numpy_encode_tf(self._encode, s)

  def _decode_tf(self, ids):
    raise NotImplementedError("BPEVocabulary decodes in Python (decode), not in TensorFlow")

  def __eq__(self, other):
    return isinstance(other, BPEVocabulary) and (other.name, other._size, other.chat_template) == (
        self.name, self._size, self.chat_template)

  def __hash__(self):
    return hash((self.name, self._size))


class ChatVocabulary(Vocabulary):
  """One side of a chat-formatted example: ``prompt`` (HH transcript → chat turns ending
  in the generation prompt) or ``response`` (the assistant's text); decodes as ``base``."""

  def __init__(self, base: BPEVocabulary, role: str):
    if role not in ("prompt", "response"):
      raise ValueError(f"role must be 'prompt' or 'response', not {role!r}")
    super().__init__(extra_ids=0)
    self.base, self.role = base, role

  def format(self, text: str) -> str:
    """The chat text of a prompt or response. Text already rendered through the template
    (it holds the end-of-turn token, as the queries of OpenRLHF's PPO do) is kept as it is,
    and a response's own trailing end-of-turn is dropped: the packer appends the EOS."""
    # decode() drops special tokens, so the end-of-turn's text comes from the token table.
    end = self.base.token_text(self.base.eos_id)
    if self.role == "response":
      text = text.lstrip()
      return text[:-len(end)] if end and text.endswith(end) else text
    if end and end in text:
      return text
    return render_chat(self.base.chat_template, hh_to_messages(text), add_generation_prompt=True)

  def _encode(self, s: str) -> list[int]:
    return self.base.encode(self.format(s))

  def _decode(self, ids) -> str:
    return self.base.decode(ids)

  def _encode_tf(self, s):
    return _numpy_encode_tf(self._encode, s)

  def _decode_tf(self, ids):
    return self.base._decode_tf(ids)

  eos_id = property(lambda self: self.base.eos_id)
  pad_id = property(lambda self: self.base.pad_id)
  unk_id = property(lambda self: self.base.unk_id)
  bos_id = property(lambda self: self.base.bos_id)
  _base_vocab_size = property(lambda self: self.base._base_vocab_size)

  def __eq__(self, other):
    return isinstance(other, ChatVocabulary) and (other.base, other.role) == (self.base,
                                                                               self.role)

  def __hash__(self):
    return hash((hash(self.base), self.role))


def _numpy_encode_tf(encode, s):
  """A scalar string tensor → int32 ids, through Python (the tokenizer is not a TF op)."""
  def run(x):
    return np.asarray(encode(x.decode("utf-8")), np.int32)
  ids = tf.numpy_function(run, [s], tf.int32, stateful=False)
  ids.set_shape([None])
  return ids


def pretrained_vocabulary(path: Optional[str] = None, *, use_chat_template: bool = True
                          ) -> BPEVocabulary:
  """The vocabulary of ``policies.pretrained.PretrainedLM(path)``: a GGUF file's (default
  SmolLM2-135M-Instruct) or a Hugging Face directory's."""
  import os
  if path is not None and os.path.isdir(path):
    return BPEVocabulary.from_hf_directory(path, use_chat_template=use_chat_template)
  return BPEVocabulary.from_gguf(path, use_chat_template=use_chat_template)
