"""Policy sampling throughput: westofn (JAX, KV cache, tiled prompt cache) vs Hugging Face
``generate``, both returning each sampled token's log-probability (HF with
``output_scores`` and ``compute_transition_scores``).

Same model, same prompts (HH prompts, left-padded), temperature 1 with no top-k/top-p, no
early stop (EOS disabled on both sides, so both generate exactly prompts x N x new tokens)::

    python benchmarks/sampling_throughput.py                 # 0.43M-param Llama shape,
                                                             # 8 prompts x 16 samples x 64 tokens
    python benchmarks/sampling_throughput.py --size smollm2  # SmolLM2-135M-Instruct (its real
                                                             # GGUF weights and chat template),
                                                             # 8 prompts x 8 samples x 64 tokens

Each side runs in float32 and with bf16 (westofn: mixed-precision matmuls; HF: the model in
bfloat16), every configuration in its own child process, alternating, repeated; medians
with min-max, under a header with the host's CPU flags and package versions; the ratio of
the best configuration of each side is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import bench_common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HH = bench_common.hh_file("helpful-base-test.jsonl.gz")
SIZES = {
    "tiny": dict(model=dict(d_model=128, num_layers=2, num_heads=4, num_kv_heads=2,
                            ffn_dim=384), prompts=8, samples=16, new_tokens=64, prompt_len=64,
                 calls=3),
    "smollm2": dict(model=None, prompts=8, samples=8, new_tokens=64, prompt_len=None, calls=1),
}
CONFIGS = {"westofn float32": ("westofn", False), "westofn mixed bf16": ("westofn", True),
           "HF generate float32": ("hf", False), "HF generate bfloat16": ("hf", True)}


def prompts(size: dict):
  """Token ids of distinct HH prompts: bytes, left-truncated to mixed lengths (tiny), or
  SmolLM2's chat-template rendering (smollm2); and the vocabulary."""
  from rm.data import read_preference_file
  pairs, _ = read_preference_file(HH, on_error="skip", max_pairs=2000)
  if size["model"] is None:
    from rm.bpe_vocabulary import pretrained_vocabulary
    vocab = pretrained_vocabulary()
    encode = vocab.prompt_vocabulary.encode
  else:
    from rm.tasks import byte_vocabulary
    vocab = byte_vocabulary()
    encode = vocab.encode
  seen, out = set(), []
  for p in pairs:
    if p.prompt in seen or len(p.prompt) > 600:
      continue
    seen.add(p.prompt)
    ids = list(encode(p.prompt))
    if size["prompt_len"]:
      ids = ids[-size["prompt_len"] + 8 * len(out):]   # mixed lengths
    out.append(ids)
    if len(out) == size["prompts"]:
      return out, vocab
  raise SystemExit("not enough distinct HH prompts")


def run_westofn(size: dict, bf16: bool) -> dict:
  import numpy as np
  from flax import nnx

  from policies.sampling import sample_tokens
  from policies.transformer import Decoder, TransformerConfig, count_params
  ps, vocab = prompts(size)
  matmul = "bfloat16" if bf16 else None
  if size["model"] is None:
    from policies.pretrained import PretrainedLM
    model = PretrainedLM(matmul_dtype=matmul).load()
  else:
    model = Decoder(TransformerConfig(matmul_dtype=matmul,
                                      **{"vocab_size": vocab.vocab_size, **size["model"]}),
                    rngs=nnx.Rngs(0))
  ps = [np.asarray(p, np.int32) for p in ps]
  kw = dict(num_samples=size["samples"], max_new_tokens=size["new_tokens"], eos_id=-1,
            pad_id=vocab.pad_id, temperature=1.0, top_k=0, top_p=1.0, prompt_bucket=64)
  sample_tokens(model, ps, seed=0, **kw)  # compile
  t0 = time.perf_counter()
  for r in range(size["calls"]):
    out = sample_tokens(model, ps, seed=r + 1, **kw)
  dt = (time.perf_counter() - t0) / size["calls"]
  assert np.isfinite(out.logprobs[out.logprobs != 0]).all()
  return {"tokens_per_sec": int(out.lengths.sum()) / dt, "params": count_params(model)}


def run_hf(size: dict, bf16: bool, device: str = "cpu") -> dict:
  import torch
  ps, vocab = prompts(size)
  dtype = torch.bfloat16 if bf16 else torch.float32
  if size["model"] is None:
    from transformers import AutoModelForCausalLM

    from policies.gguf_loader import smollm2_path
    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                                 gguf_file=os.path.basename(path), dtype=dtype)
  else:
    from transformers import LlamaConfig, LlamaForCausalLM
    m = size["model"]
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=m.get("vocab_size", vocab.vocab_size), hidden_size=m["d_model"],
        num_hidden_layers=m["num_layers"],
        num_attention_heads=m["num_heads"], num_key_value_heads=m["num_kv_heads"],
        intermediate_size=m["ffn_dim"], tie_word_embeddings=True, pad_token_id=0,
        bos_token_id=None, eos_token_id=None)).to(dtype)
  model.to(device).eval()
  pad = vocab.pad_id
  width = max(len(p) for p in ps)
  ids = torch.full((len(ps), width), pad, dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, p in enumerate(ps):
    ids[i, width - len(p):] = torch.tensor(p)
    mask[i, width - len(p):] = 1
  ids, mask = ids.to(device), mask.to(device)
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  kw = dict(attention_mask=mask, do_sample=True, num_return_sequences=size["samples"],
            max_new_tokens=size["new_tokens"], min_new_tokens=size["new_tokens"],
            temperature=1.0, top_k=0, top_p=1.0, pad_token_id=pad, eos_token_id=None,
            output_scores=True, return_dict_in_generate=True)

  def generate():
    out = model.generate(ids, **kw)
    # each sampled token's log-probability under the model, as westofn returns them
    logprobs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    return out, logprobs

  with torch.no_grad():
    generate()
    sync()
    t0 = time.perf_counter()
    for _ in range(size["calls"]):
      out, logprobs = generate()
    sync()
  dt = (time.perf_counter() - t0) / size["calls"]
  assert torch.isfinite(logprobs).all()
  new = (out.sequences.shape[1] - width) * out.sequences.shape[0]
  return {"tokens_per_sec": new / dt, "params": sum(p.numel() for p in model.parameters())}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--repeats", type=int, default=3,
                      help="runs of each configuration, alternating; the median is reported")
  parser.add_argument("--out", default=None, help="also write the output here")
  parser.add_argument("--_child", default=None)
  args = parser.parse_args()
  size = SIZES[args.size]
  if args._child:
    side, bf16 = CONFIGS[args._child]
    result = (run_westofn if side == "westofn" else run_hf)(size, bf16)
    print("RESULT " + json.dumps(result))
    return
  runs = bench_common.alternate(os.path.abspath(__file__), list(CONFIGS), args.repeats,
                                lambda c: ["--size", args.size, "--_child", c])
  res = {c: bench_common.summarize(rs, "tokens_per_sec") for c, rs in runs.items()}
  lines = [bench_common.host_header(),
           f"sampling throughput, size={args.size}: {size['prompts']} HH prompts x "
           f"{size['samples']} samples x {size['new_tokens']} new tokens, temperature 1, "
           "per-token log-probabilities returned on both sides; "
           f"{args.repeats} runs of each configuration alternating in child processes", "",
           f"{'configuration':22s} {'params':>12s} {'tokens/s median':>16s} {'min-max':>17s}"]
  for c, r in res.items():
    lines.append(f"{c:22s} {r['params']:>12,d} {r['tokens_per_sec']:>16.0f} "
                 f"{r['min']:>8.0f}-{r['max']:<8.0f}")
  best = lambda side: max((c for c in res if CONFIGS[c][0] == side),
                          key=lambda c: res[c]["tokens_per_sec"])
  ours, peer = best("westofn"), best("hf")
  lines += ["", f"best westofn configuration: {ours}; best peer configuration: {peer}",
            f"ratio westofn / best HF generate configuration: "
            f"{res[ours]['tokens_per_sec'] / res[peer]['tokens_per_sec']:.2f}x"]
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
