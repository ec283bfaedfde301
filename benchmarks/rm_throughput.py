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

Each side runs in every configuration it has on this host (westofn in float32 and in
mixed precision; TRL with its default bf16 autocast and in float32; a plain PyTorch loop
over the same model and padded batches, float32 and bf16 autocast), alternating in child
processes; the ratio is the best westofn configuration over the best peer configuration,
printed last, under a header with the host's CPU flags, package versions and matmul peak
(each configuration's achieved FLOP/s is printed as a share of it). Usage::

    python benchmarks/rm_throughput.py                 # 0.5M-param model, 128 tokens
    python benchmarks/rm_throughput.py --size smollm2  # SmolLM2-135M shape, 256 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import time
import bench_common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HH = bench_common.hh_file("harmless-base-test.jsonl.gz")

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
      matmul_dtype=cfg.get("matmul_dtype"), attention_block=cfg.get("attention_block", 64)),
      seed=0)
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
          "nonembedding_params": count_params(model) - int(model.backbone.embedding.size),
          "pairs_per_step": n_pairs / cfg["steps"], "real_tokens_per_pair": real_tokens / n_pairs,
          "tokens_per_pair": cfg["steps"] * cfg["rows"] * cfg["row_len"] / n_pairs,
          "backend": jax.default_backend()}


def _hf_model(cfg: dict, vocab):
  from transformers import LlamaConfig, LlamaForSequenceClassification
  return LlamaForSequenceClassification(LlamaConfig(
      vocab_size=vocab.vocab_size, hidden_size=cfg["d_model"], num_hidden_layers=cfg["num_layers"],
      num_attention_heads=cfg["num_heads"], num_key_value_heads=cfg["num_kv_heads"],
      intermediate_size=cfg["ffn_dim"], max_position_embeddings=4096, num_labels=1,
      pad_token_id=0, tie_word_embeddings=True))


def _padded_tokens_per_pair(seqs, batch: int, eos: int) -> float:
  """Positions a padded peer computes per pair: chosen and rejected padded to the longest
  of their batch (batches of ``batch`` pairs in file order)."""
  total, pairs = 0, 0
  for i in range(0, len(seqs) - batch + 1, batch):
    chunk = seqs[i:i + batch]
    longest = max(len(p) + max(len(c), len(r)) + 1 for p, c, r in chunk)
    total += 2 * batch * longest
    pairs += batch
  return total / pairs


def _nonembedding(model) -> int:
  return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)


def run_trl(cfg: dict, bf16: bool) -> dict:
  import torch
  from datasets import Dataset
  from tokenizers import Tokenizer, models
  from transformers import PreTrainedTokenizerFast, TrainerCallback
  from trl import RewardConfig, RewardTrainer

  seqs, vocab = load_sequences(2000, cfg["seq_len"])
  eos = vocab.eos_id
  data = Dataset.from_dict({"chosen_ids": [p + c + [eos] for p, c, r in seqs],
                            "rejected_ids": [p + r + [eos] for p, c, r in seqs]})
  words = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"b{i}": i + 3 for i in range(256)}}
  tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, "<unk>")),
                                pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
  model = _hf_model(cfg, vocab)
  times = []

  class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
      times.append(time.perf_counter())

  steps = cfg["steps"] + 2
  # bf16=True is TRL's default (autocast); bf16=False trains in float32.
  args = RewardConfig(output_dir="/tmp/trl_bench", per_device_train_batch_size=cfg["trl_batch"],
                      max_steps=steps, logging_steps=10_000, save_strategy="no", report_to=[],
                      max_length=cfg["seq_len"], use_cpu=True, dataloader_num_workers=0,
                      disable_tqdm=True, learning_rate=1e-3, bf16=bf16)
  trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[Clock()])
  trainer.train()
  dt = times[-1] - times[1]
  return {"pairs_per_sec": cfg["trl_batch"] * (len(times) - 2) / dt,
          "params": sum(p.numel() for p in model.parameters()),
          "nonembedding_params": _nonembedding(model), "pairs_per_step": cfg["trl_batch"],
          "tokens_per_pair": _padded_tokens_per_pair(seqs, cfg["trl_batch"], eos),
          "torch_threads": torch.get_num_threads()}


def run_torch(cfg: dict, bf16: bool, device: str = "cpu") -> dict:
  """The same model and padded batches in a plain PyTorch loop: AdamW, Bradley–Terry loss,
  chosen and rejected in one forward pass, optionally under bf16 autocast."""
  import torch
  import torch.nn.functional as F
  seqs, vocab = load_sequences(2000, cfg["seq_len"])
  eos, b = vocab.eos_id, cfg["trl_batch"]
  model = _hf_model(cfg, vocab).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
  batches = []
  for i in range(0, (cfg["steps"] + 2) * b, b):
    rows = [p + c + [eos] for p, c, r in seqs[i:i + b]] + [p + r + [eos] for p, c, r in
                                                           seqs[i:i + b]]
    ids = torch.zeros((2 * b, max(map(len, rows))), dtype=torch.long)
    for j, row in enumerate(rows):
      ids[j, :len(row)] = torch.tensor(row)
    batches.append((ids.to(device), (ids != 0).long().to(device)))
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  for step, (ids, mask) in enumerate(batches):
    if step == 2:
      sync()
      t0 = time.perf_counter()
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
      rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
    loss = -F.logsigmoid(rewards[:b] - rewards[b:]).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
  sync()
  dt = time.perf_counter() - t0
  return {"pairs_per_sec": b * cfg["steps"] / dt,
          "params": sum(p.numel() for p in model.parameters()),
          "nonembedding_params": _nonembedding(model), "pairs_per_step": b,
          "tokens_per_pair": sum(ids.numel() for ids, _ in batches[2:]) / (b * cfg["steps"]),
          "torch_threads": torch.get_num_threads()}


# Every configuration each side can run; the best of each side makes the ratio.
CONFIGS = {"westofn float32": ("westofn", None), "westofn mixed bf16": ("westofn", "bfloat16"),
           "TRL bf16 (default)": ("trl", True), "TRL float32": ("trl", False),
           "PyTorch loop float32": ("torch", False), "PyTorch loop bf16 autocast": ("torch", True)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--repeats", type=int, default=3,
                      help="runs of each configuration, alternating; the median is reported")
  parser.add_argument("--out", default=None, help="also write the output here")
  parser.add_argument("--_child", default=None)
  args = parser.parse_args()
  cfg = dict(SIZES[args.size])
  if args.steps:
    cfg["steps"] = args.steps
  if args._child:
    if bench_common.maybe_peak_child(args._child):
      return
    side, option = CONFIGS[args._child]
    if side == "westofn":
      result = run_westofn(dict(cfg, matmul_dtype=option))
    else:
      result = (run_trl if side == "trl" else run_torch)(cfg, option)
    print("RESULT " + json.dumps(result))
    return
  script = os.path.abspath(__file__)
  peak = bench_common.matmul_peak(script)
  runs = bench_common.alternate(script, list(CONFIGS), args.repeats, lambda c: [
      "--size", args.size, "--steps", cfg["steps"], "--_child", c])
  res = {c: bench_common.summarize(rs, "pairs_per_sec") for c, rs in runs.items()}
  lines = [bench_common.host_header(),
           f"host matmul peak (2048^3, best of JAX and PyTorch): float32 "
           f"{peak['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s",
           f"reward-model training throughput, size={args.size}, seq_len={cfg['seq_len']}, "
           f"{cfg['steps']} timed steps, {args.repeats} runs of each configuration alternating "
           "in child processes", "",
           f"{'configuration':28s} {'params':>11s} {'pairs/step':>10s} {'tokens/pair':>11s} "
           f"{'pairs/s median':>15s} {'min-max':>15s} {'GFLOP/s':>8s} {'of peak':>8s}"]
  for c, r in res.items():
    dtype = "bfloat16" if ("bf16" in c) else "float32"
    nonembed = r.get("nonembedding_params", r["params"])
    flops = 6 * nonembed * r["tokens_per_pair"] * r["pairs_per_sec"]
    lines.append(f"{c:28s} {r['params']:>11,d} {r['pairs_per_step']:>10.1f} "
                 f"{r['tokens_per_pair']:>11.0f} {r['pairs_per_sec']:>15.2f} "
                 f"{r['min']:>7.2f}-{r['max']:<7.2f} {flops / 1e9:>8.1f} "
                 f"{flops / peak[dtype]:>8.1%}")
  best = lambda side: max((c for c in res if CONFIGS[c][0] in side),
                          key=lambda c: res[c]["pairs_per_sec"])
  ours, peer = best(("westofn",)), best(("trl", "torch"))
  w = res["westofn float32"]
  lines += ["",
            "tokens/pair: the positions each side computes per pair (westofn: its row slots, "
            f"{w['tokens_per_pair']:.0f}, holding {w['real_tokens_per_pair']:.0f} real tokens with "
            "the prompt once; the peers: chosen and "
            "rejected padded to the longest of their batch). GFLOP/s: 6 x non-embedding "
            "parameters x tokens computed per second (attention's own FLOPs left out), against "
            "the host's matmul peak in the configuration's matmul dtype.",
            f"best westofn configuration: {ours} ({res[ours]['pairs_per_sec']:.2f} pairs/s); "
            f"best peer configuration: {peer} ({res[peer]['pairs_per_sec']:.2f} pairs/s)",
            f"ratio westofn / best peer configuration: "
            f"{res[ours]['pairs_per_sec'] / res[peer]['pairs_per_sec']:.2f}x"]
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
