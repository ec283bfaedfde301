"""One process of the multi-process reward-model tests (``test_distributed.py``).

Trains a small RM for 10 steps under each requested rule table, through the library's own
loop (per-process batch rows, Orbax checkpoints written by every process), and writes
from process 0: the losses and the final parameters, and from each process the rows of a
batch its devices hold. With
``--restore`` it first loads a checkpoint into each requested layout and writes the
parameters it got (``--no_train``: only that).
"""

import argparse
import json
import os

MESHES = {"data_parallel": {"data": -1, "fsdp": 1, "tensor": 1},
          "fsdp": {"data": 1, "fsdp": -1, "tensor": 1},
          "fsdp_tensor": {"data": 1, "fsdp": -1, "tensor": 2}}
STEPS, ROWS = 10, 8


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--rules", default="fsdp")
  parser.add_argument("--restore", default=None, help="a checkpoint directory to load")
  parser.add_argument("--no_train", action="store_true")
  parser.add_argument("--coordinator", default=None)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  args = parser.parse_args()

  from westofn import distributed
  distributed.initialize(distributed.DistributedFlags(
      args.num_processes > 1, args.coordinator,
      args.num_processes if args.num_processes > 1 else None,
      args.process_id if args.num_processes > 1 else None))
  import jax
  import numpy as np
  from flax import nnx

  from policies.core.checkpoints import Checkpoints
  from policies.core.metrics_writer import NullWriter
  from policies.core.sharding import Partitioning, to_host
  from policies.core.train_loop import to_device
  from policies.transformer import TransformerConfig
  from rm import tasks
  from rm.model import make_reward_model
  from rm.training import make_optimizer, train_reward_model
  from rm.pairwise import pair_batches
  from westofn import pipeline
  from westofn.settings import Batching, DataSource

  assert jax.process_count() == args.num_processes, jax.devices()
  vocab = tasks.byte_vocabulary()
  cfg = TransformerConfig(vocab_size=vocab.vocab_size, d_model=32, num_layers=2, num_heads=4,
                          num_kv_heads=2, ffn_dim=64)
  me, out = jax.process_index(), {}

  def params_of(model):
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, k)): to_host(v[...]) for k, v in flat}

  for rules in args.rules.split(","):
    part = Partitioning(MESHES[rules], rules)
    mesh = part.mesh()
    model = make_reward_model(cfg, seed=0)
    part.place(model, mesh)
    specs = {"/".join(map(str, k)): str(v[...].sharding.spec)
             for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    if args.restore:
      restored = make_reward_model(cfg, seed=1)
      part.place(restored, mesh)
      Checkpoints(args.restore).restore(restored)
      params = params_of(restored)   # a collective: every process gathers
      if me == 0:
        np.savez(os.path.join(args.out, f"restored_{rules}.npz"), **params)
    if args.no_train:
      continue
    data = pipeline.load_preference_data(
        source=DataSource(default_num_pairs=300), vocabulary=vocab)
    batching = Batching(rows=ROWS, row_len=192, pairs_per_row=6, max_response_len=24)
    stream = pair_batches(data.tokenized["train"], batching, vocab, seed=0, shuffle=True)
    optimizer = make_optimizer(model, total_steps=STEPS)
    part.place(optimizer, mesh)
    ckpt = Checkpoints(os.path.join(args.out, f"ckpt_{rules}"), save_every=STEPS)
    result = train_reward_model(model=model, optimizer=optimizer, train_batches=stream,
                                num_steps=STEPS, writer=NullWriter(), checkpoints=ckpt,
                                log_every=1, progress=False, mesh=mesh)
    ckpt.close()
    # the rows of a global batch this process's devices hold, as the loop hands them over
    batch = next(iter(stream(0))).arrays()
    shards = to_device(batch, mesh)["tokens"].addressable_shards
    held = [(s.index[0].start or 0, ROWS if s.index[0].stop is None else s.index[0].stop)
            for s in shards]
    out[rules] = {"losses": [h["loss"] for h in result.history], "specs": specs,
                  "held_rows": [min(h[0] for h in held), max(h[1] for h in held)],
                  "held_rows_are_the_batch_rows": all(
                      np.array_equal(np.asarray(s.data), batch["tokens"][s.index]) for s in shards),
                  "mesh": dict(mesh.shape)}
    params = params_of(model)   # a collective: every process gathers
    if me == 0:
      np.savez(os.path.join(args.out, f"params_{rules}.npz"), **params)
  with open(os.path.join(args.out, f"result_{me}.json"), "w") as f:
    json.dump(out, f)
  distributed.finish(completed=True)   # as run_cli does at the end of a command
  print("DONE", me)


if __name__ == "__main__":
  main()
