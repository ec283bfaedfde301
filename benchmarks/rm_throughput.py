"""Reward-model training throughput: westofn (JAX, packed shared-prompt rows) vs TRL.

Same data, same architecture size, same sequence length, run one after the
other in child processes of this script (so they never share the CPU):

* data: HH harmless pairs, byte tokens; each side sees exactly the sequences
  ``prompt + response + EOS`` of at most ``--seq_len`` tokens (the prompt is
  left-truncated to fit), chosen and rejected;
* TRL: ``trl.RewardTrainer`` on ``LlamaForSequenceClassification`` (PyTorch,
  CPU), ``--trl_batch`` pairs per step, padded per batch as TRL does;
* westofn: ``rm.training.train_step`` on packed rows in which the prompt is
  computed once per pair and pairs sit side by side without padding.

Prints pairs/second for both and the ratio. Usage::

    python benchmarks/rm_throughput.py                 # 0.5M-param model, 128 tokens
    python benchmarks/rm_throughput.py --size smollm2  # SmolLM2-135M shape, 256 tokens
    python benchmarks/rm_throughput.py --size smollm2 --matmul_dtype bfloat16
        # westofn in mixed precision, as TRL's default bf16 autocast
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
HH = os.path.join(REPO, "..", "shared", "data", "hh-rlhf", "harmless-base-test.jsonl.gz")

# Both sides train on the same number of pairs a step. A pair's packed length
# (prompt once + both responses + 2 EOS) is at most seq_len + seq_len / 2, so
# westofn gives each pair a row of that length: packing two pairs into one
# longer row would also compute attention between the pairs (masked, but paid for).
SIZES = {
    # ~0.46M parameters with the 259-token byte vocabulary.
    "tiny": dict(d_model=128, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=384,
                 seq_len=128, trl_batch=32, rows=32, row_len=192, pairs_per_row=1, steps=60),
    # SmolLM2-135M's shape (30 layers, 576 wide, 9/3 heads, FFN 1536); byte vocabulary.
    "smollm2": dict(d_model=576, num_layers=30, num_heads=9, num_kv_heads=3, ffn_dim=1536,
                    seq_len=256, trl_batch=8, rows=8, row_len=384, pairs_per_row=1, steps=4),
}


def load_sequences(n: int, seq_len: int):
  """[(prompt_ids, chosen_ids, rejected_ids)] with prompt+response+EOS <= seq_len each."""
  from rm.data import read_preference_file
  from rm.tasks import byte_vocabulary
  vocab = byte_vocabulary()
  pairs, _ = read_preference_file(HH, on_error="skip")
  out = []
  cap = seq_len // 2
  for p in pairs[:n]:
    c = vocab.encode(p.chosen)[:cap - 1]
    r = vocab.encode(p.rejected)[:cap - 1]
    room = seq_len - 1 - max(len(c), len(r))
    prompt = vocab.encode(p.prompt)[-room:]
    out.append((prompt, c, r))
  return out, vocab


def run_westofn(cfg: dict) -> dict:
  import jax
  import numpy as np

  from policies.transformer import TransformerConfig, count_params
  from rm.model import make_reward_model
  from rm.packing import pack_pairs
  from rm.tasks import TokenizedPair
  from rm.training import LossConfig, _to_device, make_optimizer, new_train_metrics, train_step
  from flax import nnx

  seqs, vocab = load_sequences(2000, cfg["seq_len"])
  pairs = [TokenizedPair(np.asarray(p), np.asarray(c), np.asarray(r)) for p, c, r in seqs]
  batches = pack_pairs(pairs, rows=cfg["rows"], row_len=cfg["row_len"],
                       pairs_per_row=cfg["pairs_per_row"], max_response_len=cfg["seq_len"],
                       eos_id=vocab.eos_id)
  model = make_reward_model(TransformerConfig(
      vocab_size=vocab.vocab_size, d_model=cfg["d_model"], num_layers=cfg["num_layers"],
      num_heads=cfg["num_heads"], num_kv_heads=cfg["num_kv_heads"], ffn_dim=cfg["ffn_dim"],
      matmul_dtype=cfg.get("matmul_dtype")), seed=0)
  opt = make_optimizer(model, total_steps=1000)
  metrics = new_train_metrics()
  device_batches = [_to_device(b, None) for b in batches[:cfg["steps"] + 2]]
  for b in device_batches[:2]:  # compile + warm up
    train_step(model, opt, metrics, b, LossConfig())
  jax.block_until_ready(nnx.state(model))
  t0 = time.perf_counter()
  for b in device_batches[2:]:
    train_step(model, opt, metrics, b, LossConfig())
  jax.block_until_ready(nnx.state(model))
  dt = time.perf_counter() - t0
  n_pairs = sum(b.num_pairs for b in batches[2:cfg["steps"] + 2])
  real_tokens = sum(int((b.group > 0).sum()) for b in batches[2:cfg["steps"] + 2])
  return {"pairs_per_sec": n_pairs / dt, "params": count_params(model),
          "pairs_per_step": n_pairs / cfg["steps"], "tokens_per_pair": real_tokens / n_pairs,
          "slots_per_pair": cfg["steps"] * cfg["rows"] * cfg["row_len"] / n_pairs,
          "backend": jax.default_backend()}


def run_trl(cfg: dict) -> dict:
  import torch
  from datasets import Dataset
  from tokenizers import Tokenizer, models
  from transformers import (LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast,
                            TrainerCallback)
  from trl import RewardConfig, RewardTrainer

  seqs, vocab = load_sequences(2000, cfg["seq_len"])
  eos = vocab.eos_id
  data = Dataset.from_dict({"chosen_ids": [p + c + [eos] for p, c, r in seqs],
                            "rejected_ids": [p + r + [eos] for p, c, r in seqs]})
  words = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"b{i}": i + 3 for i in range(256)}}
  tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, "<unk>")),
                                pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
  model = LlamaForSequenceClassification(LlamaConfig(
      vocab_size=vocab.vocab_size, hidden_size=cfg["d_model"], num_hidden_layers=cfg["num_layers"],
      num_attention_heads=cfg["num_heads"], num_key_value_heads=cfg["num_kv_heads"],
      intermediate_size=cfg["ffn_dim"], max_position_embeddings=4096, num_labels=1,
      pad_token_id=0, tie_word_embeddings=True))
  times = []

  class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
      times.append(time.perf_counter())

  steps = cfg["steps"] + 2
  args = RewardConfig(output_dir="/tmp/trl_bench", per_device_train_batch_size=cfg["trl_batch"],
                      max_steps=steps, logging_steps=10_000, save_strategy="no", report_to=[],
                      max_length=cfg["seq_len"], use_cpu=True, dataloader_num_workers=0,
                      disable_tqdm=True, learning_rate=1e-3)
  trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[Clock()])
  trainer.train()
  dt = times[-1] - times[1]
  return {"pairs_per_sec": cfg["trl_batch"] * (len(times) - 2) / dt,
          "params": sum(p.numel() for p in model.parameters()),
          "pairs_per_step": cfg["trl_batch"], "torch_threads": torch.get_num_threads()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--repeats", type=int, default=3,
                      help="runs of each side, alternating; the median is reported")
  parser.add_argument("--matmul_dtype", default=None,
                      help="westofn's TransformerConfig.matmul_dtype (bfloat16: mixed precision)")
  parser.add_argument("--_child", choices=["westofn", "trl"], default=None)
  args = parser.parse_args()
  cfg = dict(SIZES[args.size])
  if args.steps:
    cfg["steps"] = args.steps
  cfg["matmul_dtype"] = args.matmul_dtype
  if args._child:
    result = run_westofn(cfg) if args._child == "westofn" else run_trl(cfg)
    print("RESULT " + json.dumps(result))
    return
  runs = {"trl": [], "westofn": []}
  for _ in range(args.repeats):
    for who in ("trl", "westofn"):
      cmd = [sys.executable, os.path.abspath(__file__), "--size", args.size, "--_child", who,
             "--steps", str(cfg["steps"])]
      if args.matmul_dtype:
        cmd += ["--matmul_dtype", args.matmul_dtype]
      proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if proc.returncode or not line:
        sys.exit(f"{who} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
      runs[who].append(json.loads(line[0][len("RESULT "):]))
  results = {}
  for who, rs in runs.items():
    rs = sorted(rs, key=lambda r: r["pairs_per_sec"])
    results[who] = dict(rs[len(rs) // 2], all=[round(r["pairs_per_sec"], 1) for r in rs])
  print(f"reward-model training throughput, size={args.size}, seq_len={cfg['seq_len']}, "
        f"{os.cpu_count()} CPU cores; westofn matmuls: "
        + ("bfloat16 operands, float32 accumulation (mixed precision)" if args.matmul_dtype
           == "bfloat16" else "float32"))
  print(f"{'':10s} {'params':>10s} {'pairs/step':>11s} {'pairs/s (median)':>17s}  runs")
  for who in ("trl", "westofn"):
    r = results[who]
    print(f"{who:10s} {r['params']:>10,d} {r['pairs_per_step']:>11.1f} "
          f"{r['pairs_per_sec']:>17.2f}  {r['all']}")
  print(f"ratio westofn / TRL RewardTrainer: "
        f"{results['westofn']['pairs_per_sec'] / results['trl']['pairs_per_sec']:.2f}x")
  w = results["westofn"]
  print(f"(westofn computes {w['tokens_per_pair']:.0f} real tokens per pair, the prompt once, "
        f"in {w['slots_per_pair']:.0f} row slots; TRL pads chosen and rejected to the longest "
        "in its batch)")


if __name__ == "__main__":
  main()
