"""Logical axis names → device mesh.

Parameters carry logical names (see ``transformer.py``); ``rules`` map them to
mesh axes. With the default rules every parameter is replicated and batches
are split over the ``data`` axis (data parallelism); mapping ``mlp`` and
``q_heads``/``kv_heads`` to a ``model`` axis gives tensor parallelism with the
same model code.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_PARALLEL_RULES = (("vocab", None), ("embed", None), ("q_heads", None), ("kv_heads", None),
                       ("head_dim", None), ("mlp", None))
TENSOR_PARALLEL_RULES = (("vocab", "model"), ("embed", None), ("q_heads", "model"),
                         ("kv_heads", "model"), ("head_dim", None), ("mlp", "model"))


def make_mesh(data: int = -1, model: int = 1, devices: Optional[Sequence] = None) -> Mesh:
  """A ('data', 'model') mesh; ``data=-1`` takes every device not used by ``model``."""
  devices = list(devices if devices is not None else jax.devices())
  if data == -1:
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(f"mesh {data}x{model} does not match {len(devices)} devices")
  return Mesh(np.asarray(devices).reshape(data, model), ("data", "model"))


def logical_to_mesh_spec(names, rules) -> P:
  table = dict(rules)
  return P(*[table.get(n) if n is not None else None for n in names])


def shard_module(module: nnx.Module, mesh: Mesh, rules=DATA_PARALLEL_RULES) -> None:
  """Places every variable of ``module`` (in place) by its logical axis names."""
  state = nnx.state(module)

  def place(var):
    names = var.get_metadata().get("out_sharding") if hasattr(var, "get_metadata") else None
    spec = logical_to_mesh_spec(names, rules) if names else P()
    return jax.device_put(var[...], NamedSharding(mesh, spec))

  placed = jax.tree.map(lambda v: v.replace(place(v)), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
  nnx.update(module, placed)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Splits the leading (row) axis of every array over the ``data`` axis."""
  n = mesh.shape["data"]
  for k, v in batch.items():
    if v.shape[0] % n:
      raise ValueError(f"batch field {k!r} has {v.shape[0]} rows, not divisible by "
                       f"{n} data-parallel devices")
  return {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
