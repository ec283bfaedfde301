"""westofn's training step computes what TRL's RewardTrainer computes: with the same weights (a
Hugging Face sequence-classification checkpoint the test writes) and the same batch of pairs,
the rewards, the pairwise loss (Bradley–Terry; with a margin and reward centring) and the
gradient's norm equal ``RewardTrainer.compute_loss`` and its backward pass to float32 tolerance.

westofn packs several pairs a row (the prompt once, the two responses side by side); TRL pads
each chosen and rejected sequence on its own. Equal numbers here mean the packing, the reward
position (the last token, EOS), the head and the loss are the same function.
"""

import numpy as np
import optax
import pytest
import torch
import transformers
from datasets import Dataset
from tokenizers import Tokenizer, models
from trl import RewardConfig, RewardTrainer

from policies.pretrained import PretrainedLM
from rm.packing import pack_pairs
from rm.tasks import TokenizedPair, byte_vocabulary
from rm.training import LossConfig, loss_and_grads
from westofn import gold_tasks
from westofn.stages.reward_model import build_reward_model


def _write_checkpoint(path, vocab_size: int):
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, intermediate_size=96, rms_norm_eps=1e-5,
      max_position_embeddings=512, num_labels=1, pad_token_id=0, eos_token_id=1)
  model = transformers.LlamaForSequenceClassification(cfg)
  with torch.no_grad():   # a head of a trained model's scale, so rewards differ by pair
    model.score.weight.normal_(0.0, 1.0)
  model.save_pretrained(str(path))


def _pairs(vocab, n: int, *, margins: bool) -> list[TokenizedPair]:
  pairs = gold_tasks.make_pairs(gold_tasks.get_task("letters"), n, seed=5, beta=2.0)
  rng = np.random.default_rng(1)
  return [TokenizedPair(np.asarray(vocab.encode(p.prompt), np.int32),
                        np.asarray(vocab.encode(p.chosen), np.int32),
                        np.asarray(vocab.encode(p.rejected), np.int32),
                        margin=float(rng.uniform(0, 1)) if margins else 0.0)
          for p in pairs]


def _trl_trainer(hf_dir, tmp_path, vocab, pairs, *, margins: bool, centering: float):
  words = {"<pad>": 0, "</s>": 1, "<unk>": 2,
           **{f"b{i}": i + 3 for i in range(vocab.vocab_size - 3)}}
  tokenizer = transformers.PreTrainedTokenizerFast(
      tokenizer_object=Tokenizer(models.WordLevel(words, "<unk>")),
      pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
  eos = [vocab.eos_id]
  columns = {"chosen_ids": [list(p.prompt) + list(p.chosen) + eos for p in pairs],
             "rejected_ids": [list(p.prompt) + list(p.rejected) + eos for p in pairs]}
  if margins:
    columns["margin"] = [p.margin for p in pairs]
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(hf_dir), dtype=torch.float32)
  args = RewardConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False,
                      per_device_train_batch_size=len(pairs), save_strategy="no",
                      center_rewards_coefficient=centering or None, disable_tqdm=True)
  return RewardTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                       processing_class=tokenizer)


@pytest.mark.parametrize("margins,centering", [(False, 0.0), (True, 0.01)],
                         ids=["bradley_terry", "margin_and_centering"])
def test_rewards_loss_and_gradient_equal_trl_compute_loss(tmp_path, margins, centering):
  vocab = byte_vocabulary()
  _write_checkpoint(tmp_path / "rm", vocab.vocab_size)
  pairs = _pairs(vocab, 12, margins=margins)

  # westofn: the pairs packed into one batch, several a row, through the training step's loss
  model = build_reward_model(model_config=None, backbone=PretrainedLM(path=str(tmp_path / "rm")),
                             vocabulary=vocab, seed=0)
  (batch,) = pack_pairs(pairs, rows=4, row_len=256, pairs_per_row=4, max_response_len=64,
                        eos_id=vocab.eos_id, pad_id=vocab.pad_id)
  assert batch.num_pairs == len(pairs) and (batch.weight.sum(axis=1) > 1).any()
  loss_cfg = LossConfig(use_margin=margins, centering_coef=centering)
  loss, chosen_RxP, rejected_RxP, grads = loss_and_grads(model, batch.arrays(), loss_cfg)
  slots = batch.weight > 0
  order = np.argsort(batch.index[slots])
  ours_chosen = np.asarray(chosen_RxP)[slots][order]
  ours_rejected = np.asarray(rejected_RxP)[slots][order]

  # TRL: the same pairs through its collator, compute_loss and a backward pass, in train mode
  trainer = _trl_trainer(tmp_path / "rm", tmp_path, vocab, pairs, margins=margins,
                         centering=centering)
  inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
  trainer.model.train()
  trl_loss, outputs = trainer.compute_loss(trainer.model, inputs, return_outputs=True)
  trl_loss.backward()
  trl_chosen, trl_rejected = outputs.logits.detach()[:, 0].chunk(2)
  trl_grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in trainer.model.parameters()
                                 if p.grad is not None))

  print(f"max |reward difference| = "
        f"{np.abs(ours_chosen - trl_chosen.numpy()).max():.1e}; loss {float(loss):.6f} "
        f"against {trl_loss.item():.6f}; gradient norm {float(optax.tree.norm(grads)):.6f} "
        f"against {trl_grad_norm.item():.6f}")
  np.testing.assert_allclose(ours_chosen, trl_chosen.numpy(), atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(ours_rejected, trl_rejected.numpy(), atol=2e-5, rtol=1e-5)
  assert np.std(ours_chosen - ours_rejected) > 0.1   # the pairs' rewards differ: a real check
  assert float(loss) == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
  assert float(optax.tree.norm(grads)) == pytest.approx(trl_grad_norm.item(), rel=1e-4)
