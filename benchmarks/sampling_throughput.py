"""Policy sampling throughput: westofn (JAX, KV cache, tiled prompt cache) vs Hugging Face generate.

Same Llama-architecture model size, same prompts (8 HH prompts, byte tokens,
left-padded), N=16 samples of 64 new tokens each, temperature 1, no top-k/top-p,
no early stop (EOS disabled on both sides so both generate exactly
8 x 16 x 64 tokens). Each side runs in its own child process of this script,
one after the other, and is timed after a warm-up call::

    python benchmarks/sampling_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
HH = os.path.join(REPO, "..", "shared", "data", "hh-rlhf", "helpful-base-test.jsonl.gz")
CFG = dict(d_model=128, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=384)
PROMPTS, SAMPLES, NEW_TOKENS, PROMPT_LEN = 8, 16, 64, 64


def prompts():
  from rm.data import read_preference_file
  from rm.tasks import byte_vocabulary
  vocab = byte_vocabulary()
  pairs, _ = read_preference_file(HH, on_error="skip", max_pairs=200)
  seen, out = set(), []
  for p in pairs:
    if p.prompt not in seen:
      seen.add(p.prompt)
      out.append(vocab.encode(p.prompt)[-PROMPT_LEN + 8 * len(out):])  # mixed lengths
    if len(out) == PROMPTS:
      return out, vocab


def run_westofn(repeats: int) -> dict:
  import numpy as np
  from flax import nnx

  from policies.sampling import sample_tokens
  from policies.transformer import Decoder, TransformerConfig, count_params
  ps, vocab = prompts()
  model = Decoder(TransformerConfig(vocab_size=vocab.vocab_size, **CFG), rngs=nnx.Rngs(0))
  ps = [np.asarray(p, np.int32) for p in ps]
  kw = dict(num_samples=SAMPLES, max_new_tokens=NEW_TOKENS, eos_id=-1, pad_id=vocab.pad_id,
            temperature=1.0, top_k=0, top_p=1.0, prompt_bucket=PROMPT_LEN)
  sample_tokens(model, ps, seed=0, **kw)  # compile
  t0 = time.perf_counter()
  for r in range(repeats):
    out = sample_tokens(model, ps, seed=r + 1, **kw)
  dt = (time.perf_counter() - t0) / repeats
  return {"tokens_per_sec": int(out.lengths.sum()) / dt, "params": count_params(model)}


def run_hf(repeats: int) -> dict:
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  ps, vocab = prompts()
  model = LlamaForCausalLM(LlamaConfig(
      vocab_size=vocab.vocab_size, hidden_size=CFG["d_model"], num_hidden_layers=CFG["num_layers"],
      num_attention_heads=CFG["num_heads"], num_key_value_heads=CFG["num_kv_heads"],
      intermediate_size=CFG["ffn_dim"], tie_word_embeddings=True, pad_token_id=0,
      bos_token_id=None, eos_token_id=None)).eval()
  width = max(len(p) for p in ps)
  ids = torch.zeros((len(ps), width), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, p in enumerate(ps):
    ids[i, width - len(p):] = torch.tensor(p)
    mask[i, width - len(p):] = 1
  kw = dict(attention_mask=mask, do_sample=True, num_return_sequences=SAMPLES,
            max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, temperature=1.0, top_k=0,
            top_p=1.0, pad_token_id=0, eos_token_id=None)
  with torch.no_grad():
    model.generate(ids, **kw)
    t0 = time.perf_counter()
    for _ in range(repeats):
      out = model.generate(ids, **kw)
  dt = (time.perf_counter() - t0) / repeats
  new = (out.shape[1] - width) * out.shape[0]
  return {"tokens_per_sec": new / dt, "params": sum(p.numel() for p in model.parameters())}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--_child", choices=["westofn", "hf"], default=None)
  args = parser.parse_args()
  if args._child:
    fn = run_westofn if args._child == "westofn" else run_hf
    print("RESULT " + json.dumps(fn(args.repeats)))
    return
  results = {}
  for who in ("hf", "westofn"):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", who,
                           "--repeats", str(args.repeats)], capture_output=True, text=True,
                          cwd=REPO)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not line:
      sys.exit(f"{who} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results[who] = json.loads(line[0][len("RESULT "):])
  print(f"sampling throughput: {PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} new tokens, "
        f"{os.cpu_count()} CPU cores")
  print(f"{'':10s} {'params':>10s} {'tokens/s':>10s}")
  for who, name in (("hf", "HF generate"), ("westofn", "westofn")):
    r = results[who]
    print(f"{name:12s} {r['params']:>8,d} {r['tokens_per_sec']:>10.0f}")
  print(f"ratio westofn / HF generate: "
        f"{results['westofn']['tokens_per_sec'] / results['hf']['tokens_per_sec']:.2f}x")


if __name__ == "__main__":
  main()
