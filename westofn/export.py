r"""Exports a trained reward model as a Hugging Face directory:
``python -m westofn.export --model_dir=DIR --stage=NAME --out=HF_DIR``.

The directory holds a ``LlamaForSequenceClassification`` (``Qwen2ForSequenceClassification``
for a Qwen2 backbone) with ``num_labels=1``: ``config.json``, ``model.safetensors`` (LoRA
merged, the reward head as ``score``) and, where the run's vocabulary has them, the
tokenizer files and chat template. Load it with
``AutoModelForSequenceClassification.from_pretrained(HF_DIR)``; the reward of a response is
the logit at its last token: feed ``prompt + response + EOS`` (right-padded with the
config's ``pad_token_id``), the EOS being the one westofn's reward model reads at. The rewards
equal westofn's where westofn truncates nothing (a response within
``Batching.max_response_len`` tokens, prompt and response within ``Batching.row_len``).
"""

from __future__ import annotations

import os
from typing import Sequence

from policies.hf_export import export_reward_model
from westofn.cli.common import configure_logging, parser, run_cli
from westofn.errors import ConfigError
from westofn.restore import load_run, restore_reward_model


def export(*, model_dir: str, out: str, stage=None, dtype: str = "float32") -> dict:
  run = load_run(model_dir)
  rm = restore_reward_model(run, stage)
  if rm.pairwise:
    raise ConfigError(f"{rm.name} is a pairwise model (it compares two responses); a Hugging "
                      "Face sequence-classification RM gives one reward: export a pointwise "
                      "stage (e.g. base_rm)")
  config = export_reward_model(rm.model, run.vocabulary, out, dtype=dtype)
  print(f"exported {rm.name} (step {rm.step}) as {config['architectures'][0]} to {out}: "
        f"{', '.join(sorted(os.listdir(out)))}")
  return config


def main(argv: Sequence[str]) -> dict:
  p = parser("westofn.export", __doc__)
  p.add_argument("--out", required=True)
  p.add_argument("--stage", default=None,
                 help="the RM stage (default: the newest West-of-N student, else base_rm)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
  args = p.parse_args(argv)
  configure_logging()
  return export(model_dir=args.model_dir, out=args.out, stage=args.stage, dtype=args.dtype)


if __name__ == "__main__":
  run_cli(main)
